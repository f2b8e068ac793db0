"""A distillation within a time budget: the last stage's length is sized from its measured step time.

The stage starts with its configured steps as a cap. Its first step (which may compile, allocate optimizer
state, warm caches) is not timed; the median of the next PROBE_STEPS sets the step time, and the stage is cut to
the steps that fit before the deadline (never below the steps already run, never above the cap). The warm-up
of a schedule does not depend on the stage's length, so the steps run before sizing are the ones they would
have been. The sized length is saved in every later checkpoint: a resumed run keeps it (exact resume), and only
a run killed before the sizing measures again.
"""

from __future__ import annotations

import statistics
import time

PROBE_STEPS = 3


def size_stage(left_s: float, step_s: float, done: int, cap: int) -> int:
    """Steps of a stage that has run `done` of at most `cap`, when `left_s` seconds remain at `step_s` each."""
    return max(done, min(cap, done + int(max(left_s, 0.0) // step_s)))


class StageBudget:
    """Times a stage's steps (on `clock`, whose readings `deadline` is one of) and sizes the stage once enough are
    measured."""

    def __init__(self, deadline: float, clock=time.perf_counter):
        self.deadline, self.clock = deadline, clock
        self.times: list[float] = []
        self.started = 0.0

    def step_started(self) -> None:
        self.started = self.clock()

    def step_ended(self, done: int, cap: int, agree=lambda seconds: seconds) -> int | None:
        """After a step (the stage has now run `done` of at most `cap`): the stage's length, once it is known.
        `agree` makes every process's step time the same, so that all of them cut the stage at the same step."""
        self.times.append(self.clock() - self.started)
        if len(self.times) < PROBE_STEPS + 1:  # the first one is not timed
            return None
        step_s = agree(statistics.median(self.times[1:]))
        return size_stage(self.deadline - self.clock(), step_s, done, cap)
