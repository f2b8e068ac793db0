"""Reading a checkpoint's config.json, whichever format it is in: a Llama-family model (rad.model.families),
transformers' Bamba hybrid layout (rad.model.bamba) or rad's own `rad_hybrid` (the ModelConfig fields as they
are, for hybrids Bamba cannot express; see rad.model.io)."""

from __future__ import annotations

import json
from pathlib import Path

from rad.errors import RadError
from rad.model.bamba import config_from_bamba
from rad.model.config import ModelConfig
from rad.model.families import SUPPORTED_MODEL_TYPES, config_from_family

HYBRID_MODEL_TYPES = ("bamba", "rad_hybrid")


def config_from_hf(raw: dict) -> ModelConfig:
    """Build a ModelConfig from the parsed contents of a config.json."""
    model_type = raw.get("model_type")
    if model_type == "bamba":
        return config_from_bamba(raw)
    if model_type == "rad_hybrid":
        try:
            return ModelConfig(**raw["rad_config"])
        except (KeyError, TypeError) as err:
            raise RadError(f"a rad_hybrid config.json needs a valid 'rad_config' object ({err})") from None
    if model_type not in SUPPORTED_MODEL_TYPES:
        supported = SUPPORTED_MODEL_TYPES + HYBRID_MODEL_TYPES
        raise RadError(f"unsupported model_type '{model_type}'; supported: {', '.join(supported)}")
    return config_from_family(raw)


def load_config(model_dir: Path) -> ModelConfig:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise RadError(f"{model_dir} has no config.json; point at a Hugging Face model folder")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RadError(f"{path} is not valid JSON: {err}") from None
    return config_from_hf(raw)
