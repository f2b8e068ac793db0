"""Selection comparison: which attention layers to replace, at the same distillation budget.

From one source model, hybrids with the same k replaced layers (`rad` init) are distilled with the same data, steps
and settings: layers chosen by RAD's diagnosis (`rad`), by uniform interval placement, by the lowest block influence
and the lowest leave-one-out KL (both scored by the diagnosis), and at random. Printed: each run's training-KL curve,
the steps it takes to reach the uniform run's final KL (on a moving average, since single steps are noisy) and the
ratio; held-out KL, top-1 agreement and perplexity (the text set's evaluation pages) every --eval-every steps; and
held-out accuracy (the chat suite, or math and code for the shipped model) beside the teacher's.

    python benchmarks/distill_compare.py --model smollm2 --diagnosis runs/diag/diagnosis.json --k 12 \\
        --data text:python-docs --steps 60 --batch-size 4 --out runs/compare
    python benchmarks/distill_compare.py ... --only rad,block_influence   # part of the runs (e.g. two at once)
    python benchmarks/distill_compare.py ... --extra kl_search=3,10,11,...  # a selection found elsewhere

Runs are distilled once (a run whose distill.json exists is reused, an interrupted one resumes); held-out figures are
kept in each run's heldout.json. Results also go to OUT/compare.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from rad.app.convert import convert_folder, layers_from_diagnosis
from rad.data import chat_tasks, text_set
from rad.distill import checkpoint as ckpt
from rad.distill.config import DistillConfig
from rad.distill.distill import distill
from rad.distill.metrics import read_metrics
from rad.eval.accuracy import EvalConfig, evaluate
from rad.eval.perplexity import score_texts
from rad.model.formats import load_config
from rad.model.io import load_model, resolve_model_dir
from rad.model.tokenizer import load_tokenizer
from rad.search.baselines import lowest_scores, random_sets, uniform_placement
from rad.search.schema import read_diagnosis

SELECTIONS = ("rad", "uniform", "block_influence", "loo_kl", "random")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="source model folder, 'demo' or 'smollm2' (also the teacher)")
    p.add_argument("--k", type=int, required=True, help="attention layers replaced in every hybrid")
    p.add_argument("--diagnosis", required=True, help="diagnosis.json from `rad diagnose` with a result for --k")
    p.add_argument("--only", help=f"comma-separated selections to run now (of {', '.join(SELECTIONS)} and the extra)")
    p.add_argument("--extra", action="append", default=[], metavar="NAME=L1,L2,...",
                   help="another selection, by hand (e.g. from benchmarks/select_by_kl.py); repeatable")
    p.add_argument("--steps", type=int, default=150, help="stage-1 steps of every run")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--data", default="text:python-docs")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--window", type=int, default=10, help="moving-average window for steps-to-KL")
    p.add_argument("--eval-every", type=int, default=15, help="held-out figures every N steps (0: only at the end)")
    p.add_argument("--eval-pages", type=int, default=8, help="held-out pages of the text set (0: none)")
    p.add_argument("--eval-chars", type=int, default=2000, help="characters of each held-out page")
    p.add_argument("--eval-n", type=int, default=50, help="held-out problems per task (0: skip accuracy)")
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="for the random selection and the data")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args()


def selections(args: argparse.Namespace, num_layers: int) -> dict[str, list[int]]:
    diagnosis = read_diagnosis(args.diagnosis)
    layers = range(num_layers)
    chosen = {"rad": sorted(layers_from_diagnosis(args.diagnosis, args.k)), "uniform": list(uniform_placement(layers, args.k))}
    for name in ("block_influence", "loo_kl"):
        scores = {int(layer): value for layer, value in (diagnosis.get(name) or {}).items()}
        if scores:
            chosen[name] = list(lowest_scores(scores, list(layers), args.k))
    # The random selection is drawn among the sets that are none of the others.
    chosen["random"] = next(list(s) for s in random_sets(layers, args.k, 10, args.seed) if list(s) not in chosen.values())
    for extra in args.extra:
        name, _, listed = extra.partition("=")
        chosen[name] = sorted(int(layer) for layer in listed.split(","))
        if len(chosen[name]) != args.k:
            raise SystemExit(f"--extra {name} lists {len(chosen[name])} layers, not --k {args.k}")
    return chosen


def moving_average(values: list[float], window: int) -> list[float]:
    return [sum(values[max(0, i - window + 1) : i + 1]) / (i - max(0, i - window + 1) + 1) for i in range(len(values))]


def steps_to_reach(curve: list[float], target: float) -> int | None:
    """The step (1-based) from which the moving-average KL stays at or below `target`; None if it ends above.
    ("Stays": with `rad` init the KL first rises while Adam moves the zero-initialised in_proj.)"""
    if curve[-1] > target:
        return None
    above = [i for i, value in enumerate(curve) if value > target]
    return above[-1] + 2 if above else 1


def distill_run(args: argparse.Namespace, folder: Path, layers: list[int]) -> dict:
    if not (folder / "hybrid" / "config.json").exists():
        convert_folder(args.model, folder / "hybrid", layers)
    out = folder / "distilled"
    if not (out / "distill.json").exists():
        save_every = args.eval_every or args.steps
        config = DistillConfig(
            student=str(folder / "hybrid"), teacher=str(args.model), data=args.data, out=str(out),
            stage1_steps=args.steps, stage1_lr=args.lr, stage1_warmup=args.warmup, seq_len=args.seq_len,
            batch_size=args.batch_size, save_every=save_every, keep_checkpoints=args.steps // save_every + 1,
            seed=args.seed, threads=args.threads, mixed_precision="no", progress=False,
            resume=(out / "checkpoints").exists())  # fmt: skip
        distill(config)
    summary = json.loads((out / "distill.json").read_text())
    return {"layers": layers, "kl": [r["kl"] for r in read_metrics(out / "metrics.jsonl")], "seconds": summary["seconds"]}


def heldout_texts(args: argparse.Namespace) -> list[tuple[str, str]]:
    return [(path, text[: args.eval_chars]) for path, text in text_set.documents("eval")[: args.eval_pages]]


def heldout_curve(args: argparse.Namespace, folder: Path, teacher, tokenizer) -> dict[int, dict]:
    """{step: held-out figures} at the start and at each kept checkpoint (cached in heldout.json)."""
    cache = folder / "heldout.json"
    if cache.exists():
        return {int(step): figures for step, figures in json.loads(cache.read_text()).items()}
    texts, student = heldout_texts(args), load_model(folder / "hybrid")
    curve = {0: score_texts(student, tokenizer, texts, 512, 512, teacher)}
    for step, path in ckpt.checkpoints(folder / "distilled" / "checkpoints"):
        ckpt.restore_model(path, student)
        curve[step] = score_texts(student, tokenizer, texts, 512, 512, teacher)
    cache.write_text(json.dumps(curve, indent=1))
    return curve


def accuracy(args: argparse.Namespace, model_dir: Path, cache: Path) -> dict[str, float]:
    """Held-out accuracy per task (cached in `cache`)."""
    if args.eval_n == 0:
        return {}
    if cache.exists():
        return json.loads(cache.read_text())
    model, tokenizer = load_model(model_dir), load_tokenizer(resolve_model_dir(model_dir))
    tasks = ("math", "code") if str(args.model) == "demo" else [f"smol:{name}" for name in chat_tasks.SUITE]
    config = {"n": args.eval_n, "max_new_tokens": 160 if str(args.model) == "demo" else 32, "batch_size": args.eval_batch_size}
    result = {task: evaluate(model, tokenizer, EvalConfig(task=task, **config))["accuracy"] for task in tasks}
    cache.write_text(json.dumps(result))
    return result


def print_kl(args: argparse.Namespace, results: dict) -> float:
    """The training-KL table and curves; returns the uniform run's final (moving-average) KL."""
    uniform_final = moving_average(results["uniform"]["kl"], args.window)[-1]
    uniform_steps = steps_to_reach(moving_average(results["uniform"]["kl"], args.window), uniform_final)
    print(f"training KL (moving average over {args.window} steps)")
    print(f"{'selection':>15} {'layers':>40} {'KL@1':>7} {'KL@end':>7} {'steps to uniform KL':>20} {'ratio':>6} {'seconds':>8}")
    for name, r in results.items():
        curve = moving_average(r["kl"], args.window)
        r["steps_to_uniform_final"] = steps = steps_to_reach(curve, uniform_final)
        r["ratio_vs_uniform"] = ratio = steps / uniform_steps if steps else None
        print(f"{name:>15} {str(r['layers']):>40} {r['kl'][0]:7.4f} {curve[-1]:7.4f} {str(steps):>20} "
              f"{f'{ratio:.2f}' if ratio else '-':>6} {r['seconds']:8.0f}")
    return uniform_final


