"""Self-speculative decoding: the model drafts with the attention of layers S skipped, then verifies.

One step, for every row at once: the draft (the same model, S skipped) proposes up to K tokens after
the row's pending token, one forward each; the cache goes back to where it was before drafting; the
full model reads the pending token and all drafts in one forward and accepts a prefix of them
(rad.decode.verify), then adds its own next token. Greedy output is token for token the plain greedy
output; sampled output follows the full model's distribution exactly.

Rows are independent: each accepts its own number of tokens and its cache length moves on by that
much (rows are left-aligned, with per-row positions; see rad.model.cache). A sampled row draws from
its own uniform streams, indexed by the position of the token it is producing, and adapts its own
draft length, so a row in a batch yields what it yields alone. Rows that finished (a stop token,
or max_new_tokens) stop counting; they ride along in the batch, their cache length held still.

The cache is only ever moved through `advance` and `rollback`: a hybrid's SSM state is restored by
rollback, so it is called before the verify forward even though attention would simply overwrite.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import torch

from rad.decode.cost_model import measure_costs
from rad.decode.draft_policy import AdaptiveExit, DraftPolicy
from rad.decode.generate import GenerationOutput, check_request, generate, prefill, synchronize, trim_at_stop
from rad.decode.sampling import SamplingConfig, distribution, draw, row_uniforms, select
from rad.decode.spec_stats import SpecStats
from rad.decode.verify import accept_greedy, accept_sampled
from rad.model.llama import CausalLM

# A sampled row has three uniform streams, indexed by the position of the token being produced:
# drawing a draft token there, accepting it, and drawing the full model's token there.
DRAFT, ACCEPT, NEXT = range(3)


@dataclass
class SpeculativeOutput(GenerationOutput):
    stats: SpecStats | None = None
    plain: GenerationOutput | None = None  # plain decoding of the same prompts, when measured


class _Speculator:
    """Drafting and verification for one batch: the model, S, the sampler and the rows' uniforms."""

    def __init__(self, model: CausalLM, skip, sampling: SamplingConfig, policy: DraftPolicy, batch: int, span: int):
        self.model, self.skip, self.sampling = model, skip, sampling
        device = model.device
        self.rows = torch.arange(batch, device=device)
        self.exit = AdaptiveExit(policy, batch, device) if policy.adaptive else None
        seeds = [sampling.seed + r for r in range(batch)]
        self.uniforms = None if sampling.greedy else row_uniforms(seeds, 3 * span, device).view(batch, span, 3)

    def uniform(self, index: torch.Tensor, stream: int) -> torch.Tensor:
        """Each row's uniform of `stream` at token positions `index` ((B,) or (B, n))."""
        rows = self.rows if index.dim() == 1 else self.rows[:, None]
        return self.uniforms[rows, index, stream]

    def first_token(self, logits: torch.Tensor) -> torch.Tensor:
        return select(logits, self.sampling, None if self.uniforms is None else self.uniforms[:, 0, NEXT])

    def draft(self, cache, pending: torch.Tensor, count: torch.Tensor, budget: list[int]):
        """Draft up to budget[b] tokens per row after `pending`, with S skipped.

        Returns drafts (B, k), their distributions (B, k, V) (None when greedy) and each row's own
        draft length (B,); k is the longest of them (shorter rows' extra drafts are never accepted).
        """
        tokens, probs = [], []
        limit = torch.tensor(budget, device=pending.device)
        # Without an adaptive exit every row drafts its whole budget: no per-draft bookkeeping.
        lengths = limit if self.exit is None else torch.zeros_like(limit)
        active = None if self.exit is None else limit > 0
        token = pending
        for _ in range(max(budget)):
            if self.exit is not None and not bool(active.any()):  # rows stop on their own confidence
                break
            logits = self.model(token[:, None], cache.lengths[:, None], cache, self.skip)[:, -1]
            cache.advance(1)
            if self.sampling.greedy:
                token = logits.argmax(-1)
                q = torch.softmax(logits.float(), -1) if self.exit is not None else None
            else:
                q = distribution(logits, self.sampling)
                token = draw(q, self.uniform(count + len(tokens), DRAFT))
            tokens.append(token)
            probs.append(q)
            if self.exit is not None:
                lengths += active.long()
                active &= (lengths < limit) & self.exit.keep_drafting(q)
        drafts = torch.stack(tokens, 1) if tokens else pending.new_zeros(pending.shape[0], 0)
        if self.sampling.greedy:
            return drafts, None, lengths
        vocab = self.model.config.vocab_size
        draft_probs = torch.stack(probs, 1) if probs else torch.zeros(len(pending), 0, vocab, device=pending.device)
        return drafts, draft_probs, lengths

    def verify(self, cache, pending, drafts, draft_probs, draft_lens, count):
        """One full-model forward over the pending token and the drafts: (accepted (B,), next token (B,))."""
        sequence = torch.cat([pending[:, None], drafts], 1)
        offsets = torch.arange(sequence.shape[1], device=sequence.device)
        logits = self.model(sequence, cache.lengths[:, None] + offsets, cache)
        cache.advance(sequence.shape[1])
        if self.sampling.greedy:
            return accept_greedy(drafts, logits, draft_lens)
        index = count[:, None] + offsets
        return accept_sampled(drafts, draft_probs, distribution(logits, self.sampling), draft_lens,
                              self.uniform(index[:, :-1], ACCEPT), self.uniform(index, NEXT))


