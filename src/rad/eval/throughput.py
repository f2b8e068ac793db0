"""Decode throughput, time to first token and memory of a model at given contexts and batch sizes.

Each (context, batch) point is measured in one process: a warm-up run, then several repetitions,
medians reported. Prompts are random token ids (throughput does not depend on their meaning) and
no stop token ends a row early, so every row decodes exactly `new_tokens` tokens.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rad.decode.generate import generate
from rad.errors import RadError
from rad.machine import calibration, check_memory
from rad.model.cache import cache_bytes
from rad.model.formats import load_config
from rad.model.io import load_model, parse_dtype, resolve_model_dir, skeleton
from rad.model.llama import CausalLM
from rad.options import Options, option, seed_option


@dataclass(frozen=True)
class BenchConfig(Options):
    contexts: list[int] = option(default_factory=lambda: [256, 1024, 4096], help="prompt lengths, e.g. 256,1024,4096",
                                 low=1)
    batch_sizes: list[int] = option(default_factory=lambda: [1, 8], help="rows decoded together, e.g. 1,8", low=1)
    new_tokens: int = option(32, help="tokens decoded per row (at least 2: the first comes from the prefill)", low=2)
    reps: int = option(3, help="timed repetitions after the warm-up (median reported)", low=1)
    warmup: int = option(1, help="untimed repetitions first", low=0)
    seed: int = seed_option("seed of the random prompts")

    def __post_init__(self):
        super().__post_init__()
        if not self.contexts or not self.batch_sizes:
            raise RadError("give at least one context and one batch size")


def weight_bytes(model: CausalLM) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def state_bytes(model: CausalLM, batch: int, length: int) -> int:
    """Bytes of the decoding state (KV cache, SSM states) for `batch` rows of `length` tokens, as plain
    decoding allocates it (SSM layers keep no rollback history)."""
    return model.new_cache(batch, length, ssm_history=1).memory_bytes()


def random_prompts(model: CausalLM, batch: int, context: int, seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (batch, context), generator=generator).tolist()


def measure_points(models: Sequence[CausalLM], context: int, batch: int, config: BenchConfig) -> list[dict]:
    """One point per model, the models taking turns rep by rep (A B A B ...) so that a machine
    whose speed drifts affects all of them alike."""
    runs = [[] for _ in models]
    peaks = [0] * len(models)
    for rep in range(config.warmup + config.reps):
        for i, model in enumerate(models):
            prompts = random_prompts(model, batch, context, config.seed)
            cuda = model.device.type == "cuda"
            if cuda:
                torch.cuda.reset_peak_memory_stats(model.device)
            # Past the model's trained positions too: a step's time does not depend on what the tokens mean.
            result = generate(model, prompts, config.new_tokens, stop_tokens=[], beyond_positions=True)
            if cuda:
                peaks[i] = max(peaks[i], torch.cuda.max_memory_allocated(model.device))
            if rep >= config.warmup:
                runs[i].append(result)
    return [summarise(model, context, batch, config, model_runs, peak) for model, model_runs, peak in zip(models, runs, peaks)]


def summarise(model: CausalLM, context: int, batch: int, config: BenchConfig, runs, peak: int) -> dict:
    decode_rates = [batch * (config.new_tokens - 1) / r.decode_s for r in runs]  # the first token comes from prefill
    point = {
        "context": context,
        "batch": batch,
        "decode_tokens_per_s": statistics.median(decode_rates),
        "ttft_s": statistics.median(r.prefill_s for r in runs),
        "weight_bytes": weight_bytes(model),
        "state_bytes": state_bytes(model, batch, context + config.new_tokens),
    }
    point["memory_bytes"] = point["weight_bytes"] + point["state_bytes"]
    if peak:
        point["peak_allocated_bytes"] = peak
    return point


def check_fits(model_dirs: Sequence[str], config: BenchConfig, device: str, dtype: str) -> None:
    """A RadError, before any model loads, when the largest point would not fit in memory: one model's weights,
    its cache and the prompts' ids for the longest context and the largest batch."""
    context, batch = max(config.contexts), max(config.batch_sizes)
    for name in model_dirs:
        model_config = load_config(resolve_model_dir(name))
        weights = skeleton(model_config).num_parameters() * parse_dtype(dtype).itemsize
        cache = cache_bytes(model_config, batch, context + config.new_tokens, parse_dtype(dtype), ssm_history=1)
        check_memory(weights + cache + 8 * batch * context, f"benchmarking {name} at {context} tokens x {batch} rows",
                     str(device))


def bench_models(model_dirs: Sequence[str], config: BenchConfig, device="cpu", dtype="float32", progress=None,
                 compile: bool = False) -> dict:  # fmt: skip
    """Benchmark the models on the same points; ratios compare every model with the first one.
    `progress(model_index, point)` is called after each point. With `compile`, compiled decoding: each point's
    warm-up compiles its shapes (keep --warmup >= 1), and each model's entry says what compiling took."""
    check_fits(model_dirs, config, device, dtype)
    models = [load_model(name, device=device, dtype=dtype, compile=compile) for name in model_dirs]
    entries = [{"model": str(name), "layer_types": m.config.layer_types, "parameters": m.num_parameters(),
                "parameters_per_mixer": m.parameters_per_mixer(), "points": []} for name, m in zip(model_dirs, models)]
    for context in config.contexts:
        for batch in config.batch_sizes:
            for i, point in enumerate(measure_points(models, context, batch, config)):
                entries[i]["points"].append(point)
                if progress:
                    progress(i, point)
    for entry, model in zip(entries, models):
        if model.compiled_decode is not None:
            entry["compile_s"] = model.compiled_decode.compile_seconds
    baseline = entries[0]["points"]
    for entry in entries[1:]:
        entry["vs_first"] = [
            {"context": p["context"], "batch": p["batch"],
             "decode_speedup": p["decode_tokens_per_s"] / b["decode_tokens_per_s"],
             "memory_ratio": p["memory_bytes"] / b["memory_bytes"],
             "state_memory_ratio": p["state_bytes"] / b["state_bytes"] if b["state_bytes"] else None}
            for p, b in zip(entry["points"], baseline)
        ]
    return {"device": str(device), "dtype": dtype, "compiled": compile, "new_tokens": config.new_tokens,
            "reps": config.reps, "machine": calibration(str(device), dtype), "models": entries}
