"""`rad demo`: the whole pipeline on the model shipped in the package, sized for a laptop CPU,
ending with a summary table on the terminal."""

from __future__ import annotations

from dataclasses import dataclass

from rad.app.command import Command
from rad.app.convert import ConvertConfig
from rad.app.pipeline import RunConfig, run
from rad.distill.config import DistillConfig
from rad.eval.accuracy import EvalConfig
from rad.eval.throughput import BenchConfig
from rad.options import Options, option
from rad.search.config import DiagnoseConfig


# The whole demo within 10 minutes on any 2-core machine of this project's kind: the run's time budget, less the
# start-up before the run begins (imports, ~7 s) and a margin. Distillation's stage 2 takes what the rest leaves
# (at most its 150 steps), so on a slower CPU the demo trains fewer steps and its accuracies are lower.
DEMO_BUDGET_S = 570


def demo_config(out: str) -> RunConfig:
    """The pipeline on the shipped model, sized for a laptop CPU (figures per machine: docs/results.md)."""
    return RunConfig(
        model="demo", k=2, out=out, time_budget=DEMO_BUDGET_S,
        diagnose=DiagnoseConfig(trials=20, prompts=["task:math", "task:code"], n_prompts=4, max_new_tokens=24),
        convert=ConvertConfig(),
        # A short stage 1 starts the mixers (from the rad init they output 0), then stage 2 lets the whole model
        # adapt around them. Measured on layers [1, 5] (math accuracy on 100 held-out problems, teacher 88%), 50 + 150
        # steps of 8 rows: 64% with the KL at temperature 1 over every token; 69% with the loss on task completions
        # only; then at temperature 2, 3, 4, 6: 75%, 77%, 78%, 69%. At temperature 4, on 200 other problems (teacher
        # 91%): 72.5% with 8 rows per step, 79% with 16 rows, 78% with 8 rows and 300 stage-2 steps: the data, not the
        # step count, was short. 16 rows take 1.2x the time of 8 when the distillation has both cores. Training gains
        # from every free core: threads "auto".
        distill=DistillConfig(stage1_steps=50, stage1_lr=5e-3, stage1_warmup=5, stage2_steps=150, stage2_lr=1e-3,
                              batch_size=16, seq_len=256, temperature=4.0, assistant_only=True, threads="auto"),
        eval=EvalConfig(n=100, max_new_tokens=160, batch_size=32),
        # The hybrid gains where attention is long: at 4096 tokens ~1.08x per step, which this shared CPU's noise
        # covered (0.97-1.04x measured); at 8192 1.02-1.5x. Each 8192-token prefill takes ~8 s, hence 2 repetitions
        # of 64 tokens (the bench took 130 s of a 14-minute demo with 3 of 128).
        bench=BenchConfig(contexts=[256, 2048, 8192], batch_sizes=[1], new_tokens=64, reps=2),
        threads=1,  # decoding a 6.5M-parameter model gains little from a second thread and stalls when the core is busy
    )


def summary_table(summaries: dict) -> str:
    """The figures a newcomer wants first, as aligned text."""
    diagnose, evaluation, bench = summaries["diagnose"], summaries["eval"], summaries["bench"]
    lines = [f"redundant attention layers found      {diagnose['layers']}"]
    for task in evaluation["teacher"]:
        teacher, hybrid = evaluation["teacher"][task], evaluation["hybrid"][task]
        relative = f" ({hybrid / teacher:.0%} of teacher)" if teacher else ""
        lines.append(f"{task + ' accuracy (teacher -> hybrid)':<37} {teacher:.1%} -> {hybrid:.1%}{relative}")
    speed, memory = bench["decode_tokens_per_s"], bench["memory_bytes"]
    lines.append(f"{'decode tokens/s at context ' + str(bench['longest_context']):<37} "
                 f"{speed['teacher']:.1f} -> {speed['hybrid']:.1f} ({bench['decode_speedup']:.2f}x)")
    lines.append(f"{'memory (weights + state), MiB':<37} {memory['teacher'] / 2**20:.1f} -> {memory['hybrid'] / 2**20:.1f}")
    if bench.get("speculative_speedup"):
        lines.append(f"self-speculative speed-up (teacher)   {bench['speculative_speedup']:.2f}x")
    width = max(len(line) for line in lines)
    return "\n".join(["=" * width, *lines, "=" * width])


@dataclass
class DemoCommand(Options):
    out: str = option("rad-demo", help="run folder")


def run_demo(command: DemoCommand) -> None:
    summaries = run(demo_config(command.out), log=lambda line: print(line, flush=True))
    print(summary_table(summaries))


COMMANDS = [Command("demo", "rad run on the shipped demo model, sized for a laptop CPU", DemoCommand, run_demo)]
