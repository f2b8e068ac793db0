"""ModelConfig: what rad needs to know about a checkpoint, and the checks of layer indices against it.

The config formats it is read from (HF families, Bamba, rad_hybrid) are parsed in rad.model.formats.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import asdict, dataclass, field

from rad.errors import RadError

LAYER_TYPES = ("attention", "ssm")


@dataclass
class SSMConfig:
    """Shape of every Mamba2 mixer of a hybrid (one setting for all "ssm" layers, as Bamba has).

    Conversion sizes it from the attention it replaces (rad.model.hybrid.MixerSize: by default n_heads = query
    heads, head_dim = d_state = attention head_dim, n_groups = n_heads). norm_group_size is the gated RMSNorm's
    group: d_inner (what transformers' Bamba computes) in every folder rad writes.
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


# config.json's names for the ModelConfig fields that it spells differently (errors name what the user wrote).
JSON_NAMES = {"num_layers": "num_hidden_layers", "num_heads": "num_attention_heads", "num_kv_heads": "num_key_value_heads",
              "eos_token_ids": "eos_token_id", "qkv_bias": "attention_bias", "o_bias": "attention_bias"}
COUNTS = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
          "max_position_embeddings", "n_heads", "n_groups", "d_state", "conv_kernel", "chunk_size")
POSITIVE_NUMBERS = ("rms_norm_eps", "rope_theta")
FLAGS = ("tie_word_embeddings", "qkv_bias", "o_bias", "mlp_bias", "qk_norm")
TOKEN_IDS = ("bos_token_id", "pad_token_id")


def is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def count_field(raw: dict, key: str) -> int:
    """raw[key], which must be a positive whole number (a KeyError names a missing field)."""
    if not is_count(raw[key]):
        raise RadError(f"config.json: {key} must be a positive whole number, got {raw[key]!r}")
    return raw[key]


def check_fields(config) -> None:
    """Every field a config.json sets, by type and range, before anything computes with it: a wrong one is a
    one-line RadError naming it, never a traceback or a silently wrong model."""
    def bad(name: str, what: str, value):
        raise RadError(f"config.json: {JSON_NAMES.get(name, name)} must be {what}, got {value!r}")

    for name in COUNTS:
        if hasattr(config, name) and not is_count(getattr(config, name)):
            bad(name, "a positive whole number", getattr(config, name))
    for name in POSITIVE_NUMBERS:
        value = getattr(config, name, 1.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            bad(name, "a positive number", value)
    for name in FLAGS:
        if hasattr(config, name) and not isinstance(getattr(config, name), bool):
            bad(name, "true or false", getattr(config, name))
    vocab = getattr(config, "vocab_size", None)
    for name in TOKEN_IDS:
        value = getattr(config, name, None)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value < vocab):
            bad(name, f"a token id below vocab_size ({vocab}) or null", value)
    for value in getattr(config, "eos_token_ids", []):
        if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value < vocab):
            bad("eos_token_ids", f"token ids below vocab_size ({vocab})", value)
    for window in getattr(config, "sliding_windows", []):
        if window is not None and not is_count(window):
            bad("sliding_window", "a positive whole number or null", window)


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
        check_fields(self)
        if isinstance(self.ssm, dict):  # from to_dict() / a rad_hybrid config.json
            try:
                self.ssm = SSMConfig(**self.ssm)
            except TypeError as err:
                raise RadError(f"config.json: the SSM settings are not valid ({err})") from None
        if self.ssm is not None:
            check_fields(self.ssm)
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

    def check_layers(self, layers: Collection[int], what: str) -> list[int]:
        """`layers` as a list, after checking that each names an attention layer, once (`what` names them in errors)."""
        layers = list(layers)
        if len(set(layers)) != len(layers):
            raise RadError(f"{what} {layers} repeats a layer")
        for layer in layers:
            if not 0 <= layer < self.num_layers:
                raise RadError(f"{what}: layer {layer} is out of range: the model has layers 0..{self.num_layers - 1}")
            if self.layer_types[layer] != "attention":
                raise RadError(f"{what}: layer {layer} is a {self.layer_types[layer]} layer, not attention")
        return layers

    def check_skip(self, skip: Collection[int]) -> frozenset[int]:
        """A skip set (attention sub-layers the draft leaves out): indices of attention layers, each once."""
        return frozenset(self.check_layers(skip, "skip set"))
