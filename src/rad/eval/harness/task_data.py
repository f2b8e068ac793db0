"""The data and the scoring of the harness tasks rad ships (tasks/*.yaml): the same held-out problems and the
same answer checks as `rad eval --task`, so that both give the same accuracy, and the text set's documents."""

from __future__ import annotations

from functools import cache

from datasets import Dataset

from rad.eval.perplexity import load_texts
from rad.eval.tasks import load_task, suite_tasks


def problems(task: str, n: int = 200, seed: int = 0, **_metadata) -> dict[str, Dataset]:
    """A task's first `n` held-out problems per exact-match task (`smol`: each task of the suite), as `rad eval
    --task TASK --n N --seed S` draws them. The harness passes the YAML's metadata too, which this ignores."""
    rows = [{"task": spec, "id": item.id, "prompt": item.prompt, "answer": item.answer}
            for spec in suite_tasks(task) for item in load_task(spec, n, seed).items]
    return {"test": Dataset.from_list(rows)}


@cache
def answer_extractor(spec: str):
    return load_task(spec, 1).extract_answer


def score(doc: dict, results: list[str]) -> dict:
    """acc: 1.0 when the answer extracted from the generated text is the problem's answer."""
    return {"acc": float(answer_extractor(doc["task"])(results[0]) == doc["answer"])}


def documents(source: str = "python-docs", n: int = 10**9, **_metadata) -> dict[str, Dataset]:
    """The first `n` documents of a text source as `rad eval --task ppl:SOURCE` reads it (python-docs: the text
    set's evaluation pages; or a text or jsonl file)."""
    return {"test": Dataset.from_list([{"name": name, "text": text} for name, text in load_texts(f"ppl:{source}", n)])}
