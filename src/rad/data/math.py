"""Multi-step arithmetic word problems in GSM8K's format.

A problem is a starting amount followed by 2 to 5 arithmetic steps, each told by one sentence
(a "packs of" sentence is two steps: a product, then adding or removing it). The worked solution
has one line per step, `a op b = r`, and ends with `#### <integer>`. Numbers stay small (added or
removed amounts at most 10, multipliers 2 or 3, divisors 2 to 5, every intermediate result between
1 and MAX_TOTAL, divisions exact) so that a model of a few million parameters, trained for a few
hours on a CPU, can learn the arithmetic as well as the wording.
"""

from __future__ import annotations

import random
import re

from rad.data.problem import ANSWER_MARK, Problem, answer_line, check_split, split_of

TASK = "math"
MAX_TOTAL = 50
MIN_STEPS, MAX_STEPS = 2, 5

NAMES = {
    "Tom": "he", "Ava": "she", "Liam": "he", "Mia": "she", "Noah": "he", "Emma": "she", "Omar": "he",
    "Zoe": "she", "Ravi": "he", "Lena": "she", "Sam": "he", "Nora": "she", "Ben": "he", "Ivy": "she",
    "Leo": "he", "Maya": "she", "Jack": "he", "Rosa": "she", "Kai": "he", "Ella": "she",
}
OBJECTS = ["apples", "marbles", "stickers", "cookies", "pencils", "books", "cards", "shells", "coins",
           "stamps", "eggs", "flowers", "toys", "candies", "beads", "crayons", "buttons", "rocks"]
CONTAINERS = ["packs", "boxes", "bags", "jars", "bundles"]

STARTS = [
    "{N} has {a} {o}.",
    "{N} starts with {a} {o}.",
    "There are {a} {o} in {N}'s box.",
    "{N} collected {a} {o} last week.",
]
ADDS = [
    "{P} buys {b} more {o}.",
    "{P} finds {b} more {o}.",
    "{M} gives {q} {b} {o}.",
    "{P} gets {b} more {o} from {M}.",
    "Then {p} makes {b} more {o}.",
]
SUBS = [
    "{P} gives {b} {o} to {M}.",
    "{P} loses {b} of the {o}.",
    "{M} takes {b} {o} away.",
    "{P} uses {b} {o}.",
    "Then {p} sells {b} {o}.",
]
MULS = {
    2: ["The number of {o} doubles.", "{P} doubles the number of {o}."],
    3: ["The number of {o} triples.", "{P} triples the number of {o}."],
}
MUL_ANY = ["{P} ends up with {k} times as many {o} as before.", "Then {p} has {k} times as many {o}."]
MAX_AMOUNT, MAX_FACTOR, MAX_DIVISOR = 10, 3, 5
DIVS = [
    "{P} splits the {o} equally into {k} groups and keeps one group.",
    "{P} shares the {o} equally among {k} kids and keeps one share.",
    "{P} puts the {o} into {k} equal piles and keeps one pile.",
]
PACK_ADDS = ["{P} buys {c} {C} with {d} {o} in each.", "{M} gives {q} {c} {C} of {d} {o} each."]
PACK_SUBS = ["{P} gives {c} friends {d} {o} each.", "{P} fills {c} {C} with {d} {o} each."]
QUESTIONS = [
    "How many {o} does {N} have now?",
    "How many {o} does {N} have in the end?",
    "How many {o} are left?",
    "How many {o} does {p} have at the end?",
]
OBJECT_PRONOUN = {"he": "him", "she": "her"}


