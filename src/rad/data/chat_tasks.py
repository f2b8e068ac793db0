"""Chat tasks with exact, checkable answers for an instruction-tuned model (SmolLM2-135M-Instruct): short
arithmetic, comparisons, counting, lists, unit conversions and word edits. Each task has a seeded generator and a
checker; a prompt is one user message (the model's chat template wraps it), and the answer is checked on the first
number or word of the reply.

The suite `smol` holds the tasks on which SmolLM2-135M-Instruct scored at least 30% on 200 held-out problems
(docs/results.md has every candidate's score); the others stay available by name (`smol:NAME`).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from rad.data.problem import Problem, check_split
from rad.errors import RadError

CONSONANTS, VOWELS = "bdfgklmnprstvz", "aeiou"
NUMBER = re.compile(r"-?\d+")
WORD = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class ChatTask:
    name: str
    make: Callable[[random.Random], tuple[str, str]]  # a problem: (the user's message, the exact answer)
    extract: Callable[[str], str | None]  # the reply's answer, None if it gives none


def answer_number(reply: str) -> str | None:
    """The number a reply ends its answer with: its last number ("99 + 58 = 157", "The larger number is 29")."""
    numbers = NUMBER.findall(reply.replace(",", ""))
    return str(int(numbers[-1])) if numbers else None


def first_word(reply: str) -> str | None:
    match = WORD.search(reply)
    return match.group() if match else None


def number_list(reply: str) -> str | None:
    numbers = NUMBER.findall(reply)
    return ", ".join(numbers) if numbers else None


def word(rng: random.Random) -> str:
    """A made-up word of two or three syllables ("tomika"): thousands of them, so every task has enough problems."""
    return "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(rng.randint(2, 3)))


def add(rng):
    a, b = rng.randint(1, 99), rng.randint(1, 99)
    return f"What is {a} plus {b}? Answer with the number only.", str(a + b)


def subtract(rng):
    a = rng.randint(10, 99)
    b = rng.randint(1, a)
    return f"What is {a} minus {b}? Answer with the number only.", str(a - b)


def larger(rng):
    a, b = rng.sample(range(1, 1000), 2)
    return f"Which number is larger, {a} or {b}? Answer with the number only.", str(max(a, b))


def successor(rng):
    a = rng.randint(1, 9999)
    return f"What number comes right after {a}? Answer with the number only.", str(a + 1)


UNITS = (("hours", "minutes", 60), ("minutes", "seconds", 60), ("days", "hours", 24), ("weeks", "days", 7),
         ("meters", "centimeters", 100), ("kilograms", "grams", 1000))


def convert_units(rng):
    big, small, factor = rng.choice(UNITS)
    amount = rng.randint(1, 999)
    return f"How many {small} are there in {amount} {big}? Answer with the number only.", str(amount * factor)


def count_items(rng):
    item, count = word(rng), rng.randint(2, 6)
    items = " ".join([item] * count)
    return f"How many times does the word '{item}' appear here: {items}? Answer with the number only.", str(count)


def copy_list(rng):
    numbers = [str(rng.randint(1, 99)) for _ in range(rng.randint(3, 5))]
    return f"Repeat this list of numbers exactly: {', '.join(numbers)}", ", ".join(numbers)


def add_small(rng):
    a, b = rng.randint(1, 25), rng.randint(1, 25)
    return f"What is {a} + {b}?", str(a + b)


def sort_list(rng):
    numbers = rng.sample(range(1, 50), rng.randint(3, 4))
    return f"Sort these numbers from smallest to largest: {', '.join(map(str, numbers))}", \
        ", ".join(map(str, sorted(numbers)))


def repeat_word(rng):
    item = word(rng)
    return f"Repeat this word: {item}", item


def larger_small(rng):
    a, b = rng.sample(range(1, 30), 2)
    return f"Which is bigger: {a} or {b}?", str(max(a, b))


def first_in_list(rng):
    numbers = [str(rng.randint(1, 99)) for _ in range(rng.randint(3, 5))]
    return f"What is the first number in this list: {', '.join(numbers)}?", numbers[0]


def last_in_list(rng):
    numbers = [str(rng.randint(1, 99)) for _ in range(rng.randint(3, 5))]
    return f"What is the last number in this list: {', '.join(numbers)}?", numbers[-1]


def count_list(rng):
    numbers = [str(rng.randint(1, 99)) for _ in range(rng.randint(2, 6))]
    return f"How many numbers are in this list: {', '.join(numbers)}?", str(len(numbers))


def successor_small(rng):
    a = rng.randint(1, 999)
    return f"What is the next number after {a}?", str(a + 1)


def reverse_list(rng):
    numbers = [str(rng.randint(1, 99)) for _ in range(rng.randint(3, 4))]
    return f"Write this list of numbers in reverse order: {', '.join(numbers)}", ", ".join(reversed(numbers))


def uppercase(rng):
    item = word(rng)
    return f"Write the word '{item}' in capital letters. Answer with the word only.", item.upper()


def first_letter(rng):
    item = word(rng)
    return f"What is the first letter of the word '{item}'? Answer with the letter only.", item[0]


CANDIDATES = {task.name: task for task in [
    ChatTask("add", add, answer_number), ChatTask("subtract", subtract, answer_number),
    ChatTask("larger", larger, answer_number), ChatTask("successor", successor, answer_number),
    ChatTask("units", convert_units, answer_number), ChatTask("count", count_items, answer_number),
    ChatTask("copy", copy_list, number_list), ChatTask("reverse", reverse_list, number_list),
    ChatTask("uppercase", uppercase, first_word), ChatTask("first_letter", first_letter, first_word),
    ChatTask("add_small", add_small, answer_number), ChatTask("sort", sort_list, number_list),
    ChatTask("repeat", repeat_word, first_word),
    ChatTask("larger_small", larger_small, answer_number), ChatTask("first_in_list", first_in_list, answer_number),
    ChatTask("last_in_list", last_in_list, answer_number), ChatTask("count_list", count_list, answer_number),
    ChatTask("successor_small", successor_small, answer_number),
]}
# Kept for the suite: SmolLM2-135M-Instruct scored >= 30% on 200 held-out problems (docs/results.md).
SUITE = ("first_in_list", "successor_small", "last_in_list", "copy")


def check_name(name: str) -> None:
    """A RadError for a chat task rad does not have, naming those it has."""
    if name not in CANDIDATES:
        raise RadError(f"unknown chat task '{name}'; the tasks: {', '.join(CANDIDATES)}")


def split_of(message: str) -> str:
    """Half the problems are held out (a small task's few hundred messages still give 200 to test on), by a stable
    hash of the message: the splits never share one."""
    return "test" if hashlib.sha256(message.encode("utf-8")).digest()[0] < 128 else "train"


def generate(name: str, n: int, seed: int = 0, split: str = "test") -> list[Problem]:
    """`n` distinct problems of task `name` in `split`."""
    check_split(split)
    task, rng, problems, seen = CANDIDATES[name], random.Random(f"{name}:{seed}"), [], set()
    for _ in range(200 * n):
        message, answer = task.make(rng)
        if message not in seen and split_of(message) == split:
            seen.add(message)
            problems.append(Problem(message, answer, answer, f"smol:{name}"))
            if len(problems) == n:
                return problems
    raise ValueError(f"task {name} has fewer than {n} distinct {split} problems")
