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
from rad.model.config import ModelConfig, SSMConfig, count_field
from rad.model.families import common_fields

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


# transformers' BambaConfig defaults, for fields a config.json may leave out.
_DEFAULTS = {"vocab_size": 128000, "rms_norm_eps": 1e-5, "max_position_embeddings": 262144, "bos_token_id": 1,
             "eos_token_id": 2, "pad_token_id": 0, "architectures": ["BambaForCausalLM"], "mamba_n_heads": 128,
             "mamba_d_head": "auto", "mamba_expand": 2, "mamba_n_groups": 1, "mamba_d_state": 256, "mamba_d_conv": 4,
             "mamba_chunk_size": 256}  # fmt: skip


def config_from_bamba(raw: dict) -> ModelConfig:
    """A ModelConfig from a Bamba config.json."""
    raw = {**_DEFAULTS, **raw}
    rope = raw.get("rope_parameters") if isinstance(raw.get("rope_parameters"), dict) else {}
    partial = rope.get("partial_rotary_factor", raw.get("partial_rotary_factor", 0.5))
    if partial != 1.0:
        raise RadError(
            f"this Bamba checkpoint rotates only part of each attention head (partial_rotary_factor {partial}); "
            "rad runs Bamba folders with full rotary, as `rad convert` writes them"
        )
    if raw.get("mamba_proj_bias", False) or not raw.get("mamba_conv_bias", True):
        raise RadError("rad's Mamba2 mixer has no projection biases and a conv bias; this Bamba config differs")
    # transformers writes infinity as {"__float__": "Infinity"}
    limit = [float(v["__float__"]) if isinstance(v, dict) else float(v) for v in raw.get("time_step_limit") or (0, "inf")]
    if limit != [0.0, float("inf")]:
        raise RadError("rad's Mamba2 mixer does not clamp dt (time_step_limit); this Bamba config does")
    try:
        fields = common_fields(raw)
        heads = count_field(raw, "mamba_n_heads")
        if raw["mamba_d_head"] == "auto":
            dim = count_field(raw, "mamba_expand") * count_field(raw, "hidden_size") // heads
        else:
            dim = count_field(raw, "mamba_d_head")
        attention = set(raw.get("attn_layer_indices") or [])
        ssm = SSMConfig(n_heads=heads, head_dim=dim, n_groups=raw["mamba_n_groups"], d_state=raw["mamba_d_state"],
                        conv_kernel=raw["mamba_d_conv"], chunk_size=raw["mamba_chunk_size"],
                        norm_group_size=raw.get("rad_norm_group_size", heads * dim))  # transformers: d_inner
        return ModelConfig(
            model_type="bamba",
            **fields,
            qkv_bias=raw.get("attention_bias", False),
            o_bias=raw.get("attention_bias", False),
            layer_types=["attention" if i in attention else "ssm" for i in range(fields["num_layers"])],
            ssm=ssm,
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
        return (f"its mixers' d_inner ({s.d_inner}) is not a whole multiple of hidden_size (Bamba's mamba_expand); "
                "--mixer full gives mixers as wide as the query heads, which Bamba can hold")
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
