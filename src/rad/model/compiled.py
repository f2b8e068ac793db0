"""Compiled decoding: the model's forward under torch.compile for the short forwards of decoding.

A decode step (one token per row), a draft step and a verification (K + 1 tokens per row) run compiled; a prompt's
prefill stays eager (it is long, so per-op overhead is a small part of it, and its length changes with every prompt).
Each is one graph, embedding to logits: the fewest calls and guards per step. Two graphs per shape:
- a forward that skips nothing (a plain decode step, a verification);
- a draft forward, whichever layers it skips: each attention layer gets a 0-d bool tensor saying whether it is
  skipped, and torch.cond picks the branch at run time (`attention_unless`), so a new skip set compiles nothing (the
  diagnosis tries many). On CUDA a draft runs its layers one compiled call each instead (the layers of one kind share
  a graph: layers get their part of the cache as tensors, rad.model.cache.LayerCache), with the embedding, norm and
  head around them eager: inductor (torch 2.13) does not put a torch.cond into a CUDA graph, and reading each
  predicate on the host would stall every layer (pytorch/pytorch#168911).
Shapes are static (a graph per tokens per row x batch x cache slots), and the decode loops keep them few: the cache's
slots are rounded up to a bucket (`cache_slots`), so prompts of similar lengths share the graphs, and a verification
always has K + 1 tokens per row.
"""

from __future__ import annotations

import time
from collections.abc import Collection

import torch
from torch import nn

# torch keeps at most recompile_limit graphs per code object (default 8), after which it silently runs it eagerly.
# Decoding needs, for the whole forward (plain, and a draft's), and on CUDA for the decoder layer (x 3 kinds): widths
# (1, K + 1) x batch sizes x cache buckets; distillation (CausalLM.compile_layers) one per layer kind x capture or not x
# dtype x trainable set.
RECOMPILE_LIMIT = 64
# Cache slots are rounded up to a multiple of 1/8 of their power of two (at least 64): at most ~12% more slots to read.
BUCKETS_PER_OCTAVE, SMALLEST_BUCKET = 8, 64


def allow_recompiles() -> None:
    """Raise torch's graphs-per-code-object limit to RECOMPILE_LIMIT (never lower it)."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)


def cache_slots(needed: int) -> int:
    """The cache size a compiled decode allocates for `needed` slots per row: one bucket of similar sizes."""
    step = max(SMALLEST_BUCKET, 2 ** (needed.bit_length() - 1) // BUCKETS_PER_OCTAVE)
    return -(-needed // step) * step


def default_backend_options(device: torch.device) -> dict:
    """torch.compile's settings for the device: on CUDA also CUDA graphs (a step's kernel launches replayed at once);
    on a CPU the code that calls a graph's kernels in C++, not Python (a decode step of the shipped model 2.9-3.1 ms
    instead of 3.5-3.6, a draft's 3.7-3.9 instead of 4.2-4.3, on one core of an AMD EPYC)."""
    return {"mode": "reduce-overhead"} if device.type == "cuda" else {"options": {"cpp_wrapper": True}}


class CompiledDecoding:
    """A model's forward compiled for decoding, and the time the compiling took."""

    def __init__(self, model: nn.Module, backend="inductor", layerwise_drafts: bool | None = None):
        """`layerwise_drafts`: a draft runs its layers one compiled call each, not as one graph (default: on CUDA,
        see the module's docstring)."""
        allow_recompiles()
        options = default_backend_options(model.device) if backend == "inductor" else {}
        self.whole = torch.compile(model.run_layers, backend=backend, dynamic=False, **options)
        self.layers = None
        if model.device.type == "cuda" if layerwise_drafts is None else layerwise_drafts:
            self.layers = [torch.compile(layer, backend=backend, dynamic=False, **options)
                           for layer in model.model.layers]
        self.backend = backend
        self.compile_seconds = 0.0  # the first forward of each new shape: compiling, mostly
        self._shapes: set = set()
        self._flags: dict[frozenset, tuple[torch.Tensor, ...]] = {}
        self._none_skipped = (False,) * len(model.model.layers)  # a plain forward's: constants in its graph

    def run(self, model: nn.Module, input_ids, positions, seen, parts, skip, logit_index, valid, apply_head):
        """The model's forward (CausalLM.run_layers) through the compiled graphs."""
        first = self.first_time(input_ids, parts[0].first.shape, skip)
        start = time.perf_counter()
        layers = model.model.layers
        if not skip:
            out = self.whole(layers, input_ids, positions, seen, parts, self._none_skipped, logit_index, valid,
                             apply_head=apply_head)
        elif self.layers is not None:
            skipped = [i in skip for i in range(len(layers))]
            out = model.run_layers(self.layers, input_ids, positions, seen, parts, skipped, logit_index, valid,
                                   apply_head=apply_head)
        else:
            flags = self.skip_flags(skip, len(layers), model.device)
            out = self.whole(layers, input_ids, positions, seen, parts, flags, logit_index, valid, apply_head=apply_head)
        if first:
            self.compile_seconds += time.perf_counter() - start
        return out

    def skip_flags(self, skip: Collection[int], num_layers: int, device) -> tuple[torch.Tensor, ...]:
        """A draft graph's input: whether each layer's attention is skipped, one 0-d bool tensor per layer (made once
        per skip set). One tensor each, not one tensor indexed in the graph: inductor's C++ wrapper (torch 2.13) read
        every torch.cond's predicate from that tensor's first element."""
        key = frozenset(skip)
        if key not in self._flags:
            self._flags[key] = tuple(torch.tensor(i in key, device=device) for i in range(num_layers))
        return self._flags[key]

    def first_time(self, tokens: torch.Tensor, cache_shape, skip: Collection[int]) -> bool:
        """Whether a forward of this shape, skipping or not, is the first (it may compile); recorded as met. (Another
        skip set runs the same graphs.)"""
        key = (tuple(tokens.shape), tuple(cache_shape), bool(skip))
        if key in self._shapes:
            return False
        self._shapes.add(key)
        return True


def attention_unless(layer: nn.Module, skip: torch.Tensor, x, rotary, seen, cache) -> torch.Tensor:
    """A decoder layer's attention sub-layer output into its part of the cache (rad.model.cache.LayerCache), or zeros
    where `skip` (a 0-d bool tensor) is set, with torch.cond choosing: one graph for either value, so that a compiled
    draft is one graph whichever layers it skips. A branch may not write to its inputs, so the cache is written
    between two conds; a skipped layer writes back the keys and values its slots held (its cache is as a skipped
    sub-layer leaves it)."""
    attention = layer.self_attn

    def project(x, keys, values):
        return laid_out_alike(*attention.project(layer.input_layernorm(x), rotary))

    def held(x, keys, values):
        batch, length, _ = x.shape
        return laid_out_alike(x.new_zeros(batch, attention.num_heads, length, attention.head_dim), *cache.read())

    def attend(q, keys, values):
        return attention.attend(q, keys, values, seen.masks[attention.window])

    def nothing(q, keys, values):
        return torch.zeros_like(x)

    q, k, v = torch.cond(skip, held, project, (x, cache.first, cache.second))
    keys, values = cache.write(k, v)
    return torch.cond(skip, nothing, attend, (q, keys, values))


def laid_out_alike(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Copies with the standard strides: torch.cond's branches must return tensors of the same strides, and a size-1
    dimension (one token per row) leaves `contiguous()` free to keep any stride. (A token or a few per row: cheap.)"""
    return tuple(t.clone(memory_format=torch.contiguous_format) for t in tensors)
