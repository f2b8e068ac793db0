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
The verify forward writes every position (a hybrid's ring records each), and the cache then advances
by what each row keeps.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from rad.decode.draft_policy import AdaptiveExit, DraftPolicy
from rad.decode.loop import GenerationOutput, check_request, prefill, synchronize, trim_at_stop
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
    cache_len: int = 0  # slots per row of the cache it decoded in (what a step's attention reads)


class Draft(NamedTuple):
    """One step's drafts for every row."""

    tokens: torch.Tensor  # (B, 1 + k): the pending token, then the drafts (k: the longest row's)
    probs: torch.Tensor | None  # (B, k, V) the drafts' distributions; None when greedy
    lengths: list[int]  # each row's own number of drafts (a shorter row's extra drafts are never accepted)


class Verdict(NamedTuple):
    """What the full model made of one row's drafts."""

    drafts: list[int]
    accepted: int  # how many of them it keeps
    next_token: int  # its own token after the accepted ones


class _Speculator:
    """Drafting and verification for one batch: the model, S, the sampler and the rows' uniforms."""

    def __init__(self, model: CausalLM, skip, sampling: SamplingConfig, policy: DraftPolicy, batch: int, span: int):
        self.model, self.skip, self.sampling = model, skip, sampling
        # Compiled layers verify K + 1 tokens per row every step, drafted or not: one shape, one graph.
        self.fixed_width = policy.max_drafts + 1 if model.compiled_decode is not None else None
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

    def draft(self, cache, pending: torch.Tensor, positions: torch.Tensor, emitted: torch.Tensor | None,
              budget: list[int]) -> Draft:  # fmt: skip
        """Draft up to budget[b] tokens per row after `pending` (B, 1), with S skipped, at `positions`."""
        columns, probs = [pending], []
        # Without an adaptive exit every row drafts its whole budget: no per-draft bookkeeping.
        if self.exit is not None:
            limit = torch.tensor(budget, device=pending.device)
            lengths, active = torch.zeros_like(limit), limit > 0
        for i in range(max(budget)):
            if self.exit is not None and not bool(active.any()):  # rows stop on their own confidence
                break
            logits = self.model(columns[-1], positions[:, i : i + 1], cache, self.skip)[:, -1]
            cache.advance(1)
            if self.sampling.greedy:
                token = logits.argmax(-1, keepdim=True)
                q = torch.softmax(logits.float(), -1) if self.exit is not None else None
            else:
                q = distribution(logits, self.sampling)
                token = draw(q, self.uniform(emitted + i, DRAFT))[:, None]
            columns.append(token)
            probs.append(q)
            if self.exit is not None:
                lengths += active.long()
                active &= (lengths < limit) & self.exit.keep_drafting(q)
        tokens = torch.cat(columns, 1)
        draft_lens = budget if self.exit is None else lengths.tolist()
        if self.sampling.greedy:
            return Draft(tokens, None, draft_lens)
        vocab = self.model.config.vocab_size
        draft_probs = torch.stack(probs, 1) if probs else torch.zeros(len(pending), 0, vocab, device=pending.device)
        return Draft(tokens, draft_probs, draft_lens)

    def verify(self, cache, draft: Draft, positions, emitted) -> list[Verdict]:
        """One full-model forward over the step's tokens (the pending token and the drafts); each row's
        verdict, on the host, from one transfer."""
        tokens, draft_lens = draft.tokens, draft.lengths
        width = tokens.shape[1]
        if self.fixed_width is None:
            logits = self.model(tokens, positions[:, :width], cache)  # the caller advances the cache by what is kept
        else:  # padded to the compiled width: the tokens past `width` are never accepted
            padded = torch.nn.functional.pad(tokens, (0, self.fixed_width - width))
            logits = self.model(padded, positions, cache)[:, :width]
        if self.sampling.greedy:
            table = torch.cat([tokens[:, 1:], logits.argmax(-1)], 1).tolist()
            verdicts = []
            for row, length in zip(table, draft_lens):
                drafts, choices = row[:length], row[width - 1 :]
                accepted = accept_greedy(drafts, choices)
                verdicts.append(Verdict(drafts, accepted, choices[accepted]))
            return verdicts
        index = emitted[:, None] + torch.arange(width, device=tokens.device)
        lens = torch.tensor(draft_lens, device=tokens.device)
        accepted, following = accept_sampled(tokens[:, 1:], draft.probs, distribution(logits, self.sampling), lens,
                                             self.uniform(index[:, :-1], ACCEPT), self.uniform(index, NEXT))
        table = torch.cat([tokens[:, 1:], accepted[:, None], following[:, None]], 1).tolist()
        return [Verdict(row[:length], row[-2], row[-1]) for row, length in zip(table, draft_lens)]


class _Progress:
    """On the host: the rows' emitted tokens and cache lengths, which rows finished, the acceptance counts.

    A step's bookkeeping runs here from one small transfer per step (a GPU syncs once per step either
    way, to know when to stop): as device ops, greedy acceptance, the emitted tokens and the cache
    lengths took some forty tiny calls per step, each costing a CPU a few microseconds.
    """

    def __init__(self, first_tokens: list[int], lengths: list[int], stop_tokens, max_new_tokens: int, draft_len: int):
        self.stop_tokens, self.max_new_tokens, self.draft_len = set(stop_tokens), max_new_tokens, draft_len
        self.rows = [[token] for token in first_tokens]
        self.lengths = lengths  # each row's cache length: its prompt, then every token it kept
        self.done = [token in self.stop_tokens or max_new_tokens == 1 for token in first_tokens]
        self.histogram = [0] * (draft_len + 1)  # finished rows stop counting
        self.drafted = 0

    def budget(self) -> list[int]:
        """Drafts per row this step: a step emits at most drafts + 1 tokens, never past max_new_tokens."""
        return [0 if done else min(self.draft_len, self.max_new_tokens - len(row) - 1)
                for row, done in zip(self.rows, self.done)]

    def positions(self, width: int, device) -> torch.Tensor:
        """(B, width): each row's next `width` cache slots, where this step's tokens go."""
        return torch.tensor([[length + i for i in range(width)] for length in self.lengths], device=device)

    def emitted(self, device) -> torch.Tensor:
        """(B,) tokens emitted per row: the index of the next token in the samplers' uniform streams."""
        return torch.tensor([len(row) for row in self.rows], device=device)

    def record(self, verdicts: list[Verdict]) -> list[int]:
        """Take a verified step; return how many tokens each row keeps in the cache (the pending token and
        its accepted drafts; 0 for rows that had finished)."""
        keep = [0] * len(verdicts)
        for b, (drafts, accepted, token) in enumerate(verdicts):
            if self.done[b]:
                continue
            emitted = drafts[:accepted] + [token]
            self.rows[b] += emitted
            keep[b] = accepted + 1
            self.lengths[b] += keep[b]
            self.histogram[accepted] += 1
            self.drafted += len(drafts)
            self.done[b] = not self.stop_tokens.isdisjoint(emitted) or len(self.rows[b]) >= self.max_new_tokens
        return keep


@torch.inference_mode()
def speculative_generate(model: CausalLM, prompts: Sequence[Sequence[int]], max_new_tokens: int = 64,
                         sampling: SamplingConfig = SamplingConfig(), stop_tokens: Collection[int] | None = None,
                         skip: Collection[int] = (), policy: DraftPolicy = DraftPolicy()) -> SpeculativeOutput:
    """Generate like `generate`, drafting with the attention of layers `skip` skipped; the output carries
    the acceptance statistics (`stats`). How it compares with plain decoding is rad.eval.profiling's job."""
    skip, stop_tokens, ids, lengths = check_request(model, prompts, max_new_tokens, stop_tokens, skip,
                                                    extra_slots=policy.max_drafts + 1)
    device = model.device
    batch, draft_len = ids.shape[0], policy.max_drafts
    span = max_new_tokens + draft_len + 1  # token positions a row can write to, drafts past its end included
    capacity = ids.shape[1] + span
    speculator = _Speculator(model, skip, sampling, policy, batch, span)

    start = time.perf_counter()
    # A hybrid's SSM layers must roll back over a draft (k positions) and a verification (k + 1).
    cache, logits = prefill(model, ids, lengths, capacity, ssm_history=draft_len + 2)
    pending = speculator.first_token(logits)  # emitted, but not yet in the cache
    progress = _Progress(pending.tolist(), lengths.tolist(), stop_tokens, max_new_tokens, draft_len)
    pending = pending[:, None]
    draft_forwards = verify_forwards = 0
    synchronize(device)
    prefill_end = time.perf_counter()

    while not all(progress.done):
        budget = progress.budget()
        positions = progress.positions(speculator.fixed_width or max(budget) + 1, device)
        emitted = None if sampling.greedy else progress.emitted(device)
        draft = speculator.draft(cache, pending, positions, emitted, budget)
        cache.rollback(positions[:, 0])
        verdicts = speculator.verify(cache, draft, positions, emitted)
        draft_forwards, verify_forwards = draft_forwards + draft.tokens.shape[1] - 1, verify_forwards + 1
        kept = torch.tensor(progress.record(verdicts), device=device)
        cache.advance(kept)
        if speculator.exit is not None:
            accepted = torch.tensor([verdict.accepted for verdict in verdicts], device=device)
            speculator.exit.update(accepted, torch.tensor(draft.lengths, device=device), kept > 0)
        pending = torch.tensor([[verdict.next_token] for verdict in verdicts], device=device)
    synchronize(device)
    end = time.perf_counter()

    rows = [trim_at_stop(row, progress.stop_tokens) for row in progress.rows]
    stats = SpecStats(draft_len, progress.histogram, progress.drafted, draft_forwards, verify_forwards)
    return SpeculativeOutput(rows, prefill_end - start, end - prefill_end, verify_forwards, stats, cache.max_len)
