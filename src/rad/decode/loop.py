"""What plain and self-speculative decoding share: the request's checks, padding, the prefill, trimming at
stop tokens, the output type and device sync.

A batch holds prompts of different lengths, left-aligned in the cache (see rad.model.cache): the prompts
are right-padded into one (B, T) tensor and each row keeps its own length.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from rad.errors import RadError
from rad.machine import check_memory
from rad.model.cache import DEFAULT_SSM_HISTORY, DecodeCache, cache_bytes
from rad.model.compiled import cache_slots
from rad.model.config import ModelConfig
from rad.model.llama import CausalLM


@dataclass
class GenerationOutput:
    tokens: list[list[int]]  # new tokens per row, through its first stop token
    prefill_s: float
    decode_s: float
    # Decode steps run: tokens chosen per row, past the stop tokens of rows that finished before the loop
    # last looked (plain decoding checks every few steps; rad.eval.profiling corrects timings for it).
    steps: int = 0

    @property
    def seconds(self) -> float:
        return self.prefill_s + self.decode_s

    @property
    def num_tokens(self) -> int:
        return sum(len(t) for t in self.tokens)

    @property
    def tokens_per_s(self) -> float:
        return self.num_tokens / self.seconds if self.seconds > 0 else 0.0


class Request(NamedTuple):
    """A checked generation request: what the decode loops start from."""

    skip: frozenset[int]
    stop_tokens: list[int]
    ids: torch.Tensor  # (B, T) prompts, right-padded
    lengths: torch.Tensor  # (B,) each prompt's length


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pad_prompts(prompts: Sequence[Sequence[int]], device, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad prompts into (B, T) ids; return ids and the (B,) lengths."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise RadError("every prompt needs at least one token")
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    ids = torch.full((len(prompts), int(lengths.max())), pad_id, dtype=torch.long, device=device)
    for row, prompt in enumerate(prompts):
        ids[row, : len(prompt)] = torch.tensor(prompt, dtype=torch.long)
    return ids, lengths


def check_positions(config: ModelConfig, longest_prompt: int, max_new_tokens: int) -> None:
    """A RadError when a prompt and its new tokens would run past the positions the model was trained for (its
    output there is not to be trusted: refused, not decoded silently)."""
    if longest_prompt + max_new_tokens > config.max_position_embeddings:
        raise RadError(f"a prompt of {longest_prompt} tokens and {max_new_tokens} new tokens need "
                       f"{longest_prompt + max_new_tokens} positions; the model has {config.max_position_embeddings} "
                       "(max_position_embeddings): shorten the prompt or ask for fewer new tokens")


def check_request(model: CausalLM, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                  stop_tokens: Collection[int] | None, skip: Collection[int], beyond_positions: bool = False,
                  extra_slots: int = 0) -> Request:  # fmt: skip
    """Validate a generation request; stop tokens default to the model's end-of-sequence tokens. The request
    must fit the model's positions (unless `beyond_positions`: a speed measurement, whose tokens nobody reads) and
    its cache (the longest prompt, the new tokens and `extra_slots` per row) the machine's memory."""
    if max_new_tokens < 1:
        raise RadError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    skip = model.config.check_skip(skip)
    longest = max((len(p) for p in prompts), default=0)
    if not beyond_positions:
        check_positions(model.config, longest, max_new_tokens)
    slots = cache_capacity(model, longest + max_new_tokens + extra_slots)
    check_memory(cache_bytes(model.config, len(prompts), slots, model.dtype),
                 f"a cache for {len(prompts)} rows of {slots} tokens", model.device.type)
    stop_tokens = model.config.eos_token_ids if stop_tokens is None else list(stop_tokens)
    return Request(skip, stop_tokens, *pad_prompts(prompts, model.device))


def cache_capacity(model: CausalLM, needed: int) -> int:
    """The slots per row of the cache a decode loop allocates for `needed`: a model compiled for decoding gets the
    bucket (rad.model.compiled.cache_slots), so that similar prompts share its compiled graphs."""
    return needed if model.compiled_decode is None else cache_slots(needed)


def prefill(model: CausalLM, ids: torch.Tensor, lengths: torch.Tensor, capacity: int, skip: Collection[int] = (),
            ssm_history: int = DEFAULT_SSM_HISTORY) -> tuple[DecodeCache, torch.Tensor]:  # fmt: skip
    """Run the prompts (right-padded `ids`, true `lengths`) into a new cache of `cache_capacity(model, capacity)`
    slots per row (SSM layers able to roll back `ssm_history` positions, see rad.model.cache).

    Returns the cache, holding each row's prompt, and the logits (B, vocab) at each row's last prompt token.
    """
    cache = model.new_cache(ids.shape[0], cache_capacity(model, capacity), ssm_history)
    positions = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
    logits = model(ids, positions, cache, skip, logit_index=lengths - 1, valid=positions < lengths[:, None])
    cache.advance(lengths)
    return cache, logits


def trim_at_stop(row: list[int], stop_tokens: Collection[int]) -> list[int]:
    """The row through its first stop token."""
    for i, token in enumerate(row):
        if token in stop_tokens:
            return row[: i + 1]
    return row
