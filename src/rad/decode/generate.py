"""Plain (non-speculative) generation: one prefill, then one token per forward.

Each row of a batch decodes exactly as it would alone (rad.decode.loop). The decode step has fixed shapes
and no host syncs; the loop looks at the host only every few steps to stop early once every row has finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence

import torch

from rad.decode.loop import GenerationOutput, check_request, prefill, synchronize, trim_at_stop
from rad.decode.sampling import SamplingConfig, row_uniforms, select
from rad.model.llama import CausalLM

STOP_CHECK_INTERVAL = 8  # steps between host syncs that test "all rows finished"


@torch.inference_mode()
def generate(model: CausalLM, prompts: Sequence[Sequence[int]], max_new_tokens: int = 64,
             sampling: SamplingConfig = SamplingConfig(), stop_tokens: Collection[int] | None = None,
             skip: Collection[int] = (), beyond_positions: bool = False,
             finished: Callable[[list[int]], bool] | None = None) -> GenerationOutput:
    """Generate up to `max_new_tokens` for each prompt (token id lists), skipping attention in `skip`
    (`beyond_positions`: allow more positions than the model has, for a speed measurement). `finished(tokens)`
    also ends a row, e.g. once its text holds a stop string: asked every few steps, so a row it ends may carry
    up to that many tokens past the point, which the caller cuts (stop tokens are cut here)."""
    skip, stop_tokens, ids, lengths = check_request(model, prompts, max_new_tokens, stop_tokens, skip, beyond_positions)
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
        if finished is not None and steps % STOP_CHECK_INTERVAL == 0:
            done |= torch.tensor([finished(row) for row in out[:, :steps].tolist()], device=device)
        if steps == max_new_tokens or (steps % STOP_CHECK_INTERVAL == 0 and bool(done.all())):
            break
        logits = model(token[:, None], cache.lengths[:, None], cache, skip)[:, -1]
        cache.advance(1)
    synchronize(device)
    end = time.perf_counter()

    rows = [trim_at_stop(row, set(stop_tokens)) for row in out[:, :steps].tolist()]
    return GenerationOutput(rows, prefill_end - start, end - prefill_end, steps)
