"""One command per pipeline stage: `rad diagnose`, `rad convert`, `rad distill`, `rad eval` and `rad bench`.
Each builds its stage's config from the flags, runs the stage and prints what it found."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from rad.app.command import MODEL_HELP, Command, JsonOutput
from rad.app.convert import ConvertConfig
from rad.distill.config import DistillConfig
from rad.errors import RadError
from rad.machine import describe
from rad.eval.accuracy import EvalConfig
from rad.eval.harness.run import HarnessConfig
from rad.eval.throughput import BenchConfig
from rad.model.io import Placement
from rad.options import nested, option
from rad.search.config import DiagnoseConfig


def diagnose_and_plot(config: DiagnoseConfig) -> dict:
    """The diagnosis, with OUT/diagnosis.png drawn beside OUT/diagnosis.json."""
    from rad.report.diagnosis_plot import plot_diagnosis
    from rad.search.diagnose import diagnose

    diagnosis = diagnose(config)
    plot_diagnosis(diagnosis, Path(config.out) / "diagnosis.png")
    return diagnosis


@dataclass
class DiagnoseCommand(JsonOutput):
    settings: DiagnoseConfig = nested(DiagnoseConfig)


def run_diagnose(command: DiagnoseCommand) -> None:
    from dataclasses import replace

    from rad.report.diagnosis_table import format_table

    out = command.settings.out
    diagnosis = diagnose_and_plot(replace(command.settings, progress=not command.json))
    command.emit(diagnosis, lambda d: f"{format_table(d)}\nwrote {out}/diagnosis.json and {out}/diagnosis.png")


@dataclass
class ConvertCommand(JsonOutput):
    model: str | None = option(None, help=MODEL_HELP, positional=True, required=True)
    out: str | None = option(None, help="new folder for the hybrid", required=True)
    layers: list[int] | None = option(None, help="attention layers to replace, e.g. 1,3,5", low=0)
    diagnosis: str | None = option(None, help="diagnosis.json from `rad diagnose`: replace its best layers for --k")
    k: int | None = option(None, help="with --diagnosis: how many layers to replace", low=1)
    settings: ConvertConfig = nested(ConvertConfig)

    def __post_init__(self):
        super().__post_init__()
        if (self.layers is None) == (self.diagnosis is None):
            raise RadError("give either --layers 1,3,5 or --diagnosis DIR/diagnosis.json --k K")
        if self.diagnosis is not None and self.k is None:
            raise RadError("--diagnosis needs --k: how many attention layers to replace")


def run_convert(command: ConvertCommand) -> None:
    from rad.app.convert import convert_folder, layers_from_diagnosis

    layers = command.layers if command.layers is not None else layers_from_diagnosis(command.diagnosis, command.k)
    result = convert_folder(command.model, command.out, layers, command.settings)
    if not command.json:
        for note in result["notes"]:
            print(f"rad: note: {note}", file=sys.stderr)
    command.emit(result, lambda r: f"wrote {r['out']} ({r['model_type']}): layers {r['layers']} are Mamba2 mixers, "
                                   f"{r['init']} init")


@dataclass
class DistillCommand(JsonOutput):
    settings: DistillConfig = nested(DistillConfig)


def run_distill(command: DistillCommand) -> None:
    from dataclasses import replace

    from accelerate import PartialState

    from rad.distill.distill import distill

    summary = distill(replace(command.settings, progress=not command.json))
    if not PartialState().is_main_process:  # under accelerate launch / torchrun, one process reports
        return
    final = summary["final"]  # None when a resumed run had nothing left to train
    kl = f", final KL {final['kl']:.4f}" if final else ""
    command.emit(summary, lambda s: f"wrote {command.settings.out}: {s['steps']} steps{kl} in {s['seconds']:.0f} s")


@dataclass
class EvalCommand(JsonOutput):
    model: str | None = option(None, help=MODEL_HELP, positional=True, required=True)
    records: str | None = option(None, help="write one JSON line per problem to this file")
    teacher: str | None = option(None, help="ppl tasks: also the KL from this model to the evaluated one per token, "
                                            "and how often their most likely tokens agree")
    settings: EvalConfig = nested(EvalConfig)
    harness: HarnessConfig = nested(HarnessConfig)
    placement: Placement = nested(Placement)

    def __post_init__(self):
        super().__post_init__()
        if self.harness.lm_eval and (self.records or self.teacher):
            raise RadError("--records and --teacher belong to --task; the harness (--lm-eval) keeps its own samples")


def run_eval(command: EvalCommand) -> None:
    from rad.decode.loop import check_positions
    from rad.distill.teacher import check_same_tokenizer
    from rad.eval.accuracy import evaluate
    from rad.eval.tasks import check_task_spec
    from rad.model.formats import load_config
    from rad.files import atomic_write_jsonl
    from rad.model.io import load_model, resolve_model_dir
    from rad.model.tokenizer import load_tokenizer

    if command.harness.lm_eval:
        return run_lm_eval(command)
    check_task_spec(command.settings.task)  # fail before the model loads
    if command.settings.task == "humaneval":
        from rad.eval.isolation import require_isolation

        require_isolation(command.settings.allow_unsandboxed)
    model_dir = resolve_model_dir(command.model)
    check_positions(load_config(model_dir), 1, command.settings.max_new_tokens)  # each prompt's length: when decoded
    tokenizer = load_tokenizer(model_dir)
    teacher = None
    if command.teacher is not None:
        teacher_dir = resolve_model_dir(command.teacher)
        check_same_tokenizer(tokenizer, load_tokenizer(teacher_dir), load_config(model_dir).vocab_size,
                             load_config(teacher_dir).vocab_size)
        teacher = load_model(teacher_dir, command.placement.device, command.placement.dtype)
    model = command.placement.load(model_dir)
    result = evaluate(model, tokenizer, command.settings, teacher)
    if model.compiled_decode is not None:
        result["compile_s"] = model.compiled_decode.compile_seconds
    records = result.pop("records")
    if command.records:
        atomic_write_jsonl(command.records, records)
    command.emit(result, eval_text)


def run_lm_eval(command: EvalCommand) -> None:
    from rad.eval.harness.run import run_harness

    result = run_harness(command.model, command.harness, command.settings.batch_size, command.placement)
    if command.json:
        print(json.dumps({key: result[key] for key in ("results", "groups", "n-samples", "n-shot") if key in result},
                         default=lambda value: value.item()))  # numpy scalars
        return
    from lm_eval.utils import make_table

    print(make_table(result))
    if result.get("groups"):
        print(make_table(result, "groups"))


def eval_text(result: dict) -> str:
    if "perplexity" in result:
        line = f"{result['task']}: perplexity {result['perplexity']:.3f} over {result['tokens']:,} tokens"
        if "kl" in result:
            line += f", KL from the teacher {result['kl']:.4f} per token, top-1 agreement {result['top1_agreement']:.1%}"
        return f"{line} in {result['seconds']:.1f} s"
    lines = [f"  {r['task']}: {r['accuracy']:.1%} ({r['correct']}/{r['n']})" for r in result.get("tasks", {}).values()]
    return "\n".join([*lines, f"{result['task']}: accuracy {result['accuracy']:.1%} ({result['correct']}/{result['n']}) "
                               f"in {result['seconds']:.1f} s"])


@dataclass
class BenchCommand(JsonOutput):
    models: list[str] | None = option(None, help="model folders (or 'demo'); ratios compare each with the first",
                                      positional=True, required=True)
    out: str | None = option(None, help="also write the results to this JSON file")
    settings: BenchConfig = nested(BenchConfig)
    placement: Placement = nested(Placement)


def run_bench(command: BenchCommand) -> None:
    from rad.eval.throughput import bench_models
    from rad.files import atomic_write_json

    def show(model_index, point):
        if not command.json:
            print(f"  [{command.models[model_index]}] context {point['context']:>6}  batch {point['batch']:>3}  "
                  f"decode {point['decode_tokens_per_s']:9.1f} tok/s  TTFT {point['ttft_s'] * 1000:8.1f} ms  "
                  f"memory {point['memory_bytes'] / 2**20:8.1f} MiB (state {point['state_bytes'] / 2**20:.1f} MiB)",
                  flush=True)

    result = bench_models(command.models, command.settings, command.placement.device, command.placement.dtype,
                          progress=show, compile=command.placement.compile)
    if command.out:
        atomic_write_json(command.out, result)
    command.emit(result, bench_ratios)


def mixer_sizes(entry: dict, first: dict) -> str:
    """How large a replaced layer's mixer is against the attention it replaced, when the first model has one."""
    ssm, attention = entry["parameters_per_mixer"].get("ssm"), first["parameters_per_mixer"].get("attention")
    return f"; per replaced layer {ssm:,} SSM weights for {attention:,} of attention" if ssm and attention else ""


