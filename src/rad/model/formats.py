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
    """Build a ModelConfig from the parsed contents of a config.json. Fields are checked by type and range
    (rad.model.config.check_fields); what those checks do not foresee still ends as a one-line error that names
    the file, never a traceback from deep in a parser."""
    if not isinstance(raw, dict):
        raise RadError(f"config.json must hold a JSON object, got {type(raw).__name__}")
    try:
        return parse(raw)
    except (TypeError, ValueError, AttributeError, IndexError) as err:
        raise RadError(f"config.json is malformed ({type(err).__name__}: {err})") from None


def parse(raw: dict) -> ModelConfig:
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
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RadError(f"{path} is not valid JSON: {err}") from None
    except OSError as err:
        raise RadError(f"cannot read {path}: {err.strerror}") from None
    return config_from_hf(raw)
