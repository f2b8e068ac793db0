"""`rad run`: diagnose → convert → distill → eval → bench → report, each stage's artifact in one folder.

RunConfig holds each stage's own config (their flags are `rad run`'s, prefixed with the stage's name); the
few settings a stage takes from the run (the model, the seed, the device, its folder) are set here. A stage
that finished writes OUT/stages/<stage>.json (atomically, last); a re-run skips every stage whose marker is
there and resumes the one that was interrupted (diagnosis and distillation continue from their own SQLite
study and checkpoints). Every check that needs no long work runs first, so bad input stops the run before
anything slow starts.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from rad.app.command import MODEL_HELP, Command
from rad.app.convert import ConvertConfig
from rad.distill.config import DATA_HELP, DistillConfig
from rad.errors import RadError
from rad.eval.accuracy import EvalConfig
from rad.eval.throughput import BenchConfig
from rad.files import atomic_write_json
from rad.options import Options, nested, option
from rad.search.config import DiagnoseConfig

STAGES = ("diagnose", "convert", "distill", "eval", "bench", "report")
# Flags that `rad run` took before its stages' flags were prefixed: they keep working.
OLD_FLAGS = {"diagnose": {"trials": "--trials"}, "bench": {"contexts": "--contexts"},
             "distill": {"stage1_steps": "--stage1-steps", "stage2_steps": "--stage2-steps", "stage1_lr": "--lr",
                         "stage2_lr": "--stage2-lr", "temperature": "--temperature",
                         "assistant_only": "--assistant-only"}}


@dataclass
class RunConfig(Options):
    model: str | None = option(None, help=MODEL_HELP, positional=True, required=True)
    k: int | None = option(None, help="how many attention layers to replace", required=True, low=1)
    out: str | None = option(None, help="run folder; re-running resumes where it stopped", required=True)
    teacher: str | None = option(None, help="distillation teacher (default: the model itself)")
    data: str = option("task:math+code", help=f"distillation data: {DATA_HELP}")
    tasks: list[str] = option(default_factory=lambda: ["math", "code"], help="evaluation tasks, e.g. math,code")
    price_per_hour: float = option(2.0, help="USD per machine-hour, for the report's cost section", above=0)
    seed: int = option(0, help="seed of every stage", low=0)
    device: str = option("cpu", help="torch device of every stage")
    threads: int = option(0, help="torch CPU threads (0: torch's default; 1 on a busy machine)", low=0)
    diagnose: DiagnoseConfig = nested(lambda: DiagnoseConfig(trials=30, prompts=["task:math", "task:code"]),
                                      "diagnose", OLD_FLAGS["diagnose"])
    convert: ConvertConfig = nested(ConvertConfig, "convert")
    # distill.threads: 0 = as --threads (training gains most from more threads)
    distill: DistillConfig = nested(DistillConfig, "distill", OLD_FLAGS["distill"])
    eval: EvalConfig = nested(lambda: EvalConfig(n=200, max_new_tokens=160, batch_size=32), "eval")
    bench: BenchConfig = nested(lambda: BenchConfig(batch_sizes=[1]), "bench", OLD_FLAGS["bench"])

    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    def stage_dir(self, stage: str) -> Path:
        return self.out_dir / stage

    def stage_config(self, stage: str):
        """The stage's config with what the run sets itself: its inputs and folder, the seed, the device."""
        teacher = self.teacher or self.model
        if stage == "diagnose":
            out = self.stage_dir("diagnose")
            return replace(self.diagnose, model=self.model, out=str(out), ks=[self.k], seed=self.seed,
                           placement=replace(self.diagnose.placement, device=self.device), threads=self.threads,
                           resume=(out / "study.db").is_file())  # an interrupted diagnosis continues its study
        if stage == "convert":
            return replace(self.convert, seed=self.seed)
        if stage == "distill":
            checkpoints = self.stage_dir("distill") / "checkpoints"
            return replace(self.distill, student=str(self.stage_dir("convert")), teacher=teacher, data=self.data,
                           out=str(self.stage_dir("distill")), seed=self.seed, device=self.device,
                           threads=self.distill.threads or self.threads,
                           resume=checkpoints.is_dir() and any(checkpoints.iterdir()))
        if stage == "eval":
            return replace(self.eval, seed=self.seed)
        return replace(self.bench, seed=self.seed)