def bench_ratios(result: dict) -> str:
    lines = [f"machine: {describe(result['machine'])}"]
    first = result["models"][0]
    for entry in result["models"][1:]:
        lines.append(f"{entry['model']} vs {first['model']}: weights {entry['parameters']:,} vs {first['parameters']:,} "
                     f"({entry['parameters'] / first['parameters']:.3f}x){mixer_sizes(entry, first)}")
        lines += [f"  context {r['context']:>6}  batch {r['batch']:>3}  decode speed-up {r['decode_speedup']:.2f}x"
                  f"  memory ratio {r['memory_ratio']:.2f}" for r in entry["vs_first"]]
    return "\n".join(lines)


COMMANDS = [
    Command("diagnose", "find the redundant attention layers (Bayesian search over skip sets)", DiagnoseCommand,
            run_diagnose),
    Command("convert", "replace attention layers by Mamba2 mixers (a hybrid model folder)", ConvertCommand, run_convert),
    Command("distill", "distil a hybrid from its teacher: SSM mixers first, then optionally end to end", DistillCommand,
            run_distill),
    Command("eval", "accuracy or perplexity on a task, or lm-evaluation-harness tasks (--lm-eval)", EvalCommand,
            run_eval),
    Command("bench", "decode tokens/s, time to first token and memory, per model, context and batch", BenchCommand,
            run_bench),
]
