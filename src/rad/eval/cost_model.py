"""Cost model: the speed-up of self-speculative decoding for any skip set S, from timed sub-layers
and acceptance statistics, so that the layer search has an objective that a noisy clock cannot move.

Timing, once per model, device, dtype, batch size, cache length and verify width (then cached): whole
forwards of the full model on w tokens per row, queries at the end of a cache of the run's length
(attention reads every slot of the preallocated cache, so its length sets the cost), at w = 1 (a decode
step) and w = W (a verification). Hooks time each sub-layer inside those forwards, as it runs when
decoding (its weights competing for the caches with the other layers'), without calling a layer's
internals directly. Each segment of the forward (a sub-layer, or the stretch between two) keeps its
least time over the repetitions: interference from other work only ever adds time, and a least per
segment needs one undisturbed pass per segment, not one undisturbed forward (on a busy machine a whole
forward is rarely undisturbed: its least time came out up to twice the sum of its parts). From those:
  a(w)  one attention sub-layer (input norm and attention over the cache), averaged over the layers,
  m(w)  one MLP sub-layer (post-attention norm and MLP), averaged over the layers,
  r(w)  the rest of the forward: embedding, residual adds, final norm, LM head, a hybrid's SSM mixers
        (and the hooks' own small overhead).
At widths between 1 and W costs are linear interpolations.

A model compiled for decoding (rad.model.compiled) is timed as it decodes, where no hook can stamp a sub-layer: whole
forwards, each its least time over the repetitions. A forward that skips nothing is one graph: c(1) and c(W) are timed
as they are. A draft forward (one token per row; one graph for any skip set, see rad.model.compiled) is timed with
every attention sub-layer skipped (r(1): MLPs, SSM mixers and the rest; m is then 0) and with one skipped, whose
difference over A - 1 is a(1); the draft formula below then holds unchanged.

With A attention layers among L layers, |S| of them skipped by the draft:
  draft forward    c_d(S) = (A - |S|)·a(1) + L·m(1) + r(1)
  full forward     c(w)   =  A·a(w)      + L·m(w) + r(w)          (c(1) is one plain decode step)
A speculative step runs d draft forwards (d = draft forwards per verification, from the statistics),
one verification of width d + 1, and emits t = mean accepted + 1 tokens per row, where plain decoding
spends c(1) per token:
  speed-up(S) = t · c(1) / (d · c_d(S) + c(d + 1))
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from weakref import WeakKeyDictionary

import torch

from rad.decode.loop import synchronize
from rad.decode.spec_stats import SpecStats
from rad.model.llama import CausalLM

REPS, WARMUP = 30, 3
_measured: WeakKeyDictionary = WeakKeyDictionary()  # model -> {(batch, context, width, device, dtype): costs}


@dataclass(frozen=True)
class SubLayerCosts:
    """Seconds per call at width 1 and at `width` tokens per row, for a batch at one cache length."""

    width: int
    attention: tuple[float, float]
    mlp: tuple[float, float]
    rest: tuple[float, float]
    num_layers: int
    num_attention: int
    full: tuple[float, float] | None = None  # compiled: a forward that skips nothing, timed whole (widths 1 and W)

    def _at(self, pair: tuple[float, float], width: float) -> float:
        low, high = pair
        return low + (high - low) * (width - 1) / (self.width - 1)

    def forward(self, width: float = 1, skipped: int = 0) -> float:
        """Modeled seconds of one forward on `width` tokens per row with `skipped` attention sub-layers."""
        if skipped == 0 and self.full is not None:
            return self._at(self.full, width)
        attention = (self.num_attention - skipped) * self._at(self.attention, width)
        return attention + self.num_layers * self._at(self.mlp, width) + self._at(self.rest, width)

    def speedup(self, stats: SpecStats, skipped: int) -> float:
        """Modeled speed-up over plain decoding of a run with these statistics and |S| = `skipped`."""
        drafts = stats.draft_forwards / stats.verify_forwards
        tokens = stats.mean_accepted + 1
        return tokens * self.forward() / (drafts * self.forward(1, skipped) + self.forward(drafts + 1))


def measure_costs(model: CausalLM, batch: int, context: int, width: int) -> SubLayerCosts:
    """The sub-layer costs of `model` for `batch` rows, a cache of `context` slots, verify width `width` (cached)."""
    key = (batch, context, width, model.device, model.dtype)
    per_model = _measured.setdefault(model, {})
    if key not in per_model:
        timer = _time_sublayers if model.compiled_decode is None else _time_compiled_forwards
        per_model[key] = timer(model, batch, context, width)
    return per_model[key]


class _Timeline:
    """Forward hooks, for the span of a `with`, that stamp the time where each sub-layer starts and ends.

    `marks` holds (kind, time) pairs: each mark starts a segment of that kind ("attention", "mlp" or
    "rest") that lasts until the next mark. Every forward of one model yields the same segments.
    """

    def __init__(self, model: CausalLM):
        self.model, self.marks, self.handles = model, [], []

    def __enter__(self):
        attention = set(self.model.config.attention_layers)
        for i, layer in enumerate(self.model.model.layers):
            if i in attention:
                self._watch("attention", layer.input_layernorm, layer.self_attn)
            self._watch("mlp", layer.post_attention_layernorm, layer.mlp)
        return self

    def __exit__(self, *_):
        for handle in self.handles:
            handle.remove()

    def stamp(self, kind: str):
        synchronize(self.model.device)
        self.marks.append((kind, time.perf_counter()))

    def _watch(self, kind: str, first, last):
        self.handles += [first.register_forward_pre_hook(lambda *_: self.stamp(kind)),
                         last.register_forward_hook(lambda *_: self.stamp("rest"))]

    def segments(self, batch: int, context: int, width: int) -> list[tuple[str, float]]:
        """(kind, seconds) of each segment of one forward on `width` tokens per row, queries at the end of
        a `context`-slot cache."""
        ids, positions, cache = _forward_at_end(self.model, batch, context, width)
        self.marks = []
        self.stamp("rest")
        self.model(ids, positions, cache)
        self.stamp("end")
        return [(kind, end - start) for (kind, start), (_, end) in zip(self.marks, self.marks[1:])]


def _forward_at_end(model: CausalLM, batch: int, context: int, width: int):
    """Token ids, positions and a cache for a forward of `width` tokens per row at the end of a `context`-slot cache,
    which counts as written (its keys are zeros: the time does not depend on them)."""
    device = model.device
    cache = model.new_cache(batch, context)
    cache.fresh = False  # a decoding forward, not a prefill: it runs compiled, as the decode steps do
    # Contiguous, as the decode loops' positions are: compiled graphs are specialised on strides too.
    positions = (context - width + torch.arange(width, device=device)).expand(batch, -1).contiguous()
    return torch.zeros(batch, width, dtype=torch.long, device=device), positions, cache


@torch.inference_mode()
def _time_sublayers(model: CausalLM, batch: int, context: int, width: int) -> SubLayerCosts:
    layers, attention = model.config.num_layers, len(model.config.attention_layers)
    best = {1: [], width: []}  # width -> (kind, least seconds) of each segment of a forward
    with _Timeline(model) as timeline:
        for rep in range(WARMUP + REPS):
            for w in best:  # the widths alternate, so slow phases of the machine hit both
                timed = timeline.segments(batch, context, w)
                if rep == WARMUP:
                    best[w] = timed
                elif rep > WARMUP:
                    best[w] = [(kind, min(a, b)) for (kind, a), (_, b) in zip(best[w], timed)]

    def costs(w: int) -> tuple[float, float, float]:
        total = {kind: sum(seconds for k, seconds in best[w] if k == kind) for kind in ("attention", "mlp", "rest")}
        return total["attention"] / max(attention, 1), total["mlp"] / layers, total["rest"]

    (a1, m1, r1), (aw, mw, rw) = costs(1), costs(width)
    return SubLayerCosts(width, (a1, aw), (m1, mw), (r1, rw), layers, attention)


@torch.inference_mode()
def _time_compiled_forwards(model: CausalLM, batch: int, context: int, width: int) -> SubLayerCosts:
    layers = tuple(model.config.attention_layers)
    attention = len(layers)
    # (tokens per row, skipped layers); drafts are one token per row, so their graph is timed at 1.
    variants = [(1, ()), (width, ()), (1, layers), (1, layers[:1])]
    inputs = {variant: _forward_at_end(model, batch, context, variant[0]) for variant in variants}
    best = dict.fromkeys(variants, float("inf"))
    for rep in range(WARMUP + REPS):
        for variant in variants:  # taking turns, so slow phases of the machine hit all of them
            ids, positions, cache = inputs[variant]
            synchronize(model.device)
            start = time.perf_counter()
            model(ids, positions, cache, variant[1])
            synchronize(model.device)
            if rep >= WARMUP:
                best[variant] = min(best[variant], time.perf_counter() - start)

    rest = best[1, layers]
    a1 = (best[1, layers[:1]] - rest) / (attention - 1) if attention > 1 else 0.0  # one layer: a draft skips it all
    return SubLayerCosts(width, (a1, a1), (0.0, 0.0), (rest, rest), model.config.num_layers, attention,
                         full=(best[1, ()], best[width, ()]))
