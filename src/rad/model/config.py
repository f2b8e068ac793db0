"""ModelConfig: what rad needs to know about a checkpoint, read from an HF `config.json`.

Accepts the Llama family (Llama, Mistral, Qwen2, Qwen3) in both the transformers 4.x layout
(`rope_theta`, `rope_scaling` at top level) and the 5.x layout (`rope_parameters`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rad.errors import RadError

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
# Hybrid folders: transformers' Bamba layout where it can express the model, else rad's own (see bamba.py, io.py).
HYBRID_MODEL_TYPES = ("bamba", "rad_hybrid")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
LAYER_TYPES = ("attention", "ssm")


@dataclass
class SSMConfig:
    """Shape of every Mamba2 mixer of a hybrid (one setting for all "ssm" layers, as Bamba has).

    Conversion sizes it from the attention it replaces: n_heads = query heads, head_dim = d_state =
    attention head_dim, n_groups = n_heads. norm_group_size is the gated RMSNorm's group: d_inner
    (what transformers' Bamba computes) in every folder rad writes.
    """

    n_heads: int
    head_dim: int
    n_groups: int
    d_state: int
    conv_kernel: int = 4
    chunk_size: int = 256
    norm_group_size: int | None = None  # None: d_inner

    @property
    def d_inner(self) -> int:
        return self.n_heads * self.head_dim


@dataclass
class ModelConfig:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    # None for plain RoPE, else the HF rope dict (rope_type "linear" or "llama3" and its factors).
    rope_scaling: dict | None = None
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    qkv_bias: bool = False  # Qwen2 always, Llama with attention_bias
    o_bias: bool = False  # Llama with attention_bias only
    mlp_bias: bool = False
    qk_norm: bool = False  # Qwen3: RMSNorm over head_dim on q and k before RoPE
    # Per layer: None (full attention) or the sliding-window size in tokens.
    sliding_windows: list[int | None] = field(default_factory=list)
    # Per layer: "attention" or "ssm" (the latter arrives with conversion).
    layer_types: list[str] = field(default_factory=list)
    ssm: SSMConfig | None = None  # required when any layer is "ssm"
    bos_token_id: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)
    pad_token_id: int | None = None
    dtype: str = "float32"  # the dtype the checkpoint was saved in
    architecture: str = ""

    def __post_init__(self):
        if isinstance(self.ssm, dict):  # from to_dict() / a rad_hybrid config.json
            self.ssm = SSMConfig(**self.ssm)
        if not self.layer_types:
            self.layer_types = ["attention"] * self.num_layers
        if not self.sliding_windows:
            self.sliding_windows = [None] * self.num_layers
        if len(self.layer_types) != self.num_layers or any(t not in LAYER_TYPES for t in self.layer_types):
            raise RadError(f"layer_types must list {self.num_layers} entries from {LAYER_TYPES}, got {self.layer_types}")
        if "ssm" in self.layer_types and self.ssm is None:
            raise RadError("the config has ssm layers but no SSM settings")
        if self.num_heads % self.num_kv_heads:
            raise RadError(f"num_attention_heads ({self.num_heads}) must be a multiple of num_key_value_heads ({self.num_kv_heads})")

    @property
    def attention_layers(self) -> list[int]:
        return [i for i, t in enumerate(self.layer_types) if t == "attention"]

    @property
    def ssm_layers(self) -> list[int]:
        return [i for i, t in enumerate(self.layer_types) if t == "ssm"]

    def to_dict(self) -> dict:
        return asdict(self)


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _rope_settings(raw: dict) -> tuple[float, dict | None]:
    """Return (theta, scaling dict or None) from either config layout."""
    params = raw.get("rope_parameters") or {}
    theta = params.get("rope_theta", raw.get("rope_theta", 10000.0))
    scaling = raw.get("rope_scaling") or params
    rope_type = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise RadError(f"rope type '{rope_type}' is not supported; supported: {', '.join(SUPPORTED_ROPE_TYPES)}")
    if rope_type == "default":
        return float(theta), None
    return float(theta), {**scaling, "rope_type": rope_type}


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


def config_from_hf(raw: dict) -> ModelConfig:
    """Build a ModelConfig from the parsed contents of an HF config.json."""
    model_type = raw.get("model_type")
    if model_type == "bamba":
        from rad.model.bamba import config_from_bamba

        return config_from_bamba(raw)
    if model_type == "rad_hybrid":
        try:
            return ModelConfig(**raw["rad_config"])
        except (KeyError, TypeError) as err:
            raise RadError(f"a rad_hybrid config.json needs a valid 'rad_config' object ({err})") from None
    if model_type not in SUPPORTED_MODEL_TYPES:
        supported = SUPPORTED_MODEL_TYPES + HYBRID_MODEL_TYPES
        raise RadError(f"unsupported model_type '{model_type}'; supported: {', '.join(supported)}")
    try:
        fields = common_fields(raw)
        attention_bias = bool(raw.get("attention_bias", False))
        return ModelConfig(
            model_type=model_type,
            **fields,
            # Qwen2 hard-codes q/k/v biases; Mistral has none; Llama and Qwen3 follow attention_bias.
            qkv_bias=model_type == "qwen2" or (attention_bias and model_type in ("llama", "qwen3")),
            o_bias=attention_bias and model_type in ("llama", "qwen3"),
            qk_norm=model_type == "qwen3",
            sliding_windows=_sliding_windows(raw, model_type, fields["num_layers"]),
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
    return dict(
        vocab_size=raw["vocab_size"],
        hidden_size=hidden,
        intermediate_size=raw["intermediate_size"],
        num_layers=raw["num_hidden_layers"],
        num_heads=num_heads,
        num_kv_heads=raw.get("num_key_value_heads") or num_heads,
        head_dim=raw.get("head_dim") or hidden // num_heads,
        rms_norm_eps=raw.get("rms_norm_eps", 1e-6),
        rope_theta=theta,
        rope_scaling=scaling,
        max_position_embeddings=raw.get("max_position_embeddings", 2048),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        mlp_bias=bool(raw.get("mlp_bias", False)),
        bos_token_id=raw.get("bos_token_id"),
        eos_token_ids=_as_list(raw.get("eos_token_id")),
        pad_token_id=raw.get("pad_token_id"),
        dtype=str(raw.get("dtype") or raw.get("torch_dtype") or "float32"),
        architecture=(raw.get("architectures") or [""])[0],
    )


def load_config(model_dir: Path) -> ModelConfig:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise RadError(f"{model_dir} has no config.json; point at a Hugging Face model folder")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RadError(f"{path} is not valid JSON: {err}") from None
    return config_from_hf(raw)
