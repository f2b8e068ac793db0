"""Turning logits into tokens: greedy, temperature and top-p, driven by pre-drawn uniforms.

Sampling uses inverse-CDF draws from uniforms that the caller draws up front, one stream per row
(seeded per row). Nothing here syncs with the host, and a row's draws do not depend on which other
rows share its batch, so a sampled row in a batch equals the same row sampled alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rad.options import Options, option, seed_option


@dataclass(frozen=True)
class SamplingConfig(Options):
    temperature: float = option(0.0, help="sampling temperature; 0 = greedy", low=0)
    top_p: float = option(1.0, help="nucleus sampling: keep the smallest set of tokens with this much mass", above=0, high=1)
    seed: int = seed_option("sampling seed (row r of a batch uses seed + r)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def row_uniforms(seeds: list[int], steps: int, device) -> torch.Tensor:
    """(rows, steps) uniforms in [0, 1), row r drawn from its own generator seeded with seeds[r]."""
    rows = [torch.rand(steps, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in seeds]
    return torch.stack(rows).to(device)


def distribution(logits: torch.Tensor, sampling: SamplingConfig) -> torch.Tensor:
    """Probabilities after temperature and top-p (nucleus) filtering, float32, same shape as logits."""
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p >= 1:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    # Keep the smallest prefix whose mass reaches top_p (the first token is always kept).
    mass_before = sorted_probs.cumsum(-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(mass_before >= sampling.top_p, 0.0)
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return kept / kept.sum(-1, keepdim=True)


def draw(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sample: one token per row of probs (..., V) for uniforms (...)."""
    cdf = probs.double().cumsum(-1)
    target = uniforms[..., None] * cdf[..., -1:]
    index = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return index.clamp_max(probs.shape[-1] - 1)


def select(logits: torch.Tensor, sampling: SamplingConfig, uniforms: torch.Tensor | None) -> torch.Tensor:
    if sampling.greedy:
        return logits.argmax(-1)
    return draw(distribution(logits, sampling), uniforms)
