"""CRUXEval-style output prediction: a short generated Python function `f`, an input, and `f(input)`.

The function acts on one int, list of small ints or string through 2 or 3 simple statements and
returns the variable or a small expression of it. The answer is `repr(f(input))`, obtained by
running the function in a subprocess (many functions per process, with a timeout); the worked
completion is a trace of the variable after each statement, also recorded by running an
instrumented copy. Functions that raise or leave the small value ranges are discarded, so the
values stay in reach of a tiny model.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys

from rad.data.problem import ANSWER_MARK, Problem, answer_line, check_split, split_of

TASK = "code"
MIN_STATEMENTS, MAX_STATEMENTS = 2, 3
TIMEOUT_S = 60.0
ROUND = 2048  # candidates drawn and run per subprocess
# String values use only these capitals: the tokenizer keeps each capital a token of its own, so
# reversing or counting characters is learnable (lower-case letters are merged into words).
LETTERS = "ABCDE"


def _int_statements(rng: random.Random, v: str) -> list[str]:
    k, j = rng.randint(1, 5), rng.randint(1, 5)
    return [
        f"{v} = {v} + {k}",
        f"{v} = {v} - {k}",
        f"{v} = {v} * {rng.randint(2, 3)}",
        f"{v} = {v} // {rng.randint(2, 3)}",
        f"{v} = {v} % {rng.randint(2, 5)}",
        f"if {v} > {k}:\n        {v} = {v} - {j}\n    else:\n        {v} = {v} + {j}",
        f"if {v} % 2 == 0:\n        {v} = {v} // 2\n    else:\n        {v} = {v} + {j}",
    ]


def _list_statements(rng: random.Random, v: str) -> list[str]:
    k = rng.randint(1, 5)
    return [
        f"{v} = {v} + [{rng.randint(0, 9)}]",
        f"{v} = {v}[::-1]",
        f"{v} = sorted({v})",
        f"{v} = [e + {k} for e in {v}]",
        f"{v} = [e * 2 for e in {v}]",
        f"{v} = {v}[1:]",
        f"{v} = {v}[:-1]",
        f"{v} = [e for e in {v} if e > {k}]",
        f"{v} = [e % {rng.randint(2, 5)} for e in {v}]",
    ]


def _str_statements(rng: random.Random, v: str) -> list[str]:
    a, b = rng.sample(LETTERS, 2)
    word = "".join(rng.choices(LETTERS, k=rng.randint(1, 2)))
    return [
        f"{v} = {v} + '{word}'",
        f"{v} = '{word}' + {v}",
        f"{v} = {v}[::-1]",
        f"{v} = {v}[1:]",
        f"{v} = {v}[:-1]",
        f"{v} = {v}.replace('{a}', '{b}')",
        f"{v} = {v} * 2",
        f"{v} = ''.join(sorted({v}))",
    ]


def _returns(rng: random.Random, kind: str, v: str) -> list[str]:
    k, a = rng.randint(1, 5), rng.choice(LETTERS)
    if kind == "int":
        return [v, v, f"{v} > {k}", f"{v} * 2", f"{v} + {k}"]
    if kind == "list":
        return [v, v, f"sum({v})", f"len({v})", f"max({v})", f"min({v})", f"{v}[0]", f"{v}[-1]"]
    return [v, v, f"len({v})", f"{v}.count('{a}')", f"{v}[0]", f"{v} == {v}[::-1]", f"'{a}' in {v}"]


def _value(rng: random.Random, kind: str) -> object:
    if kind == "int":
        return rng.randint(0, 10)
    if kind == "list":
        return [rng.randint(0, 9) for _ in range(rng.randint(2, 4))]
    return "".join(rng.choices(LETTERS, k=rng.randint(2, 4)))


VARIABLES = {"int": ["x", "n", "a"], "list": ["xs", "nums", "items"], "str": ["s", "text", "word"]}
STATEMENTS = {"int": _int_statements, "list": _list_statements, "str": _str_statements}


def _draw(rng: random.Random) -> dict:
    """One candidate: the function source, the call, and a copy that records the variable after each statement."""
    kind = rng.choice(sorted(VARIABLES))
    v = rng.choice(VARIABLES[kind])
    body = [rng.choice(STATEMENTS[kind](rng, v)) for _ in range(rng.randint(MIN_STATEMENTS, MAX_STATEMENTS))]
    ret = rng.choice(_returns(rng, kind, v))
    source = "\n".join([f"def f({v}):", *(f"    {s}" for s in body), f"    return {ret}"])
    traced = "\n".join(
        [f"def f({v}):", *(f"    {s}\n    _trace.append(repr({v}))" for s in body), f"    return {ret}"]
    )
    return {"source": source, "traced": traced, "call": f"f({_value(rng, kind)!r})", "var": v}


# Runs in the child: for each item, the real function's result and the instrumented copy's trace.
_RUNNER = """
import json, sys
results = []
for item in json.load(sys.stdin):
    try:
        space = {}
        exec(item["source"], space)
        output = repr(eval(item["call"], space))
        space = {"_trace": []}
        exec(item["traced"], space)
        eval(item["call"], space)
        results.append([output, space["_trace"]])
    except Exception:
        results.append(None)
json.dump(results, sys.stdout)
"""


def run(items: list[dict]) -> list[list | None]:
    """[output repr, trace] for each item (None where it raised), from fresh Python subprocesses.

    A batch that times out is split in two and retried, so one slow function costs only itself.
    """
    if not items:
        return []
    try:
        done = subprocess.run([sys.executable, "-I", "-c", _RUNNER], input=json.dumps(items),
                              capture_output=True, text=True, timeout=TIMEOUT_S, check=True)
        return json.loads(done.stdout)
    except subprocess.TimeoutExpired:
        if len(items) == 1:
            return [None]
        half = len(items) // 2
        return run(items[:half]) + run(items[half:])


def _small(text: str) -> bool:
    """Whether a value's repr stays in the ranges a tiny model can trace (ints below 50, short lists and strings)."""
    value = eval(text, {})  # a repr we produced ourselves from ints, bools, lists and strings
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return 0 <= value < 50
    if isinstance(value, list):
        return len(value) <= 5 and all(0 <= e < 20 for e in value)
    return len(value) <= 8


def _problem(item: dict, output: str, trace: list[str]) -> Problem:
    prompt = f"Predict the output.\n{item['source']}\nassert {item['call']} == ??\nTrace:\n"
    lines = [f"{item['var']} = {value}" for value in trace]
    return Problem(prompt=prompt, completion="\n".join([*lines, f"{ANSWER_MARK} {output}"]), answer=output, task=TASK)


def generate(n: int, seed: int = 0, split: str = "train") -> list[Problem]:
    """`n` distinct problems of `split`, the same for the same seed."""
    check_split(split)
    rng = random.Random(f"{TASK}:{seed}")
    problems, seen = [], set()
    while len(problems) < n:
        batch = []
        # A fixed number of candidates per subprocess, so that a smaller n gives a prefix of a larger one.
        for _ in range(ROUND):
            item = _draw(rng)
            key = f"{item['source']}\n{item['call']}"
            if key not in seen and split_of(key) == split:
                seen.add(key)
                batch.append(item)
        for item, result in zip(batch, run(batch)):
            if result and len(problems) < n and all(_small(t) for t in [result[0], *result[1]]):
                problems.append(_problem(item, *result))
    return problems


def extract_answer(text: str) -> str | None:
    """The output repr after `####`, as written; None if there is none."""
    return answer_line(text) or None
