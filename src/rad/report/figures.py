"""Matplotlib figures for the report, each returned as PNG bytes (Agg backend: no display needed)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def to_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def throughput_and_memory(bench: dict) -> bytes:
    """Decode tokens/s and decoding-state memory vs context, one line per model (batch = the first measured)."""
    fig, (speed, memory) = plt.subplots(1, 2, figsize=(10, 4))
    for entry in bench["models"]:
        batch = entry["points"][0]["batch"]
        points = [p for p in entry["points"] if p["batch"] == batch]
        contexts = [p["context"] for p in points]
        label = f"{entry.get('label', entry['model'])} (batch {batch})"
        speed.plot(contexts, [p["decode_tokens_per_s"] for p in points], marker="o", label=label)
        memory.plot(contexts, [p["state_bytes"] / 2**20 for p in points], marker="o", label=label)
    for ax, ylabel, title in ((speed, "decode throughput (tokens/s)", "Decode speed vs context"),
                              (memory, "KV cache + SSM state (MiB)", "Decoding-state memory vs context")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return to_png(fig)


def accuracy_bars(accuracy: dict[str, dict[str, float]]) -> bytes:
    """Grouped bars: accuracy (%) per task, one bar per model ({model: {task: accuracy}})."""
    models = list(accuracy)
    tasks = sorted({task for scores in accuracy.values() for task in scores})
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, model in enumerate(models):
        xs = [t + i * width for t in range(len(tasks))]
        values = [100 * accuracy[model].get(task, 0.0) for task in tasks]
        bars = ax.bar(xs, values, width, label=model)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks([t + width * (len(models) - 1) / 2 for t in range(len(tasks))], tasks)
    ax.set_ylabel("exact-match accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Held-out accuracy, teacher vs hybrid")
    ax.legend()
    return to_png(fig)


def training_curves(metrics: list[dict], keys=("kl", "loss")) -> bytes:
    """Distillation curves: each logged key vs optimizer step (log scale: losses span decades)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in keys:
        rows = [m for m in metrics if isinstance(m.get(key), (int, float))]
        if rows:
            ax.plot([m["step"] for m in rows], [m[key] for m in rows], label=key)
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title("Distillation")
    ax.grid(alpha=0.3)
    ax.legend()
    return to_png(fig)
