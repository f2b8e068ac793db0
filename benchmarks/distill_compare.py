"""Selection comparison: which attention layers to replace, at the same distillation budget.

From one source model, three hybrids with the same k replaced layers (`rad` init) are distilled with the
same data, steps and settings: layers chosen by RAD's diagnosis, by uniform interval placement, and at
random. Printed: each run's KL curve, the steps it takes to reach the uniform run's final KL (on a
moving average, since single steps are noisy), and held-out accuracy on math and code beside the teacher's.

    python benchmarks/distill_compare.py --model demo --diagnosis runs/diag/diagnosis.json --k 4 \
        --steps 150 --out runs/compare
    python benchmarks/distill_compare.py --model demo --rad-layers 2,3,5,6 --k 4 ...   # layers given by hand

Results also go to OUT/compare.json; each run's folder (hybrid, distilled model, metrics.jsonl) stays in OUT.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from rad.distill.config import DistillConfig
from rad.distill.distill import distill
from rad.distill.metrics import read_metrics
from rad.eval.accuracy import EvalConfig, evaluate
from rad.model.formats import load_config
from rad.app.convert import convert_folder, layers_from_diagnosis
from rad.model.io import load_model, resolve_model_dir
from rad.model.tokenizer import load_tokenizer
from rad.search.baselines import random_sets, uniform_placement

TASKS = ("math", "code")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="source model folder or 'demo' (also the teacher)")
    p.add_argument("--k", type=int, required=True, help="attention layers replaced in every hybrid")
    p.add_argument("--diagnosis", help="diagnosis.json from `rad diagnose` (RAD's selection for --k)")
    p.add_argument("--rad-layers", help="RAD's selection given by hand, e.g. 2,3,5,6 (when no diagnosis exists)")
    p.add_argument("--steps", type=int, default=150, help="stage-1 steps of every run")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--data", default="task:math+code")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--window", type=int, default=10, help="moving-average window for steps-to-KL")
    p.add_argument("--eval-n", type=int, default=100, help="held-out problems per task (0: skip accuracy)")
    p.add_argument("--seed", type=int, default=0, help="for the random selection and the data")
    p.add_argument("--eval-batch-size", type=int, default=16)
    p.add_argument("--device", help="cpu | cuda (default: cuda if available); on a GPU distillation runs in bf16")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args()


def selections(args: argparse.Namespace, num_layers: int) -> dict[str, list[int]]:
    if (args.diagnosis is None) == (args.rad_layers is None):
        raise SystemExit("give either --diagnosis or --rad-layers")
    rad = layers_from_diagnosis(args.diagnosis, args.k) if args.diagnosis else [int(x) for x in args.rad_layers.split(",")]
    layers = range(num_layers)
    uniform = list(uniform_placement(layers, args.k))
    # The random selection is drawn among the sets that are neither of the other two.
    random = next(list(s) for s in random_sets(layers, args.k, 3, args.seed) if list(s) not in (sorted(rad), uniform))
    return {"rad": sorted(rad), "uniform": uniform, "random": random}


def moving_average(values: list[float], window: int) -> list[float]:
    return [sum(values[max(0, i - window + 1) : i + 1]) / (i - max(0, i - window + 1) + 1) for i in range(len(values))]


def steps_to_reach(curve: list[float], target: float) -> int | None:
    """The step (1-based) from which the moving-average KL stays at or below `target`; None if it ends above.
    ("Stays": with `rad` init the KL first rises while Adam moves the zero-initialised in_proj.)"""
    if curve[-1] > target:
        return None
    above = [i for i, value in enumerate(curve) if value > target]
    return above[-1] + 2 if above else 1


def accuracy(args: argparse.Namespace, model_dir) -> dict[str, float]:
    if args.eval_n == 0:
        return {}
    model, tokenizer = load_model(model_dir, device=args.device), load_tokenizer(resolve_model_dir(model_dir))
    config = {"n": args.eval_n, "max_new_tokens": 160, "batch_size": args.eval_batch_size}
    return {task: evaluate(model, tokenizer, EvalConfig(task=task, **config))["accuracy"] for task in TASKS}


def run(args: argparse.Namespace, name: str, layers: list[int]) -> dict:
    folder = args.out / name
    if not (folder / "hybrid").exists():
        convert_folder(args.model, folder / "hybrid", layers)
    config = DistillConfig(
        student=str(folder / "hybrid"), teacher=str(args.model), data=args.data, out=str(folder / "distilled"),
        stage1_steps=args.steps, stage1_lr=args.lr, stage1_warmup=args.warmup,
        seq_len=args.seq_len, batch_size=args.batch_size, save_every=25, seed=args.seed, threads=args.threads,
        device=args.device, progress=False, resume=(folder / "distilled" / "checkpoints").exists(),
    )  # fmt: skip
    summary = distill(config)
    kl = [r["kl"] for r in read_metrics(folder / "distilled" / "metrics.jsonl")]
    return {"layers": layers, "kl": kl, "seconds": summary["seconds"]}


def print_kl(args: argparse.Namespace, results: dict) -> float:
    """The KL table and curves; returns the uniform run's final (moving-average) KL."""
    uniform_final = moving_average(results["uniform"]["kl"], args.window)[-1]
    uniform_steps = steps_to_reach(moving_average(results["uniform"]["kl"], args.window), uniform_final)
    print(f"{'selection':>9} {'layers':>14} {'KL@1':>8} {'KL@end':>8} {'steps to uniform KL':>20} {'ratio':>6} {'seconds':>8}")
    for name, r in results.items():
        curve = moving_average(r["kl"], args.window)
        r["steps_to_uniform_final"] = steps = steps_to_reach(curve, uniform_final)
        r["ratio_vs_uniform"] = ratio = steps / uniform_steps if steps else None
        print(f"{name:>9} {str(r['layers']):>14} {r['kl'][0]:8.4f} {curve[-1]:8.4f} {str(steps):>20} "
              f"{f'{ratio:.2f}' if ratio else '-':>6} {r['seconds']:8.0f}")
    marks = sorted({0, *range(args.window - 1, args.steps, max(1, args.steps // 10)), args.steps - 1})
    print("KL curves (moving average) at steps", [m + 1 for m in marks])
    for name, r in results.items():
        curve = moving_average(r["kl"], args.window)
        print(f"{name:>9}: " + " ".join(f"{curve[m]:.4f}" for m in marks if m < len(curve)))
    return uniform_final


def main() -> None:
    args = parse_args()
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    chosen = selections(args, load_config(resolve_model_dir(args.model)).num_layers)
    results = {name: run(args, name, layers) for name, layers in chosen.items()}
    uniform_final = print_kl(args, results)  # before the (slower) accuracy runs
    teacher = accuracy(args, args.model)
    print(f"held-out accuracy, {args.eval_n} problems per task; teacher: {teacher}")
    for name, r in results.items():
        r["accuracy"] = accuracy(args, args.out / name / "distilled")
        print(f"{name:>9}: " + ", ".join(f"{t} {a:.1%} ({a / teacher[t]:.0%} of teacher)" if teacher.get(t) else f"{t} {a:.1%}"
                                         for t, a in r["accuracy"].items()))
    (args.out / "compare.json").write_text(json.dumps({"teacher_accuracy": teacher, "uniform_final_kl": uniform_final,
                                                       "runs": results, "settings": vars(args)}, default=str, indent=1))


if __name__ == "__main__":
    main()
