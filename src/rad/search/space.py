"""The search space: which layers may be skipped, and the top-k map from the relaxed z to a skip set.

Bayesian optimisation works on z in [0, 1]^n (one coordinate per eligible layer) because samplers
handle continuous boxes far better than k-subsets; top-k turns any z into a valid set of exactly k layers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rad.errors import RadError

Skip = tuple[int, ...]  # a skip set, always sorted ascending


def eligible_layers(attention_layers: Sequence[int], num_layers: int,
                    exclude_first: bool = False, exclude_last: bool = False) -> list[int]:
    """Attention layers the search may skip (first/last layer left out on request)."""
    excluded = {0} if exclude_first else set()
    if exclude_last:
        excluded.add(num_layers - 1)
    return [layer for layer in attention_layers if layer not in excluded]


def check_k(k: int, eligible: Sequence[int]) -> None:
    if not 1 <= k < len(eligible):
        raise RadError(
            f"k={k} must be between 1 and {len(eligible) - 1}: there are {len(eligible)} eligible attention layers "
            f"({', '.join(map(str, eligible))}) and at least one must keep its attention")


def top_k(z: Mapping[int, float], k: int) -> Skip:
    """The k layers with the largest z (ties go to the lower layer index), sorted."""
    ranked = sorted(z, key=lambda layer: (-z[layer], layer))
    return tuple(sorted(ranked[:k]))

