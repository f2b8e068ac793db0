"""The Llama-family decoder (Llama, Mistral, Qwen2, Qwen3) with explicit positions, a
preallocated cache and attention skipping.

Parameter names follow the Hugging Face layout (`model.layers.N.self_attn.q_proj.weight`, ...)
so that a checkpoint's state dict loads as it is and saves back in the same layout.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from rad.model.cache import DEFAULT_SSM_HISTORY, DecodeCache, LayerCache
from rad.model.compiled import CompiledDecoding, allow_recompiles, attention_unless
from rad.model.config import ModelConfig
from rad.model.hybrid import SSMMixer
from rad.model.rope import apply_rotary, inverse_frequencies, rotary_tables
from rad.model.visibility import Visibility, key_visibility


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 and cast back before the scale, as the reference implementation does.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        size, inner, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(size, inner, bias=bias)
        self.up_proj = nn.Linear(size, inner, bias=bias)
        self.down_proj = nn.Linear(inner, size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        self.window = config.sliding_windows[layer]
        hidden, q_size, kv_size = config.hidden_size, config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
        self.q_proj = nn.Linear(hidden, q_size, bias=config.qkv_bias)
        self.k_proj = nn.Linear(hidden, kv_size, bias=config.qkv_bias)
        self.v_proj = nn.Linear(hidden, kv_size, bias=config.qkv_bias)
        self.o_proj = nn.Linear(q_size, hidden, bias=config.o_bias)
        if config.qk_norm:
            self.q_norm = RMSNorm(config.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(config.head_dim, config.rms_norm_eps)
        else:
            self.q_norm = self.k_norm = None

    def project(self, x: torch.Tensor, rotary) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (B, heads, T, D), keys and values (B, kv_heads, T, D) of `x`, queries and keys rotated."""
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(batch, length, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = rotary
        return apply_rotary(q.transpose(1, 2), cos, sin), apply_rotary(k.transpose(1, 2), cos, sin), v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The sub-layer's output (B, T, hidden): queries over keys and values (None mask: causal)."""
        batch, _, length, _ = q.shape
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                             enable_gqa=self.num_heads != self.num_kv_heads)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))

    def forward(self, x, rotary, seen: Visibility, cache: LayerCache | None) -> torch.Tensor:
        q, k, v = self.project(x, rotary)
        if cache is not None:
            cached = cache.write(k, v)
            if not seen.own_keys:
                k, v = cached
        return self.attend(q, k, v, seen.masks[self.window])


class MixerIO(NamedTuple):
    """A decoder layer's token mixer (attention or SSM), as it ran: its input (after the input norm) and output."""

    input: torch.Tensor
    output: torch.Tensor


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.is_ssm = config.layer_types[layer] == "ssm"
        if self.is_ssm:
            self.mamba = SSMMixer(config)
        else:
            self.self_attn = Attention(config, layer)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def replace_attention(self, mixer: SSMMixer) -> None:
        """Conversion: `mixer` takes the attention sub-layer's place (norms and MLP stay)."""
        del self.self_attn
        self.mamba, self.is_ssm = mixer, True

    def forward(self, x, rotary, seen: Visibility, cache: LayerCache | None, skip_attention: bool, valid,
                capture: bool = False):
        """The layer's output; with `capture`, also its token mixer's (attention's or SSM's) input and output,
        which distillation's alignment losses compare (returned, not hooked: compiled layers return them too)."""
        mixer_in = mixed = None
        if self.is_ssm:
            mixer_in = self.input_layernorm(x)
            mixed = self.mamba.run(mixer_in, cache, valid)
        elif isinstance(skip_attention, torch.Tensor):  # a compiled draft's flag (rad.model.compiled)
            mixed = attention_unless(self, skip_attention, x, rotary, seen, cache)
        elif not skip_attention:  # a skipped attention sub-layer leaves the residual stream as it is
            mixer_in = self.input_layernorm(x)
            mixed = self.self_attn(mixer_in, rotary, seen, cache)
        if mixed is not None:
            x = x + mixed
        out = x + self.mlp(self.post_attention_layernorm(x))
        return (out, MixerIO(mixer_in, mixed)) if capture else out