def _steps(rng: random.Random, total: int, want: int) -> tuple[list[tuple[str, dict]], list[str]]:
    """Choose `want` step lines starting from `total`: (template, fields) sentences and the solution lines."""
    sentences, lines = [], []
    while len(lines) < want:
        options = []
        if total < MAX_TOTAL:
            options.append("add")
        if total > 1:
            options.append("sub")
        if 2 * total <= MAX_TOTAL:
            options.append("mul")
        if any(total % k == 0 for k in range(2, MAX_DIVISOR + 1)) and total > 1:
            options.append("div")
        if want - len(lines) >= 2:
            options.append("pack")
        kind = rng.choice(options)
        if kind == "add":
            b = rng.randint(1, min(MAX_AMOUNT, MAX_TOTAL - total))
            sentences.append((rng.choice(ADDS), {"b": b}))
            lines.append(f"{total} + {b} = {total + b}")
            total += b
        elif kind == "sub":
            b = rng.randint(1, min(MAX_AMOUNT, total - 1))
            sentences.append((rng.choice(SUBS), {"b": b}))
            lines.append(f"{total} - {b} = {total - b}")
            total -= b
        elif kind == "mul":
            k = rng.randint(2, min(MAX_FACTOR, MAX_TOTAL // total))
            template = rng.choice(MULS[k] + MUL_ANY)
            sentences.append((template, {"k": k}))
            lines.append(f"{total} * {k} = {total * k}")
            total *= k
        elif kind == "div":
            k = rng.choice([k for k in range(2, MAX_DIVISOR + 1) if total % k == 0])
            sentences.append((rng.choice(DIVS), {"k": k}))
            lines.append(f"{total} / {k} = {total // k}")
            total //= k
        else:
            adding = total < MAX_TOTAL - 4 and (total <= 4 or rng.random() < 0.5)
            room = MAX_TOTAL - total if adding else total - 1
            pairs = [(c, d) for c in range(2, 5) for d in range(2, 6) if c * d <= room]
            if not pairs:
                continue
            c, d = rng.choice(pairs)
            sentences.append((rng.choice(PACK_ADDS if adding else PACK_SUBS), {"c": c, "d": d}))
            lines.append(f"{c} * {d} = {c * d}")
            new = total + c * d if adding else total - c * d
            lines.append(f"{total} {'+' if adding else '-'} {c * d} = {new}")
            total = new
    return sentences, lines


def _draw(rng: random.Random) -> Problem:
    name, other = rng.sample(sorted(NAMES), 2)
    pronoun, obj, container = NAMES[name], rng.choice(OBJECTS), rng.choice(CONTAINERS)
    start = rng.randint(2, 15)
    sentences, lines = _steps(rng, start, rng.randint(MIN_STEPS, MAX_STEPS))
    # {p} is the subject pronoun ("then he sells"), {q} the object one ("gives him").
    fields = {"N": name, "M": other, "o": obj, "C": container, "a": start, "p": pronoun, "q": OBJECT_PRONOUN[pronoun]}
    parts = [rng.choice(STARTS).format(**fields)]
    for template, numbers in sentences:
        # Alternate the name and the pronoun as a story would.
        subject = rng.choice([name, pronoun.capitalize()])
        parts.append(template.format(P=subject, **{**fields, **numbers}))
    parts.append(rng.choice(QUESTIONS).format(**fields))
    # A sentence may start with the lower-case pronoun after "Then"; capitalise sentence starts only.
    question = " ".join(part[0].upper() + part[1:] for part in parts)
    answer = lines[-1].rsplit("= ", 1)[1]
    completion = "\n".join(lines) + f"\n{ANSWER_MARK} {answer}"
    return Problem(prompt=format_prompt(question), completion=completion, answer=answer, task=TASK)


def format_prompt(question: str) -> str:
    """The prompt the model sees for a question (also used for GSM8K questions read from disk)."""
    return f"Question: {question}\nAnswer:\n"


def generate(n: int, seed: int = 0, split: str = "train") -> list[Problem]:
    """`n` distinct problems of `split`, the same for the same seed."""
    check_split(split)
    rng = random.Random(f"{TASK}:{seed}")
    problems, seen = [], set()
    while len(problems) < n:
        problem = _draw(rng)
        if problem.prompt not in seen and split_of(problem.prompt) == split:
            seen.add(problem.prompt)
            problems.append(problem)
    return problems


def extract_answer(text: str) -> str | None:
    """The integer after `####` (commas allowed, as GSM8K writes them), normalised; None if absent."""
    line = answer_line(text)
    match = re.match(r"-?\d[\d,]*", line or "")
    return str(int(match.group(0).replace(",", ""))) if match else None
