"""How many tokens the draft proposes per step: a fixed K, or Draft & Verify's adaptive exit.

Adaptive draft-exiting (Zhang et al. 2023, "Draft & Verify", arXiv 2309.08168): stop drafting once the
draft's top-1 probability falls below a threshold, and move that threshold after every verification
so that the (smoothed) acceptance rate approaches a target: raise it while too many drafts are
rejected (draft less), lower it while nearly all are accepted (draft more). Each row keeps its own
threshold, so a row's drafts never depend on which other rows share its batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rad.errors import RadError


ADAPTIVE_DRAFT_LEN = 8  # the cap on drafts per step that the CLI's --adaptive uses


@dataclass(frozen=True)
class DraftPolicy:
    draft_len: int = 4  # K: the most tokens drafted per step (the cap under `adaptive`)
    adaptive: bool = False
    threshold: float = 0.6  # starting top-1 probability threshold (adaptive)
    target_acceptance: float = 0.8  # acceptance rate the threshold steers toward (adaptive)
    step: float = 0.02  # how far one verification moves the threshold
    smoothing: float = 0.5  # weight of the past in the smoothed acceptance rate

    def __post_init__(self):
        if self.draft_len < 1:
            raise RadError(f"the draft length must be >= 1, got {self.draft_len}")
        if not 0 <= self.threshold <= 1 or not 0 < self.target_acceptance < 1:
            raise RadError(f"threshold must be in [0, 1] and target acceptance in (0, 1), got "
                           f"{self.threshold} and {self.target_acceptance}")


class AdaptiveExit:
    """Per-row confidence thresholds that adapt toward the policy's target acceptance rate."""

    def __init__(self, policy: DraftPolicy, batch: int, device):
        self.policy = policy
        self.threshold = torch.full((batch,), policy.threshold, device=device)
        self.acceptance = torch.full((batch,), policy.target_acceptance, device=device)

    def keep_drafting(self, draft_probs: torch.Tensor) -> torch.Tensor:
        """(B,) bool: rows whose latest draft token was confident enough to draft another after it."""
        return draft_probs.max(-1).values >= self.threshold

    def update(self, accepted: torch.Tensor, drafted: torch.Tensor, live: torch.Tensor):
        """After a verification: rows that drafted smooth their acceptance rate and move their threshold."""
        p = self.policy
        seen = live & (drafted > 0)
        rate = accepted / drafted.clamp_min(1)
        acceptance = p.smoothing * self.acceptance + (1 - p.smoothing) * rate
        move = torch.where(acceptance < p.target_acceptance, p.step, -p.step)
        self.acceptance = torch.where(seen, acceptance, self.acceptance)
        self.threshold = torch.where(seen, (self.threshold + move).clamp(0, 1), self.threshold)
