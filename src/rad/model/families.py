"""config.json of the Llama family (Llama, Mistral, Qwen2, Qwen3) -> ModelConfig, in both the transformers
4.x layout (`rope_theta`, `rope_scaling` at top level) and the 5.x layout (`rope_parameters`).

`common_fields` reads what every supported config.json spells alike, Bamba's included (rad.model.bamba).
"""

from __future__ import annotations

from rad.errors import RadError
from rad.model.config import ModelConfig, is_count

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _mapping(raw: dict, key: str) -> dict:
    value = raw.get(key)
    if value is not None and not isinstance(value, dict):
        raise RadError(f"config.json: {key} must be an object, got {value!r}")
    return value or {}


def _rope_settings(raw: dict) -> tuple[float, dict | None]:
    """Return (theta, scaling dict or None) from either config layout."""
    params = _mapping(raw, "rope_parameters")
    theta = params.get("rope_theta", raw.get("rope_theta", 10000.0))
    scaling = _mapping(raw, "rope_scaling") or params
    rope_type = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise RadError(f"rope type '{rope_type}' is not supported; supported: {', '.join(SUPPORTED_ROPE_TYPES)}")
    if rope_type == "default":
        return theta, None  # its type and range are checked with the other fields (rad.model.config)
    return theta, {**scaling, "rope_type": rope_type}


def _sliding_windows(raw: dict, model_type: str, num_layers: int) -> list[int | None]:
    window = raw.get("sliding_window")
    if model_type == "mistral":
        return [window] * num_layers
    if model_type in ("qwen2", "qwen3") and raw.get("use_sliding_window") and window:
        hf_types = raw.get("layer_types") or [
            "sliding_attention" if i >= raw.get("max_window_layers", 0) else "full_attention" for i in range(num_layers)
        ]
        return [window if t == "sliding_attention" else None for t in hf_types]
    return [None] * num_layers


def config_from_family(raw: dict) -> ModelConfig:
    """A ModelConfig from the parsed config.json of a Llama, Mistral, Qwen2 or Qwen3 checkpoint."""
    model_type = raw["model_type"]
    try:
        fields = common_fields(raw)
        attention_bias = raw.get("attention_bias", False)
        if not isinstance(attention_bias, bool):
            raise RadError(f"config.json: attention_bias must be true or false, got {attention_bias!r}")
        return ModelConfig(
            model_type=model_type,
            **fields,
            # Qwen2 hard-codes q/k/v biases; Mistral has none; Llama and Qwen3 follow attention_bias.
            qkv_bias=model_type == "qwen2" or (attention_bias and model_type in ("llama", "qwen3")),
            o_bias=attention_bias and model_type in ("llama", "qwen3"),
            qk_norm=model_type == "qwen3",
            sliding_windows=_sliding_windows(raw, model_type, fields["num_layers"]) if is_count(fields["num_layers"]) else [],
        )
    except KeyError as missing:
        raise RadError(f"config.json lacks the field {missing}") from None


def common_fields(raw: dict) -> dict:
    """The ModelConfig fields every supported config.json (Bamba's included) spells alike.

    A KeyError names a missing required field; the caller turns it into a RadError.
    """
    if raw.get("hidden_act", "silu") != "silu":
        raise RadError(f"unsupported hidden_act '{raw['hidden_act']}'; only 'silu' is supported")
    num_heads, hidden = raw["num_attention_heads"], raw["hidden_size"]
    theta, scaling = _rope_settings(raw)
    derived_head_dim = hidden // num_heads if is_count(hidden) and is_count(num_heads) else hidden
    return dict(
        vocab_size=raw["vocab_size"],
        hidden_size=hidden,
        intermediate_size=raw["intermediate_size"],
        num_layers=raw["num_hidden_layers"],
        num_heads=num_heads,
        num_kv_heads=raw.get("num_key_value_heads") or num_heads,
        head_dim=raw.get("head_dim") or derived_head_dim,
        rms_norm_eps=raw.get("rms_norm_eps", 1e-6),
        rope_theta=theta,
        rope_scaling=scaling,
        max_position_embeddings=raw.get("max_position_embeddings", 2048),
        tie_word_embeddings=raw.get("tie_word_embeddings", False),
        mlp_bias=raw.get("mlp_bias", False),
        bos_token_id=raw.get("bos_token_id"),
        eos_token_ids=_as_list(raw.get("eos_token_id")),
        pad_token_id=raw.get("pad_token_id"),
        dtype=str(raw.get("dtype") or raw.get("torch_dtype") or "float32"),
        architecture=(raw.get("architectures") or [""])[0],
    )
