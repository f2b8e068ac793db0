"""Evaluation tasks with exact answers: held-out generated problems, or GSM8K-format jsonl from disk.

A task spec is `math`, `code` (the test split of rad's generators) or `gsm8k:PATH` (a local jsonl
with `question` and `answer` fields, the answer's last line `#### <integer>`). HumanEval is scored by
pass@k instead (rad.eval.humaneval) and is dispatched in rad.eval.accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rad.data import chat_tasks, code, math
from rad.errors import RadError
from rad.files import read_jsonl

TASK_NAMES = ("math", "code", "humaneval", "gsm8k:PATH.jsonl", "smol", "smol:NAME", "ppl:PATH", "ppl:python-docs")
GENERATED = {"math": math, "code": code}


@dataclass(frozen=True)
class EvalItem:
    id: str
    prompt: str
    answer: str


@dataclass(frozen=True)
class ExactMatchTask:
    name: str
    items: list[EvalItem]
    extract_answer: Callable[[str], str | None]  # model output -> answer string, None if absent
    chat: bool = False  # prompts are user messages, wrapped by the model's chat template


def check_task_spec(spec: str) -> None:
    """Raise a RadError for an unknown task, or a task file that is missing or malformed."""
    if spec.startswith("gsm8k:"):
        read_gsm8k(Path(spec[len("gsm8k:"):]))
    elif spec.startswith("ppl:"):
        from rad.eval.perplexity import load_texts

        load_texts(spec, 1)
    elif spec.startswith("smol:"):
        chat_tasks.check_name(spec[len("smol:"):])
    elif spec not in (*GENERATED, "humaneval", "smol"):
        raise RadError(f"unknown task '{spec}'; choose one of: {', '.join(TASK_NAMES)}")


def suite_tasks(spec: str) -> list[str]:
    """The exact-match tasks a spec names: `smol` is the chat suite's tasks, anything else itself."""
    return [f"smol:{name}" for name in chat_tasks.SUITE] if spec == "smol" else [spec]


def load_task(spec: str, n: int, seed: int = 0) -> ExactMatchTask:
    """The first `n` items of task `spec` (all of a gsm8k file if it has fewer)."""
    if n < 1:
        raise RadError(f"--n must be at least 1, got {n}")
    if spec in GENERATED:
        module = GENERATED[spec]
        problems = module.generate(n, seed=seed, split="test")
        items = [EvalItem(f"{spec}/{i}", p.prompt, p.answer) for i, p in enumerate(problems)]
        return ExactMatchTask(spec, items, module.extract_answer)
    if spec.startswith("gsm8k:"):
        return ExactMatchTask("gsm8k", read_gsm8k(Path(spec[len("gsm8k:"):]))[:n], math.extract_answer)
    if spec.startswith("smol:"):
        check_task_spec(spec)
        name = spec[len("smol:"):]
        items = [EvalItem(f"{spec}/{i}", p.prompt, p.answer) for i, p in enumerate(chat_tasks.generate(name, n, seed))]
        return ExactMatchTask(spec, items, chat_tasks.CANDIDATES[name].extract, chat=True)
    check_task_spec(spec)
    raise RadError(f"task '{spec}' is scored by pass@k, not exact match")


def read_gsm8k(path: Path) -> list[EvalItem]:
    """GSM8K-format items; a malformed line is an error that names its line number."""
    items = []
    for number, record in read_jsonl(path, "gsm8k file"):
        try:
            question, answer = record["question"], math.extract_answer(record["answer"])
        except (KeyError, TypeError) as err:
            raise RadError(f"{path}:{number}: not a GSM8K record with 'question' and 'answer' ({err})") from None
        if answer is None:
            raise RadError(f"{path}:{number}: the answer has no '#### <integer>' line")
        items.append(EvalItem(f"gsm8k/{number}", math.format_prompt(question), answer))
    return items