# What each stage's config takes from the run (RunConfig.stage_config): `rad run` has no flag for these.
SET_BY_RUN = frozenset(f"{stage}.{name}" for stage, names in {
    "diagnose": ("model", "out", "ks", "seed", "placement.device", "threads", "resume"),
    "convert": ("seed",),
    "distill": ("student", "teacher", "data", "out", "seed", "device", "resume"),
    "eval": ("task", "seed", "skip"),
    "bench": ("seed",),
}.items() for name in names)


def marker(config: RunConfig, stage: str) -> Path:
    return config.out_dir / "stages" / f"{stage}.json"


def check_run(config: RunConfig) -> None:
    """Every mistake that can be found without long work: paths, k, data, tasks."""
    from rad.distill.distill import check_config
    from rad.eval.tasks import check_task_spec
    from rad.files import atomic_write_text
    from rad.model.formats import load_config
    from rad.model.io import resolve_model_dir

    model_config = load_config(resolve_model_dir(config.model))
    attention = model_config.attention_layers
    if not 1 <= config.k < len(attention):
        raise RadError(f"--k must be between 1 and {len(attention) - 1} (the model has {len(attention)} attention layers), got {config.k}")
    if config.teacher is not None:
        load_config(resolve_model_dir(config.teacher))
    check_config(config.stage_config("distill"))  # data, and what else `rad distill` checks before loading
    for task in config.tasks:
        check_task_spec(task)
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
    from rad.app.stage_commands import diagnose_and_plot

    settings = config.stage_config("diagnose")
    best = diagnose_and_plot(settings)["results"][str(config.k)]
    return {"diagnosis": str(Path(settings.out) / "diagnosis.json"), "layers": best["best_layers"]}


def run_convert(config: RunConfig, summaries: dict) -> dict:
    from rad.app.convert import convert_folder

    return convert_folder(config.model, config.stage_dir("convert"), summaries["diagnose"]["layers"],
                          config.stage_config("convert"))


def run_distill(config: RunConfig, _) -> dict:
    from rad.distill.distill import distill

    summary = distill(config.stage_config("distill"))
    if config.threads:  # distill set its own thread count; the later stages run with the run's
        import torch

        torch.set_num_threads(config.threads)
    return {"model": str(config.stage_dir("distill")), "final": summary["final"], "steps": summary["steps"]}


def run_eval(config: RunConfig, _) -> dict:
    from rad.eval.accuracy import evaluate
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
            result = evaluate(model, tokenizer, replace(config.stage_config("eval"), task=task))
            atomic_write_jsonl(config.stage_dir("eval") / f"{name}-{result['task']}.jsonl", result.pop("records"))
            results[name][result["task"]] = result
    atomic_write_json(config.out_dir / "eval.json", {"models": results})
    return {name: {task: r["accuracy"] for task, r in tasks.items()} for name, tasks in results.items()}


def run_bench(config: RunConfig, summaries: dict) -> dict:
    from rad.eval.throughput import bench_models

    bench = bench_models([config.teacher or config.model, str(config.stage_dir("distill"))],
                         config.stage_config("bench"), device=config.device)
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
    profile = profile_speculative(model, prompts, config.eval.max_new_tokens, skip=layers, model_cost=False)
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


def run_command(config: RunConfig) -> None:
    run(config, log=lambda line: print(line, flush=True))


COMMANDS = [Command("run", "the whole pipeline: diagnose, convert, distill, eval, bench, report", RunConfig, run_command,
                    skip=SET_BY_RUN)]