class _Progress:
    """The rows' emitted tokens, which rows finished, and the acceptance counts, kept on the host.

    A step's bookkeeping runs here from one small transfer per step: as device ops it was some
    eighty tiny calls per step (~0.5 ms on a CPU, a sixth of the shipped model's draft forward), and
    a GPU syncs once per step either way, to know when to stop.
    """

    def __init__(self, first_tokens: list[int], stop_tokens, max_new_tokens: int, draft_len: int):
        self.stop_tokens, self.max_new_tokens, self.draft_len = set(stop_tokens), max_new_tokens, draft_len
        self.rows = [[token] for token in first_tokens]
        self.done = [token in self.stop_tokens or max_new_tokens == 1 for token in first_tokens]
        self.histogram = [0] * (draft_len + 1)  # finished rows stop counting
        self.drafted = 0

    def budget(self) -> list[int]:
        """Drafts per row this step: a step emits at most drafts + 1 tokens, never past max_new_tokens."""
        return [0 if done else min(self.draft_len, self.max_new_tokens - len(row) - 1)
                for row, done in zip(self.rows, self.done)]

    def record(self, step: list[list[int]]) -> list[int]:
        """Take a verified step, per row [*drafts, next token, accepted, drafted]; return how many tokens
        each row keeps in the cache (the pending token and its accepted drafts; 0 for finished rows)."""
        keep = [0] * len(step)
        for b, (*drafts, token, accepted, drafted) in enumerate(step):
            if self.done[b]:
                continue
            emitted = drafts[:accepted] + [token]
            self.rows[b] += emitted
            keep[b] = accepted + 1
            self.histogram[accepted] += 1
            self.drafted += drafted
            self.done[b] = not self.stop_tokens.isdisjoint(emitted) or len(self.rows[b]) >= self.max_new_tokens
        return keep


@torch.inference_mode()
def speculative_generate(
    model: CausalLM,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int = 64,
    sampling: SamplingConfig = SamplingConfig(),
    stop_tokens: Collection[int] | None = None,
    skip: Collection[int] = (),
    policy: DraftPolicy = DraftPolicy(),
    measure_plain: bool = False,
    model_cost: bool = False,
) -> SpeculativeOutput:
    """Generate like `generate`, drafting with the attention of layers `skip` skipped.

    The output carries `stats` (SpecStats). With `measure_plain`, plain decoding of the same prompts
    runs in the same call and `stats.speedup_measured` is the ratio of decode-phase tokens/s; with
    `model_cost`, `stats.speedup_modeled` comes from the cost model (rad.decode.cost_model).
    """
    skip, stop_tokens, ids, lengths = check_request(model, prompts, max_new_tokens, stop_tokens, skip)
    device = model.device
    batch, draft_len = ids.shape[0], policy.draft_len
    span = max_new_tokens + draft_len + 1  # token positions a row can write to, drafts past its end included
    capacity = ids.shape[1] + span
    speculator = _Speculator(model, skip, sampling, policy, batch, span)

    start = time.perf_counter()
    # A hybrid's SSM layers must roll back over a draft (k positions) and a verification (k + 1).
    cache, logits = prefill(model, ids, lengths, capacity, ssm_history=draft_len + 2)
    pending = speculator.first_token(logits)  # emitted, but not yet in the cache
    progress = _Progress(pending.tolist(), stop_tokens, max_new_tokens, draft_len)
    count = torch.ones(batch, dtype=torch.long, device=device)  # tokens emitted per row (the samplers' index)
    draft_forwards = verify_forwards = 0
    synchronize(device)
    prefill_end = time.perf_counter()

    while not all(progress.done):
        before = cache.lengths.clone()
        drafts, draft_probs, draft_lens = speculator.draft(cache, pending, count, progress.budget())
        cache.rollback(before)
        accepted, following = speculator.verify(cache, pending, drafts, draft_probs, draft_lens, count)
        draft_forwards, verify_forwards = draft_forwards + drafts.shape[1], verify_forwards + 1
        step = torch.cat([drafts, following[:, None], accepted[:, None], draft_lens[:, None]], 1)
        kept = torch.tensor(progress.record(step.tolist()), device=device)
        cache.rollback(before + kept)
        count += kept
        if speculator.exit is not None:
            speculator.exit.update(accepted, draft_lens, kept > 0)
        pending = following
    synchronize(device)
    end = time.perf_counter()

    rows = [trim_at_stop(row, progress.stop_tokens) for row in progress.rows]
    stats = SpecStats(draft_len, progress.histogram, progress.drafted, draft_forwards, verify_forwards)
    result = SpeculativeOutput(rows, prefill_end - start, end - prefill_end, stats=stats)
    if measure_plain:
        result.plain = generate(model, prompts, max_new_tokens, sampling, stop_tokens)
        stats.speedup_measured = measured_speedup(result, result.plain)
    if model_cost and stats.verify_forwards:
        stats.speedup_modeled = measure_costs(model, batch, capacity, draft_len + 1).speedup(stats, len(skip))
    return result


def measured_speedup(spec: GenerationOutput, plain: GenerationOutput) -> float | None:
    """Ratio of decode-phase tokens/s (each row's first token comes from the prefill, the same in both).

    Plain decoding looks for finished rows only every few steps (STOP_CHECK_INTERVAL), so it may run
    steps past the end of its longest row; its time is cut to the steps that row needed, so that the
    ratio measures speculation, not that throttle (which would flatter short, stopped generations).
    """
    decoded = [sum(len(row) - 1 for row in out.tokens) for out in (spec, plain)]
    forwards_needed, forwards_run = max(len(row) for row in plain.tokens) - 1, plain.extra["steps"] - 1
    plain_s = plain.decode_s * forwards_needed / forwards_run if forwards_run else 0.0
    if spec.decode_s <= 0 or plain_s <= 0:
        return None
    return (decoded[0] / spec.decode_s) / (decoded[1] / plain_s)