class Decoder(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class CausalLM(nn.Module):
    """A decoder-only language model over a preallocated cache with explicit positions."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = Decoder(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.register_buffer("inv_freq", inverse_frequencies(config), persistent=False)
        # Training with less memory: each layer's activations are recomputed in the backward pass, not kept.
        self.checkpoint_layers = False
        self.compiled_decode: CompiledDecoding | None = None  # see compile_decoding

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def new_cache(self, batch: int, max_len: int, ssm_history: int = DEFAULT_SSM_HISTORY) -> DecodeCache:
        """A cache for `batch` rows of `max_len` tokens; SSM layers can roll back `ssm_history` positions."""
        return DecodeCache(self.config, batch, max_len, self.device, self.dtype, ssm_history)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        cache: DecodeCache | None = None,
        skip: Collection[int] = (),
        logit_index: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
        capture: Collection[int] = (),
        apply_head: bool = True,
        head_loss: Callable[[torch.Tensor, torch.Tensor], Any] | None = None,
    ):
        """Logits for tokens `input_ids` (B, T) at `positions` (B, T); with `capture`, (logits, {layer: MixerIO})
        for those layers, whose token mixers must run (not skipped).

        With a cache, keys and values are written at slots `positions` and attention reads the
        cache; the caller keeps `cache.lengths` (see `cache.advance`). `skip` names the layers whose
        attention sub-layer is skipped (nothing is written to the cache for them). With
        `logit_index` (B,) only the logits at that index of each row are computed: (B, vocab).
        `valid` (B, T) bool marks real tokens when rows are right-padded: SSM layers must not run
        over padding (attention needs no mask, its padded slots lie beyond each row's length).
        Without `apply_head`, the final hidden states (after the last norm) instead of logits, for a caller that
        needs the logits of a few positions of long rows (a (T, vocab) slice per row can take gigabytes).
        With `head_loss`, what head_loss(final hidden states, the head's weight) returns: a loss computed from the
        head without the logits of every position at once, inside the forward (where a sharded model has the
        head's weight at hand).
        """
        seen = key_visibility(positions, cache, set(self.config.sliding_windows))
        # Decoding's forwards (into a cache a prefill has written) run compiled if the model is compiled for it.
        decoding = cache is not None and not cache.fresh and not capture and head_loss is None
        compiled = self.compiled_decode if decoding else None
        parts = None
        if cache is not None:
            slots = cache.begin(positions, valid)
            parts = [cache.layer(i, slots) for i in range(len(self.model.layers))]
        if compiled is not None:
            return compiled.run(self, input_ids, positions, seen, parts, skip, logit_index, valid, apply_head)
        skipped = [i in skip for i in range(len(self.model.layers))]
        return self.run_layers(self.model.layers, input_ids, positions, seen, parts, skipped, logit_index, valid,
                               capture, apply_head, head_loss)

    def run_layers(self, layers, input_ids, positions, seen: Visibility, parts: list[LayerCache] | None,
                   skipped: Sequence[bool | torch.Tensor], logit_index, valid, capture=(), apply_head=True,
                   head_loss=None):  # fmt: skip
        """The forward's computation, with `layers` as the decoder layers (the model's, or compiled ones), each
        layer's part of the cache (`parts`) already picked, and whether each layer's attention is skipped (`skipped`:
        a bool, or a compiled draft's 0-d bool tensor, see rad.model.compiled.attention_unless)."""
        x = self.model.embed_tokens(input_ids)
        rotary = rotary_tables(self.inv_freq, positions, x.dtype)
        captured = {}
        recompute = self.checkpoint_layers and torch.is_grad_enabled()
        for i, layer in enumerate(layers):
            run = functools.partial(checkpoint, layer, use_reentrant=False) if recompute else layer
            part = None if parts is None else parts[i]
            if i in capture:
                x, captured[i] = run(x, rotary, seen, part, skipped[i], valid, capture=True)
            else:
                x = run(x, rotary, seen, part, skipped[i], valid)
        if logit_index is not None:
            x = x[torch.arange(x.shape[0], device=x.device), logit_index]
        out = self.model.norm(x)
        if head_loss is not None:
            out = head_loss(out, self.lm_head.weight)
        elif apply_head:
            out = self.lm_head(out)
        return (out, captured) if capture else out

    def compile_layers(self, backend: str = "inductor") -> None:
        """torch.compile each decoder layer in place (static shapes; `backend` is torch.compile's). Layers
        of one kind share a compiled graph (torch inlines module parameters as graph inputs), so a hybrid
        compiles two graphs, not one per layer: on a CPU this compiled in 77 s where the whole model took
        119 s, for the same step time. A change of which parameters train compiles them again."""
        allow_recompiles()  # every decoder layer shares one forward code object, and so its graph limit
        for layer in self.model.layers:
            layer.compile(backend=backend, dynamic=False)

    def compile_decoding(self, backend: str = "inductor") -> CompiledDecoding:
        """Run decoding's forwards (decode steps, drafts, verifications: not a prefill) compiled (rad.model.compiled);
        `backend` is torch.compile's. Returns the compiled forwards: their `compile_seconds` says what compiling has
        cost so far. The decode loops then allocate bucketed caches (rad.model.compiled.cache_slots)."""
        if self.compiled_decode is None or self.compiled_decode.backend != backend:
            self.compiled_decode = CompiledDecoding(self, backend)
        return self.compiled_decode

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights are one Parameter, counted once

    def parameters_per_mixer(self) -> dict[str, int]:
        """The weights of one token mixer of each kind the model has: {"attention": n, "ssm": n} (all mixers of a
        kind have one size), what a converted layer gives up and takes on."""
        found = {}
        for layer in self.model.layers:
            kind, mixer = ("ssm", layer.mamba) if layer.is_ssm else ("attention", layer.self_attn)
            found.setdefault(kind, sum(p.numel() for p in mixer.parameters()))
        return found

