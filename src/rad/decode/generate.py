"""Plain (non-speculative) generation: one prefill, then one token per forward.

A batch holds prompts of different lengths, left-aligned in the cache (see rad.model.cache), so
each row decodes exactly as it would alone. The decode step has fixed shapes and no host syncs;
the loop looks at the host only every few steps to stop early once every row has finished.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import torch

from rad.decode.sampling import SamplingConfig, row_uniforms, select
from rad.errors import RadError
from rad.model.cache import DEFAULT_SSM_HISTORY
from rad.model.llama import CausalLM, validate_skip

STOP_CHECK_INTERVAL = 8  # steps between host syncs that test "all rows finished"


@dataclass
class GenerationOutput:
    tokens: list[list[int]]  # new tokens per row, through its first stop token
    prefill_s: float
    decode_s: float
    extra: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.prefill_s + self.decode_s

    @property
    def num_tokens(self) -> int:
        return sum(len(t) for t in self.tokens)

    @property
    def tokens_per_s(self) -> float:
        return self.num_tokens / self.seconds if self.seconds > 0 else 0.0


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pad_prompts(prompts: Sequence[Sequence[int]], device, pad_id: int = 0):
    """Right-pad prompts into (B, T) ids; return ids and the (B,) lengths."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise RadError("every prompt needs at least one token")
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    ids = torch.full((len(prompts), int(lengths.max())), pad_id, dtype=torch.long, device=device)
    for row, prompt in enumerate(prompts):
        ids[row, : len(prompt)] = torch.tensor(prompt, dtype=torch.long)
    return ids, lengths


def check_request(model: CausalLM, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                  stop_tokens: Collection[int] | None, skip: Collection[int]):  # fmt: skip
    """Validate a generation request: (skip set, stop tokens, right-padded prompt ids, prompt lengths)."""
    if max_new_tokens < 1:
        raise RadError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    skip = validate_skip(model.config, skip)
    stop_tokens = model.config.eos_token_ids if stop_tokens is None else list(stop_tokens)
    ids, lengths = pad_prompts(prompts, model.device)
    return skip, stop_tokens, ids, lengths


def prefill(model: CausalLM, ids: torch.Tensor, lengths: torch.Tensor, capacity: int, skip: Collection[int] = (),
            ssm_history: int = DEFAULT_SSM_HISTORY):  # fmt: skip
    """Run the prompts (right-padded `ids`, true `lengths`) into a new cache of `capacity` slots per row
    (SSM layers able to roll back `ssm_history` positions, see rad.model.cache).

    Returns the cache, holding each row's prompt, and the logits (B, vocab) at each row's last prompt token.
    """
    cache = model.new_cache(ids.shape[0], capacity, ssm_history)
    positions = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
    logits = model(ids, positions, cache, skip, logit_index=lengths - 1, valid=positions < lengths[:, None])
    cache.advance(lengths)
    return cache, logits


def trim_at_stop(row: list[int], stop_tokens: Collection[int]) -> list[int]:
    for i, token in enumerate(row):
        if token in stop_tokens:
            return row[: i + 1]
    return row


@torch.inference_mode()
def generate(
    model: CausalLM,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int = 64,
    sampling: SamplingConfig = SamplingConfig(),
    stop_tokens: Collection[int] | None = None,
    skip: Collection[int] = (),
) -> GenerationOutput:
    """Generate up to `max_new_tokens` for each prompt (token id lists), skipping attention in `skip`."""
    skip, stop_tokens, ids, lengths = check_request(model, prompts, max_new_tokens, stop_tokens, skip)
    device = model.device
    batch = ids.shape[0]
    uniforms = None if sampling.greedy else row_uniforms([sampling.seed + r for r in range(batch)], max_new_tokens, device)
    stops = torch.tensor(stop_tokens, dtype=torch.long, device=device)
    out = torch.zeros(batch, max_new_tokens, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)

    start = time.perf_counter()
    # Plain decoding never rolls back: one SSM state per layer is all a hybrid needs.
    cache, logits = prefill(model, ids, lengths, ids.shape[1] + max_new_tokens, skip, ssm_history=1)
    synchronize(device)
    prefill_end = time.perf_counter()

    steps = 0
    for step in range(max_new_tokens):
        token = select(logits, sampling, None if uniforms is None else uniforms[:, step])
        out[:, step] = token
        done |= torch.isin(token, stops)
        steps = step + 1
        if steps == max_new_tokens or (steps % STOP_CHECK_INTERVAL == 0 and bool(done.all())):
            break
        logits = model(token[:, None], cache.lengths[:, None], cache, skip)[:, -1]
        cache.advance(1)
    synchronize(device)
    end = time.perf_counter()

    rows = [trim_at_stop(row, set(stop_tokens)) for row in out[:, :steps].tolist()]
    # steps: tokens chosen per row, past the stop tokens of rows that finished before the last check
    return GenerationOutput(rows, prefill_end - start, end - prefill_end, extra={"steps": steps})
