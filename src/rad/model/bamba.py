"""transformers' Bamba layout for hybrid folders: config.json fields and weight names, both ways.

A hybrid of a Llama, Mistral (without sliding window) or Qwen2 source is saved as a valid Bamba
checkpoint, so `AutoModelForCausalLM.from_pretrained(folder)` runs it with no rad code. Where Bamba
differs from what rad computes, the config pins rad's choice:
  - `rope_parameters.partial_rotary_factor = 1.0`: Bamba defaults to rotating half of each head;
    a converted Llama rotates all of it.
  - the mixers' gated RMSNorm: transformers normalises over all of d_inner (whatever n_groups is),
    mamba_ssm per group. rad's hybrids use d_inner, recorded as `rad_norm_group_size` (transformers
    ignores the key). Servers built on mamba_ssm kernels normalise per group and would differ once the
    mixers are trained (at `rad` init the mixer outputs 0 either way).
Names: Bamba's `feed_forward`, `pre_ff_layernorm` and `model.final_layernorm` are rad's `mlp`,
`post_attention_layernorm` and `model.norm`; `self_attn` and `mamba` are shared.
"""

from __future__ import annotations

from rad.errors import RadError
from rad.model.config import ModelConfig, SSMConfig, rope_settings

_RENAMES = [(".feed_forward.", ".mlp."), (".pre_ff_layernorm.", ".post_attention_layernorm."),
            ("model.final_layernorm.", "model.norm.")]  # fmt: skip


def from_bamba_name(name: str) -> str:
    for bamba, rad in _RENAMES:
        name = name.replace(bamba, rad)
    return name


def to_bamba_name(name: str) -> str:
    for bamba, rad in _RENAMES:
        name = name.replace(rad, bamba)
    return name


def config_from_bamba(raw: dict) -> ModelConfig:
    """A ModelConfig from a Bamba config.json (defaults as transformers' BambaConfig)."""
    rope = raw.get("rope_parameters") or {}
    partial = rope.get("partial_rotary_factor", raw.get("partial_rotary_factor", 0.5))
    if partial != 1.0:
        raise RadError(
            f"this Bamba checkpoint rotates only part of each attention head (partial_rotary_factor {partial}); "
            "rad runs Bamba folders with full rotary, as `rad convert` writes them"
        )
    if raw.get("mamba_proj_bias", False) or not raw.get("mamba_conv_bias", True):
        raise RadError("rad's Mamba2 mixer has no projection biases and a conv bias; this Bamba config differs")
    if tuple(raw.get("time_step_limit") or (0.0, float("inf"))) != (0.0, float("inf")):
        raise RadError("rad's Mamba2 mixer does not clamp dt (time_step_limit); this Bamba config does")
    try:
        hidden, heads, layers = raw["hidden_size"], raw["num_attention_heads"], raw["num_hidden_layers"]
        ssm_heads, expand = raw.get("mamba_n_heads", 128), raw.get("mamba_expand", 2)
        ssm_dim = raw.get("mamba_d_head", "auto")
        ssm_dim = expand * hidden // ssm_heads if ssm_dim == "auto" else ssm_dim
        attention = set(raw.get("attn_layer_indices") or [])
        theta, scaling = rope_settings(raw)
        eos = raw.get("eos_token_id", 2)
        return ModelConfig(
            model_type="bamba",
            vocab_size=raw.get("vocab_size", 128000),
            hidden_size=hidden,
            intermediate_size=raw["intermediate_size"],
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=raw.get("num_key_value_heads") or heads,
            head_dim=raw.get("head_dim") or hidden // heads,
            rms_norm_eps=raw.get("rms_norm_eps", 1e-5),
            rope_theta=theta,
            rope_scaling=scaling,
            max_position_embeddings=raw.get("max_position_embeddings", 262144),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            qkv_bias=bool(raw.get("attention_bias", False)),
            o_bias=bool(raw.get("attention_bias", False)),
            mlp_bias=bool(raw.get("mlp_bias", False)),
            layer_types=["attention" if i in attention else "ssm" for i in range(layers)],
            ssm=SSMConfig(
                n_heads=ssm_heads, head_dim=ssm_dim, n_groups=raw.get("mamba_n_groups", 1),
                d_state=raw.get("mamba_d_state", 256), conv_kernel=raw.get("mamba_d_conv", 4),
                chunk_size=raw.get("mamba_chunk_size", 256),
                norm_group_size=raw.get("rad_norm_group_size", ssm_heads * ssm_dim),  # transformers: d_inner
            ),  # fmt: skip
            bos_token_id=raw.get("bos_token_id", 1),
            eos_token_ids=[] if eos is None else list(eos) if isinstance(eos, list) else [eos],
            pad_token_id=raw.get("pad_token_id", 0),
            dtype=str(raw.get("dtype") or raw.get("torch_dtype") or "float32"),
            architecture=(raw.get("architectures") or ["BambaForCausalLM"])[0],
        )
    except KeyError as missing:
        raise RadError(f"config.json lacks the field {missing}") from None


def bamba_incompatibility(config: ModelConfig) -> str | None:
    """Why a hybrid cannot be written as a Bamba checkpoint, or None if it can."""
    s = config.ssm
    if config.qk_norm:
        return "its attention normalises q and k (Qwen3's q_norm/k_norm), which Bamba's attention lacks"
    if any(w is not None for w in config.sliding_windows):
        return "its attention uses a sliding window, which Bamba's attention lacks"
    if s.d_inner % config.hidden_size:
        return f"its mixers' d_inner ({s.d_inner}) is not a whole multiple of hidden_size (Bamba's mamba_expand)"
    if (s.norm_group_size or s.d_inner) != s.d_inner:
        return "its mixers normalise per group, while transformers' Bamba normalises over all of d_inner"
    return None


def bamba_config(config: ModelConfig, dtype: str) -> dict:
    """The Bamba config.json of a hybrid that `bamba_incompatibility` accepts."""
    s = config.ssm
    rope = {"rope_type": "default", "rope_theta": config.rope_theta, **(config.rope_scaling or {})}
    eos = config.eos_token_ids
    return {
        "architectures": ["BambaForCausalLM"],
        "model_type": "bamba",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": config.rms_norm_eps,
        "max_position_embeddings": config.max_position_embeddings,
        "tie_word_embeddings": config.tie_word_embeddings,
        # One flag for q, k, v and o in Bamba: a source with only some of them gets zero biases for the rest.
        "attention_bias": config.qkv_bias or config.o_bias,
        "mlp_bias": config.mlp_bias,
        "rope_parameters": {**rope, "partial_rotary_factor": 1.0},
        "attn_layer_indices": config.attention_layers,
        "mamba_n_heads": s.n_heads,
        "mamba_d_head": s.head_dim,
        "mamba_n_groups": s.n_groups,
        "mamba_d_state": s.d_state,
        "mamba_d_conv": s.conv_kernel,
        "mamba_expand": s.d_inner // config.hidden_size,
        "mamba_chunk_size": s.chunk_size,
        "mamba_conv_bias": True,
        "mamba_proj_bias": False,
        "rad_norm_group_size": s.d_inner,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": eos[0] if len(eos) == 1 else (eos or None),
        "pad_token_id": config.pad_token_id,
        "dtype": dtype,
    }
