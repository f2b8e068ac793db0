"""Which cached keys each query of a forward may see: causal masks, sliding windows, and when a prefill needs none."""

from __future__ import annotations

from typing import NamedTuple

import torch

from rad.model.cache import DecodeCache


def attention_mask(query_positions: torch.Tensor, key_positions: torch.Tensor, window: int | None) -> torch.Tensor:
    """(B, 1, T, S) boolean: a query sees keys at its own or earlier positions (within the window)."""
    q = query_positions[:, None, :, None]
    k = key_positions[:, None, None, :]
    visible = k <= q
    if window is not None:
        visible &= k > q - window
    return visible


class Visibility(NamedTuple):
    """Which keys each query of a forward sees, worked out once per forward and shared by the layers.

    `masks` maps a window size (None: full attention) to a (B, 1, T, S) mask over the keys attention reads.
    With `own_keys` (every row's positions are 0..T-1, and no cache or a cache no forward has written yet: a
    prefill, or a training row) the keys a query may see are all in this forward, so attention reads them, not
    the cache (which it still fills), and full attention needs no mask (None: causal), which lets torch use its
    fused kernel: half the time of a masked prefill over 2,048 tokens on a CPU.
    """

    masks: dict
    own_keys: bool


def key_visibility(positions: torch.Tensor, cache: DecodeCache | None, windows: set) -> Visibility:
    """The positions are read (a host sync) only where they can make a difference: a forward of several tokens
    into no cache or a fresh one, not a decode step or a verify block; and never in a compiled graph."""
    length = positions.shape[1]
    own_keys = (length > 1 and (cache is None or cache.fresh) and not torch.compiler.is_compiling()
                and torch.equal(positions, torch.arange(length, device=positions.device).expand_as(positions)))
    if own_keys:
        return Visibility({w: None if w is None else attention_mask(positions, positions, w) for w in windows}, True)
    key_positions = positions if cache is None else cache.slots.expand(positions.shape[0], -1)
    return Visibility({w: attention_mask(positions, key_positions, w) for w in windows}, False)
