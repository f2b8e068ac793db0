"""The decode cache, preallocated: keys and values of attention layers, conv + SSM states of SSM layers;
per-row lengths, rollback.

Each row of a batch is left-aligned: row b's token at position p lives in slot p. Rows may hold
different lengths (prompts of different sizes, or speculative steps that accepted different
numbers of tokens), so writes go through an index instead of a shared offset, and the attention
mask (slot <= query position) hides whatever stale entries lie beyond a row's length. That makes
rollback free for attention: moving a row's length back is all it takes, the next write overwrites the rest.

An SSM state cannot be un-applied, so each SSM layer keeps a ring of `ssm_history` states: slot
p % ssm_history holds the state after position p, and a row of length L reads slot (L-1) % ssm_history.
Rollback then stays a move of `lengths`, valid as long as the ring still holds the state after the new
length's last position (checked, else a RadError). A forward of at most ssm_history tokens records
every position (a speculative verify block, whose every prefix may be accepted); a longer one (a
prompt) records only each row's final state. Padded positions write to one extra scratch slot, so
shapes never depend on data. Shapes never change during decoding, which keeps the step compilable.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from rad.errors import RadError
from rad.model.config import ModelConfig
from rad.model.ssm import MambaState

# Enough for speculative decoding with blocks of up to ~30 tokens (draft k, verify k + 1, roll back into both).
DEFAULT_SSM_HISTORY = 32


def kv_shape(config: ModelConfig, batch: int, max_len: int) -> tuple[int, ...]:
    return batch, config.num_kv_heads, max_len, config.head_dim


def ssm_shapes(config: ModelConfig, batch: int, ssm_history: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The shapes of an SSM layer's conv states and SSM states: a ring of ssm_history slots + a scratch slot."""
    s = config.ssm
    ring = (batch, ssm_history + 1)  # + the scratch slot that padded positions write to
    return (*ring, s.d_inner + 2 * s.n_groups * s.d_state, s.conv_kernel), (*ring, s.n_heads, s.head_dim, s.d_state)


def cache_bytes(config: ModelConfig, batch: int, max_len: int, dtype: torch.dtype,
                ssm_history: int = DEFAULT_SSM_HISTORY) -> int:  # fmt: skip
    """What a DecodeCache of these sizes takes, known before it is allocated."""
    def size(shape, element: torch.dtype) -> int:
        return math.prod(shape) * element.itemsize

    total = 2 * len(config.attention_layers) * size(kv_shape(config, batch, max_len), dtype)
    if config.ssm_layers:
        conv, state = ssm_shapes(config, batch, ssm_history)
        ssm_dtype = torch.promote_types(dtype, torch.float32)
        total += len(config.ssm_layers) * (size(conv, dtype) + size(state, ssm_dtype))
    return total


class SSMSlots(NamedTuple):
    """The ring slots one forward's SSM layers read their states from and write them to."""

    read: torch.Tensor | None  # (B, 1): the slot of each row's state after its last position (None: in place)
    started: torch.Tensor | None  # (B, 1) bool: the row holds tokens, else its state is zeros (None: in place)
    write: torch.Tensor | None  # (B, T'): the slots for the states recorded, the scratch slot for padding (None: in place)
    per_position: bool  # a state per position (T' = T), else each row's final state (T' = 1)


class Slots(NamedTuple):
    """Where one forward reads and writes the cache, shared by its layers."""

    rows: torch.Tensor  # (B, 1): the batch index, for advanced indexing
    positions: torch.Tensor  # (B, T): the tokens' positions, each at the slot of its own number
    ssm: SSMSlots | None = None


