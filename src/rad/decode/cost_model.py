"""Cost model: the speed-up of self-speculative decoding for any skip set S, from timed sub-layers
and acceptance statistics, so that the layer search has an objective that a noisy clock cannot move.

Timing, once per model, device, dtype, batch size, cache length and verify width (then cached): the
least seconds over repetitions (interference from other work only ever adds time), on the model's
device, of
  a(w)  one attention sub-layer (input norm, attention over the cache, residual add) on w tokens per row,
  m(w)  one MLP sub-layer (post-attention norm, MLP, residual add) on w tokens per row,
  f(w)  one forward of the full model on w tokens per row,
at w = 1 (a decode step) and w = W (a verification), queries at the end of a cache of the run's length
(attention reads every slot of the preallocated cache, so its length sets the cost). The three are
timed interleaved, so slow phases of the machine hit them alike. The rest, r(w) = f(w) - A·a(w) - L·m(w) >= 0,
is embedding, final norm, LM head, a hybrid's SSM mixers and per-layer overhead. At widths between
1 and W costs are linear interpolations.

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

from rad.decode.generate import synchronize
from rad.decode.spec_stats import SpecStats
from rad.model.llama import CausalLM
from rad.model.rope import rotary_tables

REPS, WARMUP = 20, 3
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

    def _at(self, pair: tuple[float, float], width: float) -> float:
        low, high = pair
        return low + (high - low) * (width - 1) / (self.width - 1)

    def forward(self, width: float = 1, skipped: int = 0) -> float:
        """Modeled seconds of one forward on `width` tokens per row with `skipped` attention sub-layers."""
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
        per_model[key] = _time_sublayers(model, batch, context, width)
    return per_model[key]


def _calls(model: CausalLM, batch: int, context: int, width: int) -> dict:
    """The three timed calls at one width, queries at the last `width` slots of a `context`-slot cache."""
    config, device = model.config, model.device
    layer = model.model.layers[config.attention_layers[0]]
    cache = model.new_cache(batch, context)
    positions = (context - width + torch.arange(width, device=device)).expand(batch, -1)
    rotary = rotary_tables(model.inv_freq, positions, model.dtype)
    x = torch.randn(batch, width, config.hidden_size, device=device, dtype=model.dtype)
    ids = torch.zeros(batch, width, dtype=torch.long, device=device)
    return {
        "attention": lambda: x + layer.self_attn(layer.input_layernorm(x), positions, rotary, cache),
        "mlp": lambda: x + layer.mlp(layer.post_attention_layernorm(x)),
        "forward": lambda: model(ids, positions, cache),
    }


@torch.inference_mode()
def _time_sublayers(model: CausalLM, batch: int, context: int, width: int) -> SubLayerCosts:
    calls = {(name, w): call for w in (1, width) for name, call in _calls(model, batch, context, w).items()}
    samples = {key: [] for key in calls}
    for _ in range(WARMUP + REPS):
        for key, call in calls.items():
            synchronize(model.device)
            start = time.perf_counter()
            call()
            synchronize(model.device)
            samples[key].append(time.perf_counter() - start)
    best = {key: min(times[WARMUP:]) for key, times in samples.items()}
    layers, attention = model.config.num_layers, len(model.config.attention_layers)

    def rest(w: int) -> float:
        return max(0.0, best["forward", w] - attention * best["attention", w] - layers * best["mlp", w])

    return SubLayerCosts(
        width=width,
        attention=(best["attention", 1], best["attention", width]),
        mlp=(best["mlp", 1], best["mlp", width]),
        rest=(rest(1), rest(width)),
        num_layers=layers,
        num_attention=attention,
    )
