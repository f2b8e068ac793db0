"""The report's first section, for a reader who reads nothing else: is the hybrid as good as the teacher, how
much faster and cheaper is it at each measured context, does it pay on this machine, and which machine that is."""

from __future__ import annotations

from rad.machine import describe
from rad.report.document import Section, Table
from rad.report.sections import cost_per_million

# A hybrid "pays" where it decodes faster than the teacher and keeps at least this share of its accuracy.
QUALITY_BAR = 0.95


def quality(evaluation: dict) -> tuple[float | None, list[str]]:
    """The hybrid's worst accuracy relative to the teacher's over the tasks, and a phrase per task."""
    teacher, hybrid = evaluation["models"]["teacher"], evaluation["models"]["hybrid"]
    phrases, ratios = [], []
    for task, result in teacher.items():
        if task in hybrid and result["accuracy"] > 0:
            ratio = hybrid[task]["accuracy"] / result["accuracy"]
            ratios.append(ratio)
            phrases.append(f"{task} {result['accuracy']:.1%} -> {hybrid[task]['accuracy']:.1%} ({ratio:.0%})")
    return (min(ratios) if ratios else None), phrases


def verdict_section(evaluation: dict | None, bench: dict | None, price_per_hour: float) -> Section:
    blocks = []
    worst = None
    if evaluation and {"teacher", "hybrid"} <= set(evaluation["models"]):
        worst, phrases = quality(evaluation)
        blocks.append("Quality, teacher -> hybrid (share of the teacher's accuracy): " + "; ".join(phrases) + ".")
    if bench and len(bench["models"]) > 1:
        teacher, hybrid = bench["models"][0]["points"], bench["models"][1]["points"]
        rows, pays = [], []
        for t, h in zip(teacher, hybrid):
            speedup = h["decode_tokens_per_s"] / t["decode_tokens_per_s"]
            saving = 1 - cost_per_million(h["decode_tokens_per_s"], price_per_hour) / cost_per_million(
                t["decode_tokens_per_s"], price_per_hour)
            rows.append([str(t["context"]), str(t["batch"]), f"{speedup:.2f}x", f"{h['memory_bytes'] / t['memory_bytes']:.2f}",
                         f"{saving:+.0%}"])
            if speedup > 1 and (worst is None or worst >= QUALITY_BAR):
                pays.append(f"{t['context']} (batch {t['batch']})")
        blocks.append(Table(["context", "batch", "hybrid speed", "hybrid memory", "cost saving"], rows))
        quality_ok = worst is None or worst >= QUALITY_BAR
        if pays:
            blocks.append(f"It pays on this machine at context {', '.join(pays)}: faster than the teacher"
                          + (f" with at least {QUALITY_BAR:.0%} of its accuracy on every task." if worst else "."))
        else:
            why = "it is not faster at any measured context" if quality_ok else \
                f"it keeps less than {QUALITY_BAR:.0%} of the teacher's accuracy on some task"
            blocks.append(f"It does not pay on this machine yet: {why}.")
        if bench.get("machine"):
            blocks.append(f"Measured on: {describe(bench['machine'])}. Speed and cost differ from machine to machine.")
    if not blocks:
        blocks.append("No evaluation or benchmark has been written yet.")
    return Section("Verdict", blocks)
