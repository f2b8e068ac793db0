"""OUT/diagnosis.png: per-layer redundancy (one bar group per k) and the objective over the trials."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402



def plot_diagnosis(diagnosis: dict, path: Path) -> Path:
    results = diagnosis["results"]
    layers = diagnosis["eligible_layers"]
    fig, (bars, curve) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(results)
    for i, (k, result) in enumerate(results.items()):
        scores = [result["redundancy"][str(l)] or 0.0 for l in layers]
        bars.bar([l + (i - (len(results) - 1) / 2) * width for l in layers], scores, width, label=f"k={k}")
        values = [t["value"] for t in result["trials"]]
        best_so_far = [max(values[: n + 1]) for n in range(len(values))]
        line, = curve.plot(range(1, len(values) + 1), values, ".", alpha=0.5)
        curve.plot(range(1, len(values) + 1), best_so_far, "-", drawstyle="steps-post", color=line.get_color(),
                   label=f"k={k} best {result['best_layers']}")
        if "exhaustive" in result["baselines"]:
            curve.axhline(result["baselines"]["exhaustive"]["value"], color=line.get_color(), ls=":", lw=1)
    bars.axhline(0, color="black", lw=0.5)
    bars.set(xlabel="layer", ylabel="mean objective skipping it - keeping it",
             title="Per-layer redundancy", xticks=layers)
    curve.set(xlabel="trial", ylabel="objective (speed-up)", title="Objective per trial (dotted: exhaustive optimum)")
    bars.legend()
    curve.legend(fontsize="small")
    fig.tight_layout()
    partial = path.with_name(f".{path.name}.tmp")  # then renamed: never a half-written picture
    fig.savefig(partial, format="png", dpi=100)
    plt.close(fig)
    os.replace(partial, path)
    return path
