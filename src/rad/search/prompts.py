"""Diagnosis prompts: where the text the objective decodes from comes from.

A source spec is `task:math` / `task:code` (rad's generators, training split: the held-out test split
stays untouched by the choice of layers), `jsonl:PATH` (one JSON object per line with a `prompt` or
`text` field) or `text:PATH` (one prompt per non-empty line).
"""

from __future__ import annotations

from pathlib import Path

from rad.data import code, math
from rad.errors import RadError
from rad.files import read_jsonl, read_text_lines

GENERATORS = {"math": math, "code": code}
SOURCE_FORMS = "task:math, task:code, jsonl:PATH or text:PATH"


def load_prompts(spec: str, n: int, seed: int = 0) -> list[str]:
    """The first `n` prompts of source `spec` (all of a file's if it has fewer)."""
    if n < 1:
        raise RadError(f"--n-prompts must be at least 1, got {n}")
    kind, _, arg = spec.partition(":")
    if kind == "task" and arg in GENERATORS:
        return [p.prompt for p in GENERATORS[arg].generate(n, seed=seed, split="train")]
    if kind == "jsonl":
        return _read_jsonl(Path(arg))[:n]
    if kind == "text":
        return _read_lines(Path(arg))[:n]
    raise RadError(f"unknown prompt source '{spec}'; use {SOURCE_FORMS}")


def _read_lines(path: Path) -> list[str]:
    prompts = [line.strip() for line in read_text_lines(path, "prompt file") if line.strip()]
    if not prompts:
        raise RadError(f"prompt file {path} holds no prompts")
    return prompts


def _read_jsonl(path: Path) -> list[str]:
    prompts = []
    for number, record in read_jsonl(path, "prompt file"):
        try:
            prompts.append(str(record["prompt"] if "prompt" in record else record["text"]))
        except (KeyError, TypeError) as err:
            raise RadError(f"{path}:{number}: not a JSON object with a 'prompt' or 'text' field ({err})") from None
    return prompts
