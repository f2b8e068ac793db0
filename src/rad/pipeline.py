"""`rad run`: diagnose → convert → distill → eval → bench → report, each stage's artifact in one folder.

A stage that finished writes OUT/stages/<stage>.json (atomically, last); a re-run skips every stage
whose marker is there and resumes the one that was interrupted (diagnosis and distillation continue
from their own SQLite study and checkpoints). Every check that needs no long work runs first, so bad
input stops the run before anything slow starts.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rad.errors import RadError
from rad.files import atomic_write_json

STAGES = ("diagnose", "convert", "distill", "eval", "bench", "report")


@dataclass
class RunConfig:
    model: str
    k: int
    out: str
    teacher: str | None = None  # default: the model itself (self-distillation)
    data: str = "task:math+code"
    price_per_hour: float = 2.0  # USD per machine-hour, for the report's cost section
    # diagnose
    trials: int = 30
    n_prompts: int = 16
    diagnose_new_tokens: int = 64
    sampler: str = "gp"
    # convert
    init: str = "rad"
    # distill
    stage1_steps: int = 200
    stage2_steps: int = 0
    lr: float = 1e-3  # stage 1 (the SSM mixers)
    stage2_lr: float = 1e-4  # stage 2 (end to end)
    temperature: float = 1.0  # of the distillation KL
    assistant_only: bool = False  # distillation loss only on task completions / assistant turns
    seq_len: int = 256
    batch_size: int = 16
    save_every: int = 50  # distillation checkpoints: a crash loses at most this many steps
    # eval
    tasks: list[str] = field(default_factory=lambda: ["math", "code"])
    eval_n: int = 200
    eval_max_new_tokens: int = 160
    eval_batch_size: int = 32
    # bench
    contexts: list[int] = field(default_factory=lambda: [256, 1024, 4096])
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    bench_new_tokens: int = 32
    bench_reps: int = 3
    seed: int = 0
    device: str = "cpu"
    threads: int = 0  # torch CPU threads (0: torch's default); 1 is far faster on a busy machine
    distill_threads: int = 0  # torch CPU threads while distilling (0: as `threads`); training gains most from more

    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    def stage_dir(self, stage: str) -> Path:
        return self.out_dir / stage


def marker(config: RunConfig, stage: str) -> Path:
    return config.out_dir / "stages" / f"{stage}.json"


def check_run(config: RunConfig) -> None:
    """Every mistake that can be found without long work: paths, k, data, tasks, numbers."""
    from rad.distill.distill import check_config
    from rad.eval.tasks import check_task_spec
    from rad.files import atomic_write_text
    from rad.model.formats import load_config
    from rad.model.convert import INITS
    from rad.model.io import resolve_model_dir

    model_config = load_config(resolve_model_dir(config.model))
    attention = model_config.attention_layers
    if not 1 <= config.k < len(attention):
        raise RadError(f"--k must be between 1 and {len(attention) - 1} (the model has {len(attention)} attention layers), got {config.k}")
    if config.teacher is not None:
        load_config(resolve_model_dir(config.teacher))
    check_config(distill_config(config))  # data, steps, learning rates, temperature, as `rad distill` checks them
    for task in config.tasks:
        check_task_spec(task)
    if config.init not in INITS:
        raise RadError(f"unknown init '{config.init}'; choose one of {', '.join(INITS)}")
    if config.price_per_hour <= 0:
        raise RadError(f"--price-per-hour must be positive, got {config.price_per_hour}")
    if min(config.trials, config.eval_n, config.bench_reps) < 1:
        raise RadError("trials, eval problems and bench repetitions must be positive")
    atomic_write_text(config.out_dir / "stages" / ".writable", "")  # fails clearly on an unwritable --out


def run(config: RunConfig, log=print) -> dict:
    """Run (or resume) every stage; return {stage: its summary}."""
    check_run(config)
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    atomic_write_json(config.out_dir / "run.json", asdict(config))
    summaries = {}
    started = time.perf_counter()
    for number, stage in enumerate(STAGES, start=1):
        done = marker(config, stage)
        if done.is_file():
            summaries[stage] = json.loads(done.read_text())
            log(f"[{number}/{len(STAGES)}] {stage}: already done, skipped")
            continue
        log(f"[{number}/{len(STAGES)}] {stage} ... ({time.perf_counter() - started:.0f} s into the run)")
        stage_started = time.perf_counter()
        summary = STAGE_FUNCTIONS[stage](config, summaries)
        summary["seconds"] = time.perf_counter() - stage_started
        atomic_write_json(done, summary)
        summaries[stage] = summary
    log(f"done in {time.perf_counter() - started:.0f} s: {config.out_dir / 'report.html'}")
    return summaries


def run_diagnose(config: RunConfig, _) -> dict:
    from rad.search.diagnose import DiagnoseConfig, diagnose

    out = config.stage_dir("diagnose")
    resume = (out / "study.db").is_file()  # an interrupted diagnosis continues its study
    result = diagnose(DiagnoseConfig(model=config.model, out=str(out), ks=[config.k], trials=config.trials,
                                     prompts=["task:math", "task:code"], n_prompts=config.n_prompts,
                                     max_new_tokens=config.diagnose_new_tokens, sampler=config.sampler,
                                     seed=config.seed, resume=resume, device=config.device, threads=config.threads))
    best = result["results"][str(config.k)]
    return {"diagnosis": str(out / "diagnosis.json"), "layers": best["best_layers"]}


def run_convert(config: RunConfig, summaries: dict) -> dict:
    from rad.model.convert import convert_folder

    return convert_folder(config.model, config.stage_dir("convert"), summaries["diagnose"]["layers"],
                          init=config.init, seed=config.seed)


def distill_config(config: RunConfig):
    """The distillation stage's settings (resuming when the stage left checkpoints)."""
    from rad.distill.config import DistillConfig, StageConfig

    out = config.stage_dir("distill")
    checkpoints = out / "checkpoints"
    return DistillConfig(
        student=str(config.stage_dir("convert")), teacher=config.teacher or config.model, data=config.data,
        out=str(out), stage1=StageConfig(config.stage1_steps, config.lr, "ssm", warmup=min(20, config.stage1_steps // 10)),
        stage2=StageConfig(config.stage2_steps, config.stage2_lr, "all", warmup=min(10, config.stage2_steps // 10)),
        seq_len=config.seq_len, batch_size=config.batch_size, temperature=config.temperature,
        assistant_only=config.assistant_only, save_every=config.save_every, seed=config.seed,
        device=config.device, threads=config.distill_threads or config.threads,
        resume=checkpoints.is_dir() and any(checkpoints.iterdir()),
    )


def run_distill(config: RunConfig, _) -> dict:
    from rad.distill.distill import distill

    summary = distill(distill_config(config))
    if config.threads:  # distill set its own thread count; the later stages run with the run's
        import torch

        torch.set_num_threads(config.threads)
    return {"model": str(config.stage_dir("distill")), "final": summary["final"], "steps": summary["steps"]}


def run_eval(config: RunConfig, _) -> dict:
    from rad.eval.accuracy import EvalConfig, evaluate
    from rad.files import atomic_write_jsonl
    from rad.model.io import load_model, resolve_model_dir
    from rad.model.tokenizer import load_tokenizer

    models = {"teacher": config.teacher or config.model, "hybrid": str(config.stage_dir("distill"))}
    results = {}
    for name, folder in models.items():
        model_dir = resolve_model_dir(folder)
        model, tokenizer = load_model(model_dir, device=config.device), load_tokenizer(model_dir)
        results[name] = {}
        for task in config.tasks:
            result = evaluate(model, tokenizer, EvalConfig(task=task, n=config.eval_n, seed=config.seed,
                                                           batch_size=config.eval_batch_size,
                                                           max_new_tokens=config.eval_max_new_tokens))
            atomic_write_jsonl(config.stage_dir("eval") / f"{name}-{result['task']}.jsonl", result.pop("records"))
            results[name][result["task"]] = result
    atomic_write_json(config.out_dir / "eval.json", {"models": results})
    return {name: {task: r["accuracy"] for task, r in tasks.items()} for name, tasks in results.items()}


def run_bench(config: RunConfig, summaries: dict) -> dict:
    from rad.eval.throughput import BenchConfig, bench_models

    bench = bench_models([config.teacher or config.model, str(config.stage_dir("distill"))],
                         BenchConfig(contexts=config.contexts, batch_sizes=config.batch_sizes,
                                     new_tokens=config.bench_new_tokens, reps=config.bench_reps, seed=config.seed),
                         device=config.device)
    for entry, label in zip(bench["models"], ("teacher", "hybrid")):
        entry["label"] = label
    bench["speculative"] = speculative_statistics(config, summaries["diagnose"]["layers"])
    atomic_write_json(config.out_dir / "bench.json", bench)
    teacher, hybrid = (entry["points"][-1] for entry in bench["models"])  # the longest context, last batch size
    return {"longest_context": teacher["context"], "batch": teacher["batch"],
            "decode_tokens_per_s": {"teacher": teacher["decode_tokens_per_s"], "hybrid": hybrid["decode_tokens_per_s"]},
            "memory_bytes": {"teacher": teacher["memory_bytes"], "hybrid": hybrid["memory_bytes"]},
            "decode_speedup": hybrid["decode_tokens_per_s"] / teacher["decode_tokens_per_s"],
            "speculative_speedup": bench["speculative"]["speedup_measured"]}


def speculative_statistics(config: RunConfig, layers: list[int]) -> dict:
    """Self-speculative decoding of the teacher with the diagnosed layers skipped, vs plain decoding."""
    from rad.data import math
    from rad.eval.profiling import profile_speculative
    from rad.model.io import load_model, resolve_model_dir
    from rad.model.tokenizer import load_tokenizer

    model_dir = resolve_model_dir(config.teacher or config.model)
    model, tokenizer = load_model(model_dir, device=config.device), load_tokenizer(model_dir)
    prompts = [tokenizer(p.prompt)["input_ids"] for p in math.generate(8, seed=config.seed, split="test")]
    profile = profile_speculative(model, prompts, config.eval_max_new_tokens, skip=layers, model_cost=False)
    return {"skip": layers, **profile.to_dict()}


def run_report(config: RunConfig, _) -> dict:
    from rad.report.build import ReportInputs, build_report

    md, html = build_report(config.out_dir, ReportInputs(
        diagnosis=config.stage_dir("diagnose") / "diagnosis.json", metrics=config.stage_dir("distill") / "metrics.jsonl",
        evaluation=config.out_dir / "eval.json", bench=config.out_dir / "bench.json",
        price_per_hour=config.price_per_hour), title=f"rad: {config.model}, k = {config.k}")
    return {"markdown": str(md), "html": str(html)}


STAGE_FUNCTIONS = {"diagnose": run_diagnose, "convert": run_convert, "distill": run_distill,
                   "eval": run_eval, "bench": run_bench, "report": run_report}
