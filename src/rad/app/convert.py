"""The convert stage as a command and a pipeline stage: read which layers to replace (given, or from a
diagnosis.json), convert the checkpoint (rad.model.convert's initialisers) and write the hybrid folder."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from rad.errors import RadError
from rad.model.bamba import bamba_incompatibility
from rad.model.convert import INITS, convert
from rad.model.formats import load_config
from rad.model.hybrid import MIXER_SIZES, MixerSize
from rad.model.io import DTYPES, load_model, resolve_model_dir, save_hybrid
from rad.options import Options, option, seed_option
from rad.search.schema import read_diagnosis


@dataclass(frozen=True)
class ConvertConfig(Options):
    init: str = option("rad", help="rad: out_proj <- o_proj, in_proj <- 0 (the draft model exactly); "
                                   "kqvo: x, B, C <- v, k, q", choices=INITS)
    seed: int = seed_option("seed of the freshly initialised mixer parameters")
    mixer: str = option("kv", help="mixer size: kv (one SSM head per key/value head: fewer weights than the attention "
                                   "it replaces in a grouped-query model, saved in rad's own format there) or full "
                                   "(one per query head, as wide as the query heads: a folder transformers loads as "
                                   "Bamba)", choices=MIXER_SIZES)
    ssm_heads: int | None = option(None, help="SSM heads per mixer (default: the --mixer size's)", low=1)
    ssm_groups: int | None = option(None, help="B/C groups per mixer (default: one per SSM head)", low=1)
    d_state: int | None = option(None, help="SSM state size per head (default: the attention's head_dim)", low=1)
    expand: float | None = option(None, help="mixer width as a multiple of hidden_size (default: the --mixer size's)",
                                  above=0)

    @property
    def size(self) -> MixerSize:
        return MixerSize(self.mixer, self.ssm_heads, self.ssm_groups, self.d_state, self.expand)


def layers_from_diagnosis(path: str | Path, k: int) -> list[int]:
    """The layers `rad diagnose` found best to replace for k of them (the file is checked against its schema)."""
    results = read_diagnosis(path)["results"]
    if str(k) not in results:
        known = ", ".join(sorted(results, key=lambda key: (len(key), key)))
        raise RadError(f"{path} has no result for k={k}; it has k = {known}")
    layers = results[str(k)]["best_layers"]
    if len(layers) != k:
        raise RadError(f"{path} lists {len(layers)} layers for k={k}")
    return list(layers)


def convert_folder(model_dir, out_dir, layers, config: ConvertConfig = ConvertConfig()) -> dict:
    """Convert a checkpoint folder into a hybrid folder (weights kept in the source's dtype)."""
    model_dir = resolve_model_dir(model_dir)
    dtype = load_config(model_dir).dtype
    model = load_model(model_dir, dtype=dtype if dtype in DTYPES else "float32")
    hybrid, notes = convert(model, layers, config.init, config.seed, in_place=True, size=config.size)
    reason = bamba_incompatibility(hybrid.config)
    if reason:
        notes.append(f"saved with rad's own model_type 'rad_hybrid', which transformers cannot load, not as Bamba: {reason}")
    model_type = save_hybrid(hybrid, out_dir, copy_from=model_dir)
    return {"out": str(out_dir), "model_type": model_type, "layers": hybrid.config.ssm_layers, "init": config.init,
            "layer_types": hybrid.config.layer_types, "ssm": asdict(hybrid.config.ssm), "notes": notes}  # fmt: skip
