"""Preallocated KV cache with per-row lengths and rollback.

Each row of a batch is left-aligned: row b's token at position p lives in slot p. Rows may hold
different lengths (prompts of different sizes, or speculative steps that accepted different
numbers of tokens), so writes go through an index instead of a shared offset, and the attention
mask (slot <= query position) hides whatever stale entries lie beyond a row's length. That makes
rollback free: moving a row's length back is all it takes, the next write overwrites the rest.
Shapes never change during decoding, which keeps the step compilable.
"""

from __future__ import annotations

import torch

from rad.errors import RadError
from rad.model.config import ModelConfig


class KVCache:
    def __init__(self, config: ModelConfig, batch: int, max_len: int, device, dtype: torch.dtype):
        shape = (batch, config.num_kv_heads, max_len, config.head_dim)
        self.keys = {i: torch.zeros(shape, device=device, dtype=dtype) for i in config.attention_layers}
        self.values = {i: torch.zeros(shape, device=device, dtype=dtype) for i in config.attention_layers}
        self.lengths = torch.zeros(batch, dtype=torch.long, device=device)
        self.max_len = max_len
        self.slots = torch.arange(max_len, device=device)
        self._rows = torch.arange(batch, device=device)[:, None]

    @property
    def batch_size(self) -> int:
        return self.lengths.shape[0]

    def write(self, layer: int, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor):
        """Store keys/values (B, kv_heads, T, D) at slots `positions` (B, T); return the whole layer cache."""
        k_cache, v_cache = self.keys[layer], self.values[layer]
        # Advanced indices on dims 0 and 2 put the index dims first: the target is (B, T, kv_heads, D).
        k_cache[self._rows, :, positions] = keys.transpose(1, 2)
        v_cache[self._rows, :, positions] = values.transpose(1, 2)
        return k_cache, v_cache

    def advance(self, counts: torch.Tensor | int):
        """Record that each row holds `counts` more tokens."""
        self.lengths += counts

    def rollback(self, lengths: torch.Tensor | int):
        """Forget every token at or past `lengths` (per row, or one number for all rows)."""
        lengths = torch.as_tensor(lengths, device=self.lengths.device).expand_as(self.lengths)
        self.lengths.copy_(torch.minimum(self.lengths, lengths))

    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys.values(), *self.values.values()))


def check_capacity(cache: KVCache, needed: int):
    if needed > cache.max_len:
        raise RadError(f"the cache holds {cache.max_len} tokens but {needed} are needed")
