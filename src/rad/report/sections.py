"""Report sections built from a run's artifacts (each function takes the parsed artifact)."""

from __future__ import annotations

from rad.report import figures
from rad.report.document import Figure, Section, Table


def cost_per_million(tokens_per_s: float, price_per_hour: float) -> float:
    """USD per million generated tokens on a machine rented at `price_per_hour`."""
    return price_per_hour / 3600.0 / tokens_per_s * 1e6


def diagnosis_section(diagnosis: dict, picture: bytes | None) -> Section:
    """The chosen layers beside the baselines on the same objective, and the redundancy map + search curve."""
    rows = []
    for k, result in diagnosis["results"].items():
        rows.append([k, "RAD (Bayesian search)", str(result["best_layers"]), f"{result['value']:.3f}",
                     f"{result['acceptance_rate']:.2f}"])
        for name, baseline in result["baselines"].items():
            rows.append([k, name.replace("_", " "), str(baseline["skip"]), f"{baseline['value']:.3f}",
                         f"{baseline['acceptance_rate']:.2f}" if baseline.get("acceptance_rate") is not None else "n/a"])
    blocks = [
        f"Self-speculative decoding of the {diagnosis['num_layers']}-layer model with the attention of a set of "
        "layers skipped in the draft; the objective is the expected speed-up over plain decoding "
        f"({diagnosis['config']['objective']}). The layers in the best set are the redundant ones.",
        Table(["k", "selection", "layers", "objective (speed-up)", "acceptance"], rows),
    ]
    if picture:
        blocks.append(Figure("diagnosis", picture, "Per-layer redundancy (left) and the objective per search trial (right)."))
    return Section("Which attention layers are redundant", blocks)


def accuracy_section(evaluation: dict) -> Section:
    """evaluation: {"models": {name: {task: {"accuracy", "n", ...}}}}, the first model the teacher."""
    models = evaluation["models"]
    names = list(models)
    tasks = sorted({task for scores in models.values() for task in scores})
    teacher = names[0]
    rows = []
    for task in tasks:
        base = models[teacher].get(task, {}).get("accuracy")
        for name in names:
            result = models[name].get(task)
            if result is None:
                continue
            relative = f"{result['accuracy'] / base:.1%}" if base else "n/a"
            rows.append([task, name, f"{result['accuracy']:.1%}", f"{result['correct']}/{result['n']}", relative])
    accuracy = {name: {task: r["accuracy"] for task, r in scores.items()} for name, scores in models.items()}
    return Section("Accuracy: teacher vs hybrid", [
        "Greedy generation on held-out problems; the final answer is extracted and compared exactly.",
        Table(["task", "model", "accuracy", "correct", f"relative to {teacher}"], rows),
        Figure("accuracy", figures.accuracy_bars(accuracy), "Exact-match accuracy per task (%)."),
    ])


def throughput_section(bench: dict) -> Section:
    rows = []
    for entry in bench["models"]:
        for p in entry["points"]:
            rows.append([entry.get("label", entry["model"]), str(p["context"]), str(p["batch"]),
                         f"{p['decode_tokens_per_s']:.1f}", f"{p['ttft_s'] * 1000:.1f}",
                         f"{p['state_bytes'] / 2**20:.2f}", f"{p['memory_bytes'] / 2**20:.1f}"])
    blocks = [
        f"Measured in one run on {bench['device']} ({bench['dtype']}), models taking turns, median of "
        f"{bench['reps']} repetitions, {bench['new_tokens']} new tokens per row.",
        Table(["model", "context", "batch", "decode tokens/s", "TTFT (ms)", "state (MiB)", "weights + state (MiB)"], rows),
        Figure("throughput", figures.throughput_and_memory(bench), "Decode throughput and decoding-state memory vs context."),
    ]
    spec = bench.get("speculative")
    if spec:
        measured = f"{spec['speedup_measured']:.2f}×" if spec.get("speedup_measured") else "n/a"
        blocks.append(f"Self-speculative decoding of the teacher with the attention of layers {spec['skip']} skipped in "
                      f"the draft (training-free, output identical to greedy): acceptance {spec['acceptance_rate']:.2f}, "
                      f"{spec['mean_accepted']:.2f} drafts accepted per step, measured speed-up {measured} over plain decoding.")
    return Section("Decode throughput and memory", blocks)


def cost_section(bench: dict, price_per_hour: float) -> Section:
    """Cost per million generated tokens, teacher (first model) vs each other model, at every point."""
    teacher = bench["models"][0]
    rows = []
    for entry in bench["models"][1:]:
        for base, point in zip(teacher["points"], entry["points"]):
            cost_t = cost_per_million(base["decode_tokens_per_s"], price_per_hour)
            cost_h = cost_per_million(point["decode_tokens_per_s"], price_per_hour)
            rows.append([str(point["context"]), str(point["batch"]), f"{base['decode_tokens_per_s']:.1f}",
                         f"{point['decode_tokens_per_s']:.1f}", f"${cost_t:,.2f}", f"${cost_h:,.2f}",
                         f"{1 - cost_h / cost_t:+.1%}"])
    return Section("Cost", [
        f"At ${price_per_hour:.2f} per machine-hour: cost per million generated tokens = price per hour / "
        "(tokens/s × 3600) × 10⁶. A positive saving means the hybrid is cheaper.",
        Table(["context", "batch", "teacher tokens/s", "hybrid tokens/s", "teacher $/M tokens",
               "hybrid $/M tokens", "saving"], rows),
    ])


def distillation_section(metrics: list[dict]) -> Section:
    first, last = metrics[0], metrics[-1]
    keys = [k for k in ("kl", "loss") if k in last]
    summary = ", ".join(f"{k} {first[k]:.4f} → {last[k]:.4f}" for k in keys)
    return Section("Distillation", [
        f"{last['step']} optimizer steps; {summary}.",
        Figure("distillation", figures.training_curves(metrics, keys), "Distillation loss per optimizer step."),
    ])