class LayerCache(NamedTuple):
    """One layer's part of the cache, as its forward gets it: tensors and slots, not a layer number, so that the
    layers of one kind run one compiled graph (a number would be a constant baked into each layer's graph)."""

    first: torch.Tensor  # keys (attention) or conv states (SSM)
    second: torch.Tensor  # values (attention) or SSM states (SSM)
    slots: Slots

    def write(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store keys/values (B, kv_heads, T, D) at their positions; return the layer's whole keys and values."""
        rows, positions = self.slots.rows, self.slots.positions
        # Advanced indices on dims 0 and 2 put the index dims first: the target is (B, T, kv_heads, D).
        self.first[rows, :, positions] = keys.transpose(1, 2)
        self.second[rows, :, positions] = values.transpose(1, 2)
        return self.first, self.second

    def read(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values (B, kv_heads, T, D) held at this forward's positions."""
        rows, positions = self.slots.rows, self.slots.positions
        return self.first[rows, :, positions].transpose(1, 2), self.second[rows, :, positions].transpose(1, 2)

    def ssm_state(self) -> MambaState:
        """Each row's state after its last position (zeros for an empty row)."""
        ring = self.slots.ssm
        if ring.read is None:  # the one slot, read in place (an empty row's is zeros: see DecodeCache.rollback)
            return MambaState(self.first[:, 0], self.second[:, 0])
        conv, ssm = self.first[self.slots.rows, ring.read][:, 0], self.second[self.slots.rows, ring.read][:, 0]
        return MambaState(conv * ring.started[..., None], ssm * ring.started[..., None, None])

    def ssm_record(self, states: MambaState) -> None:
        """Store a forward's states (a T' dim after the batch) at the slots `begin` chose."""
        write = self.slots.ssm.write
        if write is None:  # the one slot, overwritten in place: no scatter
            self.first[:, 0].copy_(states.conv[:, 0])
            self.second[:, 0].copy_(states.ssm[:, 0])
            return
        self.first[self.slots.rows, write] = states.conv.to(self.first.dtype)
        self.second[self.slots.rows, write] = states.ssm.to(self.second.dtype)


class DecodeCache:
    """Everything a decode step reads back from earlier tokens: KV of attention layers, SSM layers' states."""

    def __init__(self, config: ModelConfig, batch: int, max_len: int, device, dtype: torch.dtype,
                 ssm_history: int = DEFAULT_SSM_HISTORY):  # fmt: skip
        shape = kv_shape(config, batch, max_len)
        self.keys = {i: torch.zeros(shape, device=device, dtype=dtype) for i in config.attention_layers}
        self.values = {i: torch.zeros(shape, device=device, dtype=dtype) for i in config.attention_layers}
        self.lengths = torch.zeros(batch, dtype=torch.long, device=device)
        # Known on the host, unlike `lengths`: no forward has written here yet (the model's forward clears it), so
        # only the next one can be a prefill whose queries see nothing but its own keys.
        self.fresh = True
        self.max_len = max_len
        self.slots = torch.arange(max_len, device=device)
        self._rows = torch.arange(batch, device=device)[:, None]
        self.ssm_history = ssm_history
        self.conv, self.ssm = {}, {}
        if config.ssm_layers:
            conv, state = ssm_shapes(config, batch, ssm_history)
            ssm_dtype = torch.promote_types(dtype, torch.float32)  # as Mamba2Mixer.init_state
            for i in config.ssm_layers:
                self.conv[i] = torch.zeros(conv, device=device, dtype=dtype)
                self.ssm[i] = torch.zeros(state, device=device, dtype=ssm_dtype)
            # The position whose state each slot holds (-1: none); shared, as every SSM layer records alike.
            self.ring_positions = torch.full(conv[:2], -1, dtype=torch.long, device=device)

    @property
    def batch_size(self) -> int:
        return self.lengths.shape[0]

    def begin(self, positions: torch.Tensor, valid: torch.Tensor | None) -> Slots:
        """Where a forward on tokens at `positions` (B, T) (`valid`: which are real) reads and writes, worked out
        once for all its layers; the ring's bookkeeping (which position each slot holds) is done here, once.

        With T <= ssm_history the SSM layers record the state after every position (a verify block, whose every
        prefix may be accepted); with more (a prompt) only each row's final state, and the ring forgets everything
        older for rows that took tokens (their earlier slots now hold positions of a past history, or none)."""
        self.fresh = False
        if not self.ssm:
            return Slots(self._rows, positions)
        per_position = positions.shape[1] <= self.ssm_history  # a Python int: no host sync
        if self.ssm_history == 1 and per_position and valid is None:
            # A decode step of plain decoding, which never rolls back: the one slot is read and written in place, and
            # the ring's bookkeeping is left alone (rollback then only allows the lengths the cache has).
            return Slots(self._rows, positions, SSMSlots(None, None, None, per_position))
        read = ((self.lengths - 1) % self.ssm_history)[:, None]
        started = (self.lengths > 0)[:, None]
        recorded = positions
        if valid is None:
            valid = torch.ones_like(positions, dtype=torch.bool)
        if not per_position:
            count = valid.sum(dim=1, keepdim=True)
            recorded = positions.gather(1, (count - 1).clamp(min=0))
            valid = count > 0
            self.ring_positions.masked_fill_(valid, -1)
        write = torch.where(valid, recorded % self.ssm_history, self.ssm_history)
        self.ring_positions[self._rows, write] = recorded
        return Slots(self._rows, positions, SSMSlots(read, started, write, per_position))

    def layer(self, index: int, slots: Slots) -> LayerCache:
        """Layer `index`'s part of the cache for a forward whose slots are `slots`."""
        if index in self.ssm:
            return LayerCache(self.conv[index], self.ssm[index], slots)
        return LayerCache(self.keys[index], self.values[index], slots)

    def advance(self, counts: torch.Tensor | int):
        """Record that each row holds `counts` more tokens."""
        self.lengths += counts

    def rollback(self, lengths: torch.Tensor | int):
        """Forget every token at or past `lengths` (per row, or one number for all rows)."""
        lengths = torch.minimum(self.lengths, torch.as_tensor(lengths, device=self.lengths.device))
        if self.ssm and self.ssm_history == 1:
            if not bool(((lengths == self.lengths) | (lengths == 0)).all()):
                raise RadError("cannot roll back the SSM state: this cache keeps only each row's last state "
                               "(ssm_history 1): it can only be emptied; create it with a larger ssm_history")
            emptied = lengths == 0  # their states are zeroed, as a decode step reads the one slot unmasked
            for states in (*self.conv.values(), *self.ssm.values()):
                states[emptied] = 0
        elif self.ssm:
            # One host sync per rollback (not per decode step): a wrong state would be silent otherwise.
            held = self.ring_positions.gather(1, ((lengths - 1) % self.ssm_history)[:, None])[:, 0]
            if not bool(((lengths == 0) | (held == lengths - 1)).all()):
                raise RadError(
                    f"cannot roll back the SSM state to lengths {lengths.tolist()}: the cache keeps the last "
                    f"{self.ssm_history} positions of each row (ssm_history); create it with a larger ssm_history"
                )
        self.lengths.copy_(lengths)

    def kv_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys.values(), *self.values.values()))

    def ssm_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.conv.values(), *self.ssm.values()))

    def memory_bytes(self) -> int:
        return self.kv_bytes() + self.ssm_bytes()

