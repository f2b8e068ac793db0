"""The diagnose stage: for each k, search the k most redundant attention layers, compare with the
baselines on the same objective, and write OUT/diagnosis.json (schema: diagnosis.schema.json) and the
Optuna study (OUT/study.db unless a storage URL is given). rad.report draws its picture."""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path

from rad.errors import RadError
from rad.files import atomic_write_json, folder_lock
from rad.machine import set_threads
from rad.options import require
from rad.search.analysis import describe_sources, redundancy
from rad.search.baselines import run_baselines
from rad.search.bayes import hide_password, run_search
from rad.search.config import DiagnoseConfig
from rad.search.influence import block_influence
from rad.search.leave_one_out import leave_one_out_kl
from rad.search.objective import CachedObjective
from rad.search.prompts import is_chat, load_prompts
from rad.search.schema import check_diagnosis
from rad.search.space import check_k, eligible_layers
from rad.search.speedup import SpeedupConfig, SpeedupObjective

SCHEMA_VERSION = 1


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RadError(f"cannot create the output folder {out}: {err.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise RadError(f"the output folder {out} is not writable")


def diagnose(config: DiagnoseConfig) -> dict:
    """Run the stage and write its files; return the diagnosis (what diagnosis.json holds)."""
    require(config, "model", "out", "ks")
    check_writable(Path(config.out))
    with folder_lock(config.out, "rad diagnose"):
        return run_diagnosis(config)


def run_diagnosis(config: DiagnoseConfig) -> dict:
    from rad.model.formats import load_config
    from rad.model.io import resolve_model_dir
    from rad.model.tokenizer import encode_prompt, load_tokenizer

    set_threads(config.threads)
    start = time.perf_counter()
    model_dir = resolve_model_dir(config.model)
    model_config = load_config(model_dir)  # enough to check k before the weights load
    eligible = eligible_layers(model_config.attention_layers, model_config.num_layers,
                               config.exclude_first, config.exclude_last)
    for k in config.ks:
        check_k(k, eligible)
    tokenizer = load_tokenizer(model_dir)
    sources = {spec: [encode_prompt(tokenizer, text, chat=is_chat(spec))
                      for text in load_prompts(spec, config.n_prompts, config.seed)] for spec in config.prompts}
    model = config.placement.load(model_dir)
    speedup = SpeedupObjective(model, sources, SpeedupConfig(config.objective, config.max_new_tokens, config.draft_len))
    objective = CachedObjective(speedup)
    every_prompt = [p for prompts in sources.values() for p in prompts]
    rankings = {"block_influence": block_influence(model, every_prompt), "loo_kl": leave_one_out_kl(model, every_prompt)}
    storage = config.storage or f"sqlite:///{Path(config.out).resolve() / 'study.db'}"
    # What must match for a resumed study's values to be comparable with new ones.
    settings = {"model": str(model_dir.resolve()), "prompts": config.prompts, "n_prompts": config.n_prompts,
                "max_new_tokens": config.max_new_tokens, "draft_len": config.draft_len,
                "objective": config.objective, "seed": config.seed}
    results = {str(k): diagnose_k(k, config, eligible, objective, speedup, rankings, storage, settings)
               for k in config.ks}
    diagnosis = {
        "version": SCHEMA_VERSION,
        "model": str(model_dir),
        "num_layers": model_config.num_layers,
        "attention_layers": model_config.attention_layers,
        "eligible_layers": eligible,
        "config": asdict(config) | {"storage": hide_password(storage)},
        **{name: {str(l): v for l, v in scores.items()} for name, scores in rankings.items()},
        "results": results,
        "seconds": time.perf_counter() - start,
    }
    out = Path(config.out)
    atomic_write_json(out / "diagnosis.json", check_diagnosis(diagnosis, "the diagnosis rad is about to write"))
    return diagnosis


def diagnose_k(k, config: DiagnoseConfig, eligible, objective: CachedObjective, speedup: SpeedupObjective,
               rankings, storage, settings) -> dict:
    start = time.perf_counter()
    search = run_search(objective, eligible, k, config.trials, sampler=config.sampler, seed=config.seed,
                        storage=storage, study_name=f"k{k}", settings=settings, resume=config.resume,
                        deterministic=config.objective == "modeled", progress=config.progress,
                        own_storage=config.storage is None)
    baselines = run_baselines(objective, eligible, k, len(search.trials), config.seed, rankings)
    best = search.best
    if "exhaustive" in baselines:
        optimum = baselines["exhaustive"]["value"]
        baselines["exhaustive"]["regret"] = optimum - best.value
        baselines["exhaustive"]["search_found_it"] = best.value >= optimum
    # The best set once more, now also timed against plain decoding: the measured speed-up a user would see.
    confirmed = speedup(best.skip, measure=True).details
    evaluated = objective.evaluated(k)
    key = f"speedup_{config.objective}"
    return {
        "best_layers": list(best.skip),
        "value": best.value,
        "acceptance_rate": confirmed["acceptance_rate"],
        "mean_accepted": confirmed["mean_accepted"],
        "speedup_modeled": confirmed["speedup_modeled"],
        "speedup_measured": confirmed["speedup_measured"],
        "best_trial": best.number,
        "trials": [t.to_dict() for t in search.trials],
        "baselines": baselines,
        "redundancy": {str(l): v for l, v in redundancy(evaluated, eligible).items()},
        "evaluated_sets": len(evaluated),
        "sources": describe_sources(evaluated, key),
        "seconds": time.perf_counter() - start,
    }
