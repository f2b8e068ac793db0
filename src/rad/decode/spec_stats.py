"""What one self-speculative decoding call observed: how much of the draft the full model accepted.

Counts are over (row, verify step) pairs of rows still generating: a finished row stops counting.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SpecStats:
    draft_len: int  # K: the most tokens drafted per step
    # histogram[n]: how many (row, step) pairs accepted exactly n draft tokens (n = 0..K)
    histogram: list[int]
    drafted: int = 0  # draft tokens proposed, summed over live rows
    draft_forwards: int = 0  # batched forwards of the draft (S skipped)
    verify_forwards: int = 0  # batched forwards of the full model, each over 1 + the step's drafts

    @property
    def steps(self) -> int:
        return sum(self.histogram)

    @property
    def accepted(self) -> int:
        return sum(n * count for n, count in enumerate(self.histogram))

    @property
    def acceptance_rate(self) -> float:
        """Accepted draft tokens over drafted ones (0.0 when nothing was drafted)."""
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def mean_accepted(self) -> float:
        """Draft tokens accepted per verify step; each step also emits the full model's own next token."""
        return self.accepted / self.steps if self.steps else 0.0

    def to_dict(self) -> dict:
        return {
            "acceptance_rate": self.acceptance_rate,
            "mean_accepted": self.mean_accepted,
            "accepted_histogram": self.histogram,
            "draft_len": self.draft_len,
            "drafted": self.drafted,
            "draft_forwards": self.draft_forwards,
            "verify_forwards": self.verify_forwards,
        }
