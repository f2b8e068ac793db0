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

from rad.options import Options, option


DRAFT_LEN, ADAPTIVE_DRAFT_LEN = 4, 8  # drafts per step: fixed, and the cap of an adaptive exit


@dataclass(frozen=True)
class DraftPolicy(Options):
    draft_len: int | None = option(None, help=f"tokens drafted per step (default {DRAFT_LEN}; with --adaptive, the most "
                                              f"per step, default {ADAPTIVE_DRAFT_LEN})", low=1)
    adaptive: bool = option(False, help="draft until the draft's confidence drops below a threshold that moves toward "
                                        "a target acceptance rate (Draft & Verify)")
    threshold: float = option(0.6, help="adaptive: the starting top-1 probability threshold", low=0, high=1)
    target_acceptance: float = option(0.8, help="adaptive: the acceptance rate the threshold steers toward", above=0, below=1)
    step: float = option(0.02, help="adaptive: how far one verification moves the threshold", flag="--threshold-step", low=0, high=1)
    smoothing: float = option(0.5, help="adaptive: weight of the past in the smoothed acceptance rate", low=0, high=1)

    @property
    def max_drafts(self) -> int:
        """K: the most tokens drafted per step."""
        if self.draft_len is not None:
            return self.draft_len
        return ADAPTIVE_DRAFT_LEN if self.adaptive else DRAFT_LEN


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
