"""Attention -> SSM conversion: the chosen attention sub-layers become Mamba2 mixers (MLPs, norms,
embeddings and the other layers are copied), with one of two initialisations:

- `rad` (the RAD paper's): out_proj <- o_proj, in_proj <- 0. Then z = x = B = C = dt = 0, the scan
  output is 0, the gated norm of 0 is 0 and the mixer outputs exactly 0: the hybrid computes exactly
  what the diagnosed draft (the source with those attention layers skipped) computes.
- `kqvo` (Mamba-in-the-Llama's): x <- v_proj, B <- k_proj (rows repeated from each key/value head to
  the query heads sharing it, as GQA does), C <- q_proj, out_proj <- o_proj; z, dt, A, D fresh. The conv
  starts as the identity on x, B, C (last tap 1, others and bias 0): a random conv would mix each token's
  q/k/v with its neighbours', so the mixer would start further from the attention it replaces; with the
  identity it starts as gated, decaying linear attention over silu(q), silu(k), silu(v).
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch

from rad.errors import RadError
from rad.model.config import ModelConfig
from rad.model.hybrid import SSMMixer, ssm_config_for
from rad.model.llama import Attention, CausalLM

INITS = ("rad", "kqvo")


@torch.no_grad()
def init_rad(mixer: SSMMixer, attn: Attention) -> None:
    mixer.in_proj.weight.zero_()
    mixer.out_proj.weight.copy_(attn.o_proj.weight)


@torch.no_grad()
def init_kqvo(mixer: SSMMixer, attn: Attention) -> None:
    rep = attn.num_heads // attn.num_kv_heads

    def per_query_head(weight):  # (kv_heads * head_dim, hidden) -> (heads * head_dim, hidden)
        return weight.unflatten(0, (attn.num_kv_heads, -1)).repeat_interleave(rep, dim=0).flatten(0, 1)

    d, gn = mixer.d_inner, mixer.n_groups * mixer.d_state
    z, x, B, C, _dt = mixer.in_proj.weight.split([d, d, gn, gn, mixer.n_heads])
    x.copy_(per_query_head(attn.v_proj.weight))
    B.copy_(per_query_head(attn.k_proj.weight))
    C.copy_(attn.q_proj.weight)
    mixer.out_proj.weight.copy_(attn.o_proj.weight)
    mixer.conv1d.weight.zero_()
    mixer.conv1d.weight[:, 0, -1] = 1.0
    mixer.conv1d.bias.zero_()


def dropped_parts(config: ModelConfig, layers: list[int]) -> list[str]:
    """What the mixers cannot take from the attention layers they replace."""
    parts = [("q/k/v biases", config.qkv_bias), ("o_proj bias", config.o_bias), ("q_norm/k_norm", config.qk_norm)]
    return [f"dropped the {what} of layers {layers} (the Mamba2 mixer has none)" for what, present in parts if present]


def convert(model: CausalLM, layers, init: str = "rad", seed: int = 0, chunk_size: int = 256,
            in_place: bool = False) -> tuple[CausalLM, list[str]]:  # fmt: skip
    """The hybrid of `model` with the attention of `layers` replaced by initialised Mamba2 mixers,
    and notes on what was dropped. Fresh mixer parameters come from `seed` (the global RNG is untouched);
    `chunk_size` is the SSD scan's chunk for prefill and training (a model that already has SSM layers
    keeps its own; rad's torch scan runs at most TORCH_SCAN_CHUNK, the fused GPU kernel uses it as is).
    `in_place` converts `model` itself instead of a copy: no second copy of the weights in memory, for
    checkpoints as large as the memory allows."""
    if init not in INITS:
        raise RadError(f"unknown init '{init}'; choose one of {', '.join(INITS)}")
    config = model.config
    if not layers:
        raise RadError("name at least one layer to convert")
    layers = sorted(config.check_layers(layers, "layers to convert"))
    types = ["ssm" if i in layers else t for i, t in enumerate(config.layer_types)]
    hybrid = model if in_place else copy.deepcopy(model)
    hybrid.config = replace(config, layer_types=types, ssm=config.ssm or ssm_config_for(config, chunk_size))
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for i in layers:
            layer = hybrid.model.layers[i]
            with torch.device(model.device):
                mixer = SSMMixer(hybrid.config, i).to(model.dtype)
            (init_rad if init == "rad" else init_kqvo)(mixer, layer.self_attn)
            layer.replace_attention(mixer)
    return hybrid.eval(), dropped_parts(config, layers)

