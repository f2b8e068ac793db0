"""What the search maximises, and the cache that evaluates each skip set once.

An objective is any callable `skip -> Evaluation`; the search, the baselines and the report never
look inside it, so they can be tested against synthetic objectives with a known optimum.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from rad.search.space import Skip


@dataclass
class Evaluation:
    value: float  # the number the search maximises (the speed-up)
    # what produced it, for the report: acceptance, modeled/measured speed-up, per-source values, ...
    details: dict = field(default_factory=dict)
    seconds: float = 0.0  # wall time spent evaluating (0 when answered from the cache)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Evaluation:
        return cls(float(data["value"]), dict(data.get("details", {})), float(data.get("seconds", 0.0)))


Objective = Callable[[Skip], Evaluation]


def rank_key(value: float, details: dict) -> tuple[float, float]:
    """Order of merit of an evaluated set: the value, then the acceptance rate. Ties on the modeled speed-up
    are common in a short diagnosis (it counts forwards, and two skip sets can need the same number of draft
    and verify forwards while one of them had more drafts rejected); the higher acceptance is then the set
    whose draft agrees more with the full model, the more redundant one."""
    return value, details.get("acceptance_rate") or 0.0


class CachedObjective:
    """Evaluates each distinct skip set once; `remember` adds results found elsewhere (a resumed study)."""

    def __init__(self, objective: Objective):
        self.objective = objective
        self.results: dict[Skip, Evaluation] = {}

    def __call__(self, skip: Iterable[int]) -> Evaluation:
        skip = tuple(sorted(skip))
        if skip not in self.results:
            start = time.perf_counter()
            result = self.objective(skip)
            result.seconds = time.perf_counter() - start
            self.results[skip] = result
        return self.results[skip]

    def is_cached(self, skip: Iterable[int]) -> bool:
        return tuple(sorted(skip)) in self.results

    def remember(self, skip: Iterable[int], result: Evaluation) -> None:
        self.results.setdefault(tuple(sorted(skip)), result)

    def evaluated(self, k: int) -> dict[Skip, Evaluation]:
        """Every distinct set of size k evaluated so far."""
        return {s: r for s, r in self.results.items() if len(s) == k}
