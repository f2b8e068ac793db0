"""HumanEval in the sandbox: reference solutions pass, empty and wrong bodies fail; pass@k is the unbiased estimate."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import itertools
import math

import pytest

from rad.eval.humaneval import (CompletionResult, check_completions, estimate_pass_at_k, load_problems,
                                truncate_completion)
from rad.eval.passk import pass_at_k


@pytest.fixture(scope="module")
def problems():
    return load_problems()


def test_problems_load_offline(problems):
    assert len(problems) == 164
    assert [p.task_id for p in problems] == [f"HumanEval/{i}" for i in range(164)]
    assert all(p.entry_point in p.prompt and "def check(" in p.test for p in problems)


def test_canonical_solutions_all_pass(problems):
    results = check_completions(problems, {p.task_id: [p.canonical_solution] for p in problems})
    failures = [(r.task_id, r.stderr[-300:]) for r in results if not r.passed]
    assert failures == [] and len(results) == 164
    assert estimate_pass_at_k(results) == {"pass@1": 1.0}


def test_empty_bodies_all_fail(problems):
    results = check_completions(problems, {p.task_id: ["    pass\n"] for p in problems})
    assert len(results) == 164 and [r.task_id for r in results if r.passed] == []


def test_wrong_bodies_all_fail(problems):
    # Each problem gets the next problem's reference solution: real code, solving the wrong task.
    shifted = zip(problems, problems[1:] + problems[:1])
    results = check_completions(problems, {p.task_id: [q.canonical_solution] for p, q in shifted})
    assert len(results) == 164 and [r.task_id for r in results if r.passed] == []


def test_an_early_exit_after_the_body_fails_every_problem(problems):
    """The completion that once passed everything: it returns None, then exits with status 0 before the tests."""
    sneaky = "    return None\nimport os\nos._exit(0)\n"
    assert truncate_completion(sneaky) == "    return None"  # what rad eval runs
    results = check_completions(problems, {p.task_id: [sneaky] for p in problems})  # and the whole of it
    assert len(results) == 164 and [r.task_id for r in results if r.passed] == []


def test_unknown_task_ids_are_refused(problems):
    with pytest.raises(ValueError, match="HumanEval/999"):
        check_completions(problems, {"HumanEval/999": ["    pass\n"]})


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of the k-subsets of n samples (the first c correct) that contain a correct sample."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_enumeration_over_subsets():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_is_stable_for_large_n():
    # C(1000, 100) overflows a float; the product form does not, and pass@1 is the plain success rate.
    assert pass_at_k(1000, 37, 1) == pytest.approx(0.037, abs=1e-12)
    assert pass_at_k(1000, 1, 100) == pytest.approx(0.1, abs=1e-12)
    assert math.isfinite(pass_at_k(1000, 3, 100))


def test_pass_at_k_rejects_impossible_counts():
    for n, c, k in [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_estimate_averages_over_tasks_and_omits_k_beyond_the_samples():
    results = [CompletionResult("a", i, "passed" if i == 0 else "failed", "") for i in range(3)]
    results += [CompletionResult("b", i, "failed", "") for i in range(3)]
    assert estimate_pass_at_k(results, ks=(1, 2, 10)) == pytest.approx({"pass@1": (1 / 3) / 2, "pass@2": (2 / 3) / 2})
