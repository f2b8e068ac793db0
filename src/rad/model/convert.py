"""Attention -> SSM conversion: the chosen attention sub-layers become Mamba2 mixers (MLPs, norms,
embeddings and the other layers are copied), with one of two initialisations:

- `rad` (the RAD paper's): out_proj <- o_proj, in_proj <- 0. Then z = x = B = C = dt = 0, the scan
  output is 0, the gated norm of 0 is 0 and the mixer outputs exactly 0: the hybrid computes exactly
  what the diagnosed draft (the source with those attention layers skipped) computes, at any mixer size.
- `kqvo` (Mamba-in-the-Llama's): x <- v_proj, B <- k_proj (rows repeated from each key/value head to
  the query heads sharing it, as GQA does), C <- q_proj, out_proj <- o_proj; z, dt, A, D fresh. For a
  mixer of the kv size (one SSM head per key/value head) x and B take V and K as they are, C the mean of
  the query heads that share a key/value head, out_proj o_proj's columns summed over those heads. The conv
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
from rad.model.hybrid import MixerSize, SSMMixer, ssm_config_for
from rad.model.llama import Attention, CausalLM

INITS = ("rad", "kqvo")


def query_heads_per_group(attn: Attention) -> int:
    return attn.num_heads // attn.num_kv_heads


def per_key_value_head(weight: torch.Tensor, attn: Attention, reduce) -> torch.Tensor:
    """A weight with one block of head_dim along dim 0 per query head, its blocks reduced (`reduce` over dim 1)
    to one per key/value head: the query heads that share a key/value head are consecutive."""
    return reduce(weight.unflatten(0, (attn.num_kv_heads, query_heads_per_group(attn), -1)), 1).flatten(0, 1)


def per_query_head(weight: torch.Tensor, attn: Attention) -> torch.Tensor:
    """(kv_heads * head_dim, hidden) -> (heads * head_dim, hidden): each key/value head's block repeated for the
    query heads that share it."""
    return weight.unflatten(0, (attn.num_kv_heads, -1)).repeat_interleave(query_heads_per_group(attn), 0).flatten(0, 1)


def out_proj_from_o(mixer: SSMMixer, attn: Attention) -> torch.Tensor | None:
    """o_proj as the mixer's out_proj: as it is for a mixer as wide as the query heads; for one as wide as the
    key/value heads, the columns of the query heads that share a key/value head summed, which is what O does to
    a group whose heads all attend alike (they would, with one query per group: C's reduction in init_kqvo).
    None for other widths."""
    o = attn.o_proj.weight  # (hidden, heads * head_dim)
    if mixer.d_inner == o.shape[1]:
        return o
    if mixer.d_inner == attn.num_kv_heads * attn.head_dim:
        return per_key_value_head(o.T, attn, torch.sum).T
    return None


@torch.no_grad()
def init_rad(mixer: SSMMixer, attn: Attention) -> None:
    """in_proj <- 0 makes the mixer output exactly 0 at any size; out_proj starts from o_proj where the widths
    allow, so training starts from the attention's output map."""
    mixer.in_proj.weight.zero_()
    out = out_proj_from_o(mixer, attn)
    if out is not None:
        mixer.out_proj.weight.copy_(out)


@torch.no_grad()
def init_kqvo(mixer: SSMMixer, attn: Attention) -> None:
    full = (attn.num_heads, attn.num_heads, attn.head_dim)
    kv = (attn.num_kv_heads, attn.num_kv_heads, attn.head_dim)
    shape = (mixer.n_heads, mixer.n_groups, mixer.head_dim)
    if shape not in (full, kv) or mixer.d_state != attn.head_dim:
        raise RadError("the kqvo init maps q, k, v onto a mixer of the full or the kv size (--mixer full|kv, "
                       "without --ssm-heads, --ssm-groups, --d-state or --expand); use --init rad for other sizes")
    d, gn = mixer.d_inner, mixer.n_groups * mixer.d_state
    z, x, B, C, _dt = mixer.in_proj.weight.split([d, d, gn, gn, mixer.n_heads])
    if shape == full:  # each query head reads its key/value head, as GQA does
        x.copy_(per_query_head(attn.v_proj.weight, attn))
        B.copy_(per_query_head(attn.k_proj.weight, attn))
        C.copy_(attn.q_proj.weight)
    else:  # one SSM head per key/value head: its query is the mean of the query heads that share it
        x.copy_(attn.v_proj.weight)
        B.copy_(attn.k_proj.weight)
        C.copy_(per_key_value_head(attn.q_proj.weight, attn, torch.mean))
    mixer.out_proj.weight.copy_(out_proj_from_o(mixer, attn))
    mixer.conv1d.weight.zero_()
    mixer.conv1d.weight[:, 0, -1] = 1.0
    mixer.conv1d.bias.zero_()


def dropped_parts(config: ModelConfig, layers: list[int]) -> list[str]:
    """What the mixers cannot take from the attention layers they replace."""
    parts = [("q/k/v biases", config.qkv_bias), ("o_proj bias", config.o_bias), ("q_norm/k_norm", config.qk_norm)]
    return [f"dropped the {what} of layers {layers} (the Mamba2 mixer has none)" for what, present in parts if present]


def convert(model: CausalLM, layers, init: str = "rad", seed: int = 0, chunk_size: int = 256,
            in_place: bool = False, size: MixerSize = MixerSize()) -> tuple[CausalLM, list[str]]:  # fmt: skip
    """The hybrid of `model` with the attention of `layers` replaced by initialised Mamba2 mixers,
    and notes on what was dropped. Fresh mixer parameters come from `seed` (the global RNG is untouched);
    `chunk_size` is the SSD scan's chunk for prefill and training (a model that already has SSM layers
    keeps its own; rad's torch scan runs at most TORCH_SCAN_CHUNK, the fused GPU kernel uses it as is).
    `in_place` converts `model` itself instead of a copy: no second copy of the weights in memory, for
    checkpoints as large as the memory allows. `size`: the mixers' size (a model that already has SSM layers
    keeps its own, and every mixer of a hybrid has one size)."""
    if init not in INITS:
        raise RadError(f"unknown init '{init}'; choose one of {', '.join(INITS)}")
    config = model.config
    if not layers:
        raise RadError("name at least one layer to convert")
    layers = sorted(config.check_layers(layers, "layers to convert"))
    types = ["ssm" if i in layers else t for i, t in enumerate(config.layer_types)]
    ssm = ssm_config_for(config, config.ssm.chunk_size if config.ssm else chunk_size, size)
    if config.ssm is not None and size != MixerSize() and ssm != config.ssm:
        raise RadError(f"this hybrid's mixers have one size already ({config.ssm.n_heads} SSM heads of "
                       f"{config.ssm.head_dim}); convert more layers without a mixer size")
    hybrid = model if in_place else copy.deepcopy(model)
    hybrid.config = replace(config, layer_types=types, ssm=config.ssm or ssm)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for i in layers:
            layer = hybrid.model.layers[i]
            with torch.device(model.device):
                mixer = SSMMixer(hybrid.config).to(model.dtype)
            (init_rad if init == "rad" else init_kqvo)(mixer, layer.self_attn)
            layer.replace_attention(mixer)
    return hybrid.eval(), dropped_parts(config, layers)

