"""The SSM sub-layer of a hybrid model: a Mamba2 mixer sized by the config, run over the shared cache.

It takes the place of `self_attn` in a decoder layer (norms and MLP stay) under Bamba's name `mamba`,
so a hybrid's weights are `model.layers.N.mamba.in_proj.weight`, ...
"""

from __future__ import annotations

import torch

from rad.model.cache import DecodeCache
from rad.model.config import ModelConfig, SSMConfig
from rad.model.ssm import Mamba2Mixer, MambaState


def ssm_config_for(config: ModelConfig, chunk_size: int = 256) -> SSMConfig:
    """A mixer shaped like the attention it replaces: one SSM head per query head, d_state = head_dim,
    one B/C group per head (so K and Q map onto B and C head by head, see convert.py)."""
    heads, dim = config.num_heads, config.head_dim
    return SSMConfig(n_heads=heads, head_dim=dim, n_groups=heads, d_state=dim, chunk_size=chunk_size,
                     norm_group_size=heads * dim)  # fmt: skip


class SSMMixer(Mamba2Mixer):
    def __init__(self, config: ModelConfig, layer: int):
        s = config.ssm
        super().__init__(
            config.hidden_size, s.n_heads, s.head_dim, s.n_groups, s.d_state, s.conv_kernel, s.chunk_size,
            rms_eps=config.rms_norm_eps, norm_group_size=s.norm_group_size or s.d_inner,
        )  # fmt: skip
        self.layer = layer

    def run(self, x: torch.Tensor, positions: torch.Tensor, cache: DecodeCache | None, valid: torch.Tensor | None):
        """Mix (B, T, hidden) tokens at `positions`; with a cache, continue from each row's state at
        `cache.lengths` (the new tokens must start there) and record the new states for rollback."""
        if cache is None:
            return self(x, valid=valid)[0]
        per_position = x.shape[1] <= cache.ssm_history  # a Python int: no host sync
        out, states = self(x, cache.ssm_state(self.layer), valid, per_position=per_position)
        if not per_position:
            states = MambaState(states.conv[:, None], states.ssm[:, None])
        cache.ssm_record(self.layer, states, positions, valid)
        return out
