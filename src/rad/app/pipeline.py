"""`rad run`: diagnose → convert → bench → baseline → distill → eval → report, each stage's artifact in one
folder (what each stage does: rad.app.run_stages).

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
from rad.app.run_stages import STAGE_FUNCTIONS, RunState
from rad.distill.config import DATA_HELP, DistillConfig
from rad.errors import RadError
from rad.eval.accuracy import EvalConfig
from rad.eval.throughput import BenchConfig
from rad.files import atomic_write_json, folder_lock
from rad.machine import THREADS_HELP, set_threads
from rad.options import Options, nested, option, seed_option
from rad.search.config import DiagnoseConfig

STAGES = ("diagnose", "convert", "bench", "baseline", "distill", "eval", "report")
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
    seed: int = seed_option("seed of every stage")
    device: str = option("cpu", help="torch device of every stage")
    compile: bool = option(False, help="compiled decoding in the diagnosis, evaluation and benchmark")
    threads: int | str = option(0, help=f"{THREADS_HELP} (1 on a busy machine)", low=0, words=("auto",))
    time_budget: float | None = option(None, help="seconds the whole run may take: the distillation's last stage is "
                                                  "sized to what the other stages leave", above=0)
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
                           placement=replace(self.diagnose.placement, device=self.device, compile=self.compile),
                           threads=self.threads,
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
    "diagnose": ("model", "out", "ks", "seed", "placement.device", "placement.compile", "threads", "resume"),
    "convert": ("seed",),
    "distill": ("student", "teacher", "data", "out", "seed", "device", "resume", "time_budget"),
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
    from rad.model.hybrid import ssm_config_for
    from rad.model.io import resolve_model_dir

    model_config = load_config(resolve_model_dir(config.model))
    attention = model_config.attention_layers
    if not 1 <= config.k < len(attention):
        raise RadError(f"--k must be between 1 and {len(attention) - 1} (the model has {len(attention)} attention layers), got {config.k}")
    if config.teacher is not None:
        load_config(resolve_model_dir(config.teacher))
    if model_config.ssm is None:  # the mixer size fits the model's attention (a hybrid keeps its own)
        ssm_config_for(model_config, size=config.convert.size)
    check_config(config.stage_config("distill"))  # data, and what else `rad distill` checks before loading
    for task in config.tasks:
        check_task_spec(task)
        if task.startswith("ppl:"):  # the report compares exact-match accuracy; it has no perplexity section
            raise RadError(f"--tasks {task}: rad run evaluates exact-match tasks; measure perplexity with "
                           f"rad eval HYBRID --task {task} --teacher MODEL")
    atomic_write_text(config.out_dir / "stages" / ".writable", "")  # fails clearly on an unwritable --out


def run(config: RunConfig, log=print) -> dict:
    """Run (or resume) every stage; return {stage: its summary}."""
    check_run(config)
    with folder_lock(config.out_dir, "rad run"):
        return run_stages(config, log)


def run_stages(config: RunConfig, log) -> dict:
    set_threads(config.threads)
    atomic_write_json(config.out_dir / "run.json", asdict(config))
    started = time.perf_counter()
    state = RunState({}, started + config.time_budget if config.time_budget else None)
    summaries = state.summaries
    for number, stage in enumerate(STAGES, start=1):
        done = marker(config, stage)
        if done.is_file():
            summaries[stage] = json.loads(done.read_text())
            log(f"[{number}/{len(STAGES)}] {stage}: already done, skipped")
            continue
        log(f"[{number}/{len(STAGES)}] {stage} ... ({time.perf_counter() - started:.0f} s into the run)")
        stage_started = time.perf_counter()
        summary = STAGE_FUNCTIONS[stage](config, state)
        summary["seconds"] = time.perf_counter() - stage_started
        atomic_write_json(done, summary)
        summaries[stage] = summary
    log(f"done in {time.perf_counter() - started:.0f} s: {config.out_dir / 'report.html'}")
    return summaries


def run_command(config: RunConfig) -> None:
    run(config, log=lambda line: print(line, flush=True))


COMMANDS = [Command("run", "the whole pipeline: diagnose, convert, distill, eval, bench, report", RunConfig, run_command,
                    skip=SET_BY_RUN)]