def print_heldout(results: dict, teacher_ppl: float | None) -> None:
    print(f"held-out text (KL per token / top-1 agreement / perplexity; teacher's perplexity {teacher_ppl:.2f})")
    for name, r in results.items():
        points = " ".join(f"@{step}: {f['kl']:.3f}/{f['top1_agreement']:.1%}/{f['perplexity']:.1f}"
                          for step, f in sorted(r["heldout"].items()))
        print(f"{name:>15}: {points}")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    args.model = resolve_model_dir(args.model)
    chosen = selections(args, load_config(args.model).num_layers)
    only = args.only.split(",") if args.only else list(chosen)
    results = {name: distill_run(args, args.out / name, layers) for name, layers in chosen.items() if name in only}
    if args.only:
        return  # a part of the comparison: the run without --only prints the tables
    uniform_final = print_kl(args, results)
    teacher, tokenizer = load_model(args.model), load_tokenizer(args.model)
    teacher_ppl = score_texts(teacher, tokenizer, heldout_texts(args), 512, 512)["perplexity"] if args.eval_pages else None
    for name, r in results.items():
        r["heldout"] = heldout_curve(args, args.out / name, teacher, tokenizer) if args.eval_pages else {}
    if args.eval_pages:
        print_heldout(results, teacher_ppl)
    teacher_accuracy = accuracy(args, args.model, args.out / "teacher-accuracy.json")
    print(f"held-out accuracy, {args.eval_n} problems per task; teacher: {teacher_accuracy}")
    for name, r in results.items():
        r["accuracy"] = accuracy(args, args.out / name / "distilled", args.out / name / "accuracy.json")
        print(f"{name:>15}: " + ", ".join(f"{t} {a:.1%} ({a / teacher_accuracy[t]:.0%} of teacher)"
                                          if teacher_accuracy.get(t) else f"{t} {a:.1%}" for t, a in r["accuracy"].items()))
    (args.out / "compare.json").write_text(json.dumps(
        {"teacher_accuracy": teacher_accuracy, "teacher_perplexity": teacher_ppl, "uniform_final_kl": uniform_final,
         "runs": results, "settings": vars(args)}, default=str, indent=1))


if __name__ == "__main__":
    main()
