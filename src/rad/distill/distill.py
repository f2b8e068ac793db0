"""`rad distill`: load the hybrid (student) and its teacher, build the rows, train the stages, and
write the distilled hybrid to OUT in the layout `rad convert` writes (so every rad command loads it).

OUT holds the model folder's files, plus metrics.jsonl, distill.json (settings and final figures) and
checkpoints/ (for --resume).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed

from rad.distill import sharding
from rad.distill.budget import StageBudget
from rad.distill.config import DistillConfig
from rad.distill.data import build_rows, check_data_spec, documents
from rad.distill.metrics import read_metrics
from rad.distill.on_policy import OnPolicy
from rad.distill.teacher import TopkCache, check_same_tokenizer
from rad.distill.teacher_data import TeacherWriter
from rad.distill.trainer import Trainer
from rad.errors import RadError
from rad.files import atomic_write_json, folder_lock
from rad.machine import Precision, choose_precision, set_threads
from rad.model.formats import load_config
from rad.model.io import load_model, parse_dtype, resolve_model_dir, save_hybrid
from rad.model.tokenizer import load_tokenizer
from rad.options import require

# Settings a resumed run must share with the run it continues (grad_accum and the process count
# may change: they only change how a step's rows are split).
RESUME_KEYS = ("student", "teacher", "data", "align_steps", "align_lr", "align_warmup", "stage1_steps", "stage1_lr",
               "stage1_warmup", "stage1_on_policy", "stage2_steps", "stage2_lr", "stage2_warmup", "stage2_params",
               "stage2_on_policy", "min_lr_ratio", "seq_len", "pack", "assistant_only", "batch_size", "temperature",
               "on_policy_max_new_tokens", "teacher_temperature", "teacher_max_new_tokens", "teacher_batch",
               "kl_weight", "hidden_weight", "ce_weight", "weight_decay", "max_grad_norm", "topk_cache", "topk", "seed")


def check_config(config: DistillConfig) -> None:
    """Mistakes worth reporting before any model loads (the options' own ranges are checked when the config
    is made)."""
    require(config, "student", "teacher", "data", "out")
    check_data_spec(config.data)
    checkpoints = Path(config.out) / "checkpoints"
    if not config.resume and checkpoints.is_dir() and any(checkpoints.iterdir()):
        raise RadError(f"{checkpoints} holds an earlier run's checkpoints; pass --resume to continue it or choose another --out")


def make_accelerator(config: DistillConfig, precision: Precision | None = None) -> Accelerator:
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        raise RadError("accelerate's FSDP setting is not used by rad: launch with a plain multi-process configuration "
                       "(e.g. configs/accelerate-fsdp.yaml) and pass --fsdp, which shards the student with torch's FSDP2")
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = (precision or choose_precision(config.mixed_precision, device)).name
    state = AcceleratorState._shared_state  # accelerate keeps one state per process, set by the first run
    if state.get("_mixed_precision", name) != name and not torch.distributed.is_initialized():
        # A later run in the same process (a notebook, a test) with another precision: accelerate would
        # refuse it; drop the first run's state (only its precision differs, the process is the same).
        AcceleratorState._reset_state()
    return Accelerator(cpu=device == "cpu", mixed_precision=name)


def report_precision(precision: Precision, quiet: bool) -> None:
    """Say which precision the run trains in and why; warn when a forced one will be slow here."""
    if precision.warning:
        warnings.warn(precision.warning, stacklevel=3)
    if not quiet:
        print(f"rad distill: precision {precision.name} ({precision.reason})", file=sys.stderr)


def distill(config: DistillConfig) -> dict:
    """Run the distillation; returns the summary also written to OUT/distill.json."""
    check_config(config)
    started = time.perf_counter()
    precision = choose_precision(config.mixed_precision, config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    accelerator = make_accelerator(config, precision)
    # One process of a run holds OUT (the others of an accelerate launch write nothing there).
    with folder_lock(config.out, "rad distill") if accelerator.is_main_process else contextlib.nullcontext():
        return train(config, precision, accelerator, started)


def train(config: DistillConfig, precision: Precision, accelerator: Accelerator, started: float) -> dict:
    # After accelerate, which sets its own count for multi-process CPU runs; on a shared CPU, fewer threads avoid
    # OpenMP spin-waiting.
    threads = set_threads(config.threads)
    set_seed(config.seed)
    student_dir, teacher_dir = resolve_model_dir(config.student), resolve_model_dir(config.teacher)
    tokenizer = load_tokenizer(student_dir)
    teacher_dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
    # Loaded on the CPU, then moved: safetensors does not know accelerate's device names ("cpu:0").
    student = load_model(student_dir, dtype=torch.float32).to(accelerator.device).train()
    teacher = load_model(teacher_dir, dtype=teacher_dtype).to(accelerator.device).requires_grad_(False)
    check_same_tokenizer(tokenizer, load_tokenizer(teacher_dir), student.config.vocab_size, teacher.config.vocab_size)
    student.checkpoint_layers = config.gradient_checkpointing
    if config.compile:
        student.compile_layers()
        teacher.compile_layers()

    settings = {key: value for key, value in config.to_dict().items() if key in RESUME_KEYS}
    total_steps = config.total_steps
    total_rows = total_steps * config.batch_size
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    writer = TeacherWriter(teacher, tokenizer, teacher_data_settings(config, teacher_dir), config.teacher_data_cache,
                           progress=config.progress and accelerator.is_main_process)
    with accelerator.main_process_first():  # one process writes the teacher's completions, the others read them
        rows = build_rows(documents(config.data, tokenizer, config.seed, config.assistant_only, writer), total_rows,
                          config.seq_len, config.pack, pad_id)
    cache = None
    if config.topk_cache:
        fingerprint = {key: settings[key] for key in ("teacher", "data", "seq_len", "pack", "assistant_only", "seed")}
        cache = TopkCache(config.topk_cache, {**fingerprint, "teacher": str(teacher_dir.resolve())}, config.topk)
    on_policy = None
    if config.stage1_on_policy > 0 or config.stage2_on_policy > 0:
        on_policy = OnPolicy(config.data, tokenizer, config.seed, config.seq_len, config.pack, pad_id,
                             config.assistant_only, config.on_policy_max_new_tokens)
    budget = StageBudget(started + config.time_budget) if config.time_budget else None
    trainer = Trainer(config, student, teacher, rows, accelerator, settings, cache, on_policy, budget)
    # Said once everything the user gave has been checked (a mistake stays one line on stderr), as training starts.
    report_precision(precision, quiet=not (config.progress and accelerator.is_main_process))
    records = trainer.run()
    if trainer.sized is not None:  # the budget cut the last stage
        total_steps -= trainer.stages[trainer.budgeted].steps - trainer.sized

    summary = {"config": config.to_dict(), "precision": {"name": precision.name, "reason": precision.reason},
               "threads": threads, "steps": total_steps, "budget_sized_steps": trainer.sized,
               "final": records[-1] if records else last_record(Path(config.out)), "seconds": time.perf_counter() - started,
               "processes": accelerator.num_processes, "sharded": trainer.sharded}
    if trainer.sharded:  # every process sends its shards; the main process writes a whole model from them
        weights = sharding.whole_state_dict(student)
        student = load_model(student_dir, dtype=torch.float32)
        student.load_state_dict(weights)
    if accelerator.is_main_process:
        save_student(student, student_dir, Path(config.out))
        atomic_write_json(Path(config.out) / "distill.json", summary)
    accelerator.wait_for_everyone()
    return summary


def teacher_data_settings(config: DistillConfig, teacher_dir: Path) -> dict:
    """What decides the teacher's completions (the cache files' header)."""
    return {"teacher": str(teacher_dir.resolve()), "seed": config.seed, "temperature": config.teacher_temperature,
            "max_new_tokens": config.teacher_max_new_tokens, "batch": config.teacher_batch}


def last_record(out: Path) -> dict | None:
    """The last step's metrics, for a resumed run that had no step left to train (killed while saving the model)."""
    metrics = out / "metrics.jsonl"
    return read_metrics(metrics)[-1] if metrics.is_file() and metrics.stat().st_size else None


def save_student(student, student_dir: Path, out: Path) -> None:
    """The distilled hybrid in the student folder's layout and dtype, written by rad's own hybrid writer
    (with the student's tokenizer files) into a fresh folder, then moved file by file into OUT."""
    tmp = out / ".model-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_hybrid(student.to(parse_dtype(load_config(student_dir).dtype)), tmp, copy_from=student_dir)
    for path in tmp.iterdir():
        os.replace(path, out / path.name)
    tmp.rmdir()
