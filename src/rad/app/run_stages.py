"""What each stage of `rad run` does, in order: diagnose, convert, bench, baseline, distill, eval, report.

The bench and the teacher's accuracy (baseline) come before the distillation: a hybrid decodes as fast before
training as after (training changes its weights' values, not its computation), and the teacher does not change.
So when the run has a time budget, everything but the hybrid's evaluation and the report has run or been
measured by the time the distillation starts, and the distillation gets what is left (its last stage sized to it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from rad.files import atomic_write_json, atomic_write_jsonl

# The time kept for the stages after the distillation, as a multiple of the teacher's evaluation (the hybrid's
# takes about as long), plus the report's few seconds.
EVAL_RESERVE, REPORT_S = 1.5, 10.0


@dataclass
class RunState:
    summaries: dict  # {stage: its summary}, for the stages done so far (in this run or an earlier one)
    deadline: float | None  # time.perf_counter() by which the run should end (its time budget), or None


def run_diagnose(config, state: RunState) -> dict:
    from rad.app.stage_commands import diagnose_and_plot

    settings = config.stage_config("diagnose")
    best = diagnose_and_plot(settings)["results"][str(config.k)]
    return {"diagnosis": str(Path(settings.out) / "diagnosis.json"), "layers": best["best_layers"]}


def run_convert(config, state: RunState) -> dict:
    from rad.app.convert import convert_folder

    return convert_folder(config.model, config.stage_dir("convert"), state.summaries["diagnose"]["layers"],
                          config.stage_config("convert"))


def run_bench(config, state: RunState) -> dict:
    """Teacher vs the converted hybrid (its speed is the distilled hybrid's), and self-speculative decoding."""
    from rad.eval.throughput import bench_models

    bench = bench_models([config.teacher or config.model, str(config.stage_dir("convert"))],
                         config.stage_config("bench"), device=config.device, compile=config.compile)
    for entry, label in zip(bench["models"], ("teacher", "hybrid")):
        entry["label"] = label
    bench["speculative"] = speculative_statistics(config, state.summaries["diagnose"]["layers"])
    atomic_write_json(config.out_dir / "bench.json", bench)
    teacher, hybrid = (entry["points"][-1] for entry in bench["models"])  # the longest context, last batch size
    return {"longest_context": teacher["context"], "batch": teacher["batch"],
            "decode_tokens_per_s": {"teacher": teacher["decode_tokens_per_s"], "hybrid": hybrid["decode_tokens_per_s"]},
            "memory_bytes": {"teacher": teacher["memory_bytes"], "hybrid": hybrid["memory_bytes"]},
            "decode_speedup": hybrid["decode_tokens_per_s"] / teacher["decode_tokens_per_s"],
            "speculative_speedup": bench["speculative"]["speedup_measured"]}


def speculative_statistics(config, layers: list[int]) -> dict:
    """Self-speculative decoding of the teacher with the diagnosed layers skipped, vs plain decoding."""
    from rad.data import math
    from rad.eval.profiling import profile_speculative
    from rad.model.io import load_model, resolve_model_dir
    from rad.model.tokenizer import load_tokenizer

    model_dir = resolve_model_dir(config.teacher or config.model)
    model, tokenizer = load_model(model_dir, config.device, compile=config.compile), load_tokenizer(model_dir)
    prompts = [tokenizer(p.prompt)["input_ids"] for p in math.generate(8, seed=config.seed, split="test")]
    profile = profile_speculative(model, prompts, config.eval.max_new_tokens, skip=layers, model_cost=False)
    return {"skip": layers, **profile.to_dict()}


def evaluate_model(config, name: str, folder: str) -> dict:
    """{task: result} of one model on the run's tasks; every item's record in DIR/eval/<name>-<task>.jsonl."""
    from rad.eval.accuracy import evaluate
    from rad.model.io import load_model, resolve_model_dir
    from rad.model.tokenizer import load_tokenizer

    model_dir = resolve_model_dir(folder)
    model, tokenizer = load_model(model_dir, config.device, compile=config.compile), load_tokenizer(model_dir)
    results = {}
    for task in config.tasks:
        result = evaluate(model, tokenizer, replace(config.stage_config("eval"), task=task))
        atomic_write_jsonl(config.stage_dir("eval") / f"{name}-{result['task']}.jsonl", result.pop("records"))
        results[result["task"]] = result
    return results


def run_baseline(config, state: RunState) -> dict:
    """The teacher's accuracy (the hybrid's is the eval stage's)."""
    return {"teacher": evaluate_model(config, "teacher", config.teacher or config.model)}


def run_distill(config, state: RunState) -> dict:
    from rad.distill.distill import distill
    from rad.machine import set_threads

    settings = config.stage_config("distill")
    if state.deadline is not None:
        reserve = EVAL_RESERVE * state.summaries["baseline"]["seconds"] + REPORT_S
        settings = replace(settings, time_budget=max(state.deadline - time.perf_counter() - reserve, 1.0))
    summary = distill(settings)
    set_threads(config.threads)  # distill set its own thread count; the later stages run with the run's
    return {"model": str(config.stage_dir("distill")), "final": summary["final"], "steps": summary["steps"],
            "time_budget": settings.time_budget, "precision": summary["precision"]}


def run_eval(config, state: RunState) -> dict:
    teacher = state.summaries["baseline"]["teacher"]
    results = {"teacher": teacher, "hybrid": evaluate_model(config, "hybrid", str(config.stage_dir("distill")))}
    atomic_write_json(config.out_dir / "eval.json", {"models": results})
    return {name: {task: r["accuracy"] for task, r in tasks.items()} for name, tasks in results.items()}


def run_report(config, state: RunState) -> dict:
    from rad.report.build import ReportInputs, build_report

    md, html = build_report(config.out_dir, ReportInputs(
        diagnosis=config.stage_dir("diagnose") / "diagnosis.json", metrics=config.stage_dir("distill") / "metrics.jsonl",
        evaluation=config.out_dir / "eval.json", bench=config.out_dir / "bench.json",
        price_per_hour=config.price_per_hour), title=f"rad: {config.model}, k = {config.k}")
    return {"markdown": str(md), "html": str(html)}


STAGE_FUNCTIONS = {"diagnose": run_diagnose, "convert": run_convert, "bench": run_bench, "baseline": run_baseline,
                   "distill": run_distill, "eval": run_eval, "report": run_report}
