"""The tokenizer and chat template of a checkpoint folder, through transformers (offline)."""

from __future__ import annotations

import json
from pathlib import Path

from rad.errors import RadError


def load_tokenizer(model_dir: Path):
    """The folder's fast tokenizer (`tokenizer.json` + `tokenizer_config.json`), never from the network."""
    if not (Path(model_dir) / "tokenizer.json").is_file():
        raise RadError(f"{model_dir} has no tokenizer.json; rad needs the checkpoint's fast tokenizer")
    from transformers import AutoConfig, AutoTokenizer  # imported here: it is slow and only text I/O needs it

    # AutoTokenizer reads config.json; rad's own hybrid model_type is unknown to it (a warning on every
    # command), so it gets the source family's config, which is also what picks the tokenizer class.
    try:
        raw = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # JSON and UTF-8 decoding errors are ValueErrors
        raw = {}  # the model loader reports a missing or broken config.json
    raw = raw if isinstance(raw, dict) else {}
    rad_config = raw.get("rad_config") if isinstance(raw.get("rad_config"), dict) else {}
    family = rad_config.get("model_type") if raw.get("model_type") == "rad_hybrid" else None
    extra = {"config": AutoConfig.for_model(family)} if family else {}
    try:
        return AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True, **extra)
    except Exception as err:  # transformers reads the user's files with errors of many kinds: one line each
        message = f"{type(err).__name__}: {err}".replace("\n", " ")
        raise RadError(f"cannot load the tokenizer in {model_dir}: {message}") from None


def encode_prompt(tokenizer, text: str, chat: bool = False) -> list[int]:
    """Token ids for a prompt; with `chat`, wrapped as one user turn by the folder's chat template."""
    if chat:
        if not tokenizer.chat_template:
            raise RadError("--chat was given but the tokenizer has no chat template")
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    return tokenizer(text)["input_ids"]
