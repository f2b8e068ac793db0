"""The SSM sub-layer of a hybrid model: a Mamba2 mixer sized by the config, run over the shared cache.

It takes the place of `self_attn` in a decoder layer (norms and MLP stay) under Bamba's name `mamba`,
so a hybrid's weights are `model.layers.N.mamba.in_proj.weight`, ...
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rad.errors import RadError
from rad.model.cache import LayerCache
from rad.model.config import ModelConfig, SSMConfig
from rad.model.ssm import Mamba2Mixer, MambaState


MIXER_SIZES = ("full", "kv")


@dataclass(frozen=True)
class MixerSize:
    """How large a replaced layer's Mamba2 mixer is. `base`: full (one SSM head and one B/C group per query head,
    d_inner = the query width) or kv (one per key/value head, d_inner = the key/value width, as Mamba-in-the-Llama
    sizes it: x from V and B from K without repetition). The other fields, when given, override the base:
    `expand` sets d_inner = expand x hidden_size, and head_dim = d_inner / heads."""

    base: str = "kv"
    heads: int | None = None
    groups: int | None = None
    d_state: int | None = None
    expand: float | None = None


def ssm_config_for(config: ModelConfig, chunk_size: int = 256, size: MixerSize = MixerSize()) -> SSMConfig:
    """The mixers' shape for a model's attention layers; d_state defaults to the attention's head_dim."""
    if size.base not in MIXER_SIZES:
        raise RadError(f"unknown mixer size '{size.base}'; choose one of {', '.join(MIXER_SIZES)}")
    base_heads = config.num_heads if size.base == "full" else config.num_kv_heads
    heads = size.heads or base_heads
    d_inner = base_heads * config.head_dim
    if size.expand is not None:
        d_inner = round(size.expand * config.hidden_size)
        if d_inner < 1 or abs(d_inner - size.expand * config.hidden_size) > 1e-6:
            raise RadError(f"--expand {size.expand} x hidden_size {config.hidden_size} is not a whole number of channels")
    groups = size.groups or heads  # both bases give each SSM head its own B/C group
    if d_inner % heads:
        raise RadError(f"the mixer's {d_inner} channels do not split into {heads} SSM heads")
    if heads % groups:
        raise RadError(f"{groups} B/C groups do not divide {heads} SSM heads")
    return SSMConfig(n_heads=heads, head_dim=d_inner // heads, n_groups=groups, d_state=size.d_state or config.head_dim,
                     chunk_size=chunk_size, norm_group_size=d_inner)  # fmt: skip


class SSMMixer(Mamba2Mixer):
    def __init__(self, config: ModelConfig):
        s = config.ssm
        super().__init__(
            config.hidden_size, s.n_heads, s.head_dim, s.n_groups, s.d_state, s.conv_kernel, s.chunk_size,
            rms_eps=config.rms_norm_eps, norm_group_size=s.norm_group_size or s.d_inner,
        )  # fmt: skip

    def run(self, x: torch.Tensor, cache: LayerCache | None, valid: torch.Tensor | None):
        """Mix (B, T, hidden) tokens; with its part of a cache, continue from each row's state at the cache's
        lengths (the new tokens must start there) and record the new states for rollback."""
        if cache is None:
            return self(x, valid=valid)[0]
        per_position = cache.slots.ssm.per_position
        out, states = self(x, cache.ssm_state(), valid, per_position=per_position)
        if not per_position:
            states = MambaState(states.conv[:, None], states.ssm[:, None])
        cache.ssm_record(states)
        return out
