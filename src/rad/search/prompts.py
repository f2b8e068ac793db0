"""Diagnosis prompts: where the text the objective decodes from comes from.

A source spec is `task:math` / `task:code` (rad's generators, training split: the held-out test split
stays untouched by the choice of layers), `task:smol` / `task:smol:NAME` (the chat suite's training split, taken in
turn from each task, wrapped by the model's chat template), `text:python-docs` (openings of the text set's
distillation pages), `jsonl:PATH` (one JSON object per line with a `prompt` or `text` field) or `text:PATH`
(one prompt per non-empty line).
"""

from __future__ import annotations

import random
from pathlib import Path

from rad.data import chat_tasks, code, math, text_set
from rad.errors import RadError
from rad.files import read_jsonl, read_text_lines

GENERATORS = {"math": math, "code": code}
SOURCE_FORMS = f"task:math, task:code, task:smol, task:smol:NAME, text:{text_set.NAME}, jsonl:PATH or text:PATH"
OPENING_CHARS = 300  # a page's opening as a prompt: a few sentences, cut at a word


def is_chat(spec: str) -> bool:
    """Whether the source's prompts are user messages for the chat template."""
    return spec == "task:smol" or spec.startswith("task:smol:")


def load_prompts(spec: str, n: int, seed: int = 0) -> list[str]:
    """The first `n` prompts of source `spec` (all of a file's if it has fewer)."""
    if n < 1:
        raise RadError(f"--n-prompts must be at least 1, got {n}")
    kind, _, arg = spec.partition(":")
    if kind == "task" and arg in GENERATORS:
        return [p.prompt for p in GENERATORS[arg].generate(n, seed=seed, split="train")]
    if is_chat(spec):
        return chat_prompts(arg[len("smol:"):] if arg.startswith("smol:") else None, n, seed)
    if spec == f"text:{text_set.NAME}":
        return page_openings(n, seed)
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


def chat_prompts(name: str | None, n: int, seed: int) -> list[str]:
    """`n` messages of chat task `name`, or of the suite's tasks in turn."""
    names = [name] if name else list(chat_tasks.SUITE)
    if name is not None:
        chat_tasks.check_name(name)
    per_task = {t: chat_tasks.generate(t, -(-n // len(names)), seed, split="train") for t in names}
    return [per_task[names[i % len(names)]][i // len(names)].prompt for i in range(n)]


def page_openings(n: int, seed: int) -> list[str]:
    """The openings of `n` pages of the text set's distillation part, drawn by `seed`."""
    pages = text_set.documents("distill")
    chosen = random.Random(seed).sample(pages, min(n, len(pages)))
    return [text[:OPENING_CHARS].rsplit(" ", 1)[0] for _, text in chosen]
