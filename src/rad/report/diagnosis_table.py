"""The short table `rad diagnose` prints: per k, the best set and the baselines on the same objective, and how
many layers each method's set shares with the search's."""

from __future__ import annotations


def format_table(diagnosis: dict) -> str:
    mode = diagnosis["config"]["objective"]
    sets = [b["skip"] for r in diagnosis["results"].values() for b in (*r["baselines"].values(), {"skip": r["best_layers"]})]
    width = max(20, *(len(",".join(map(str, layers))) + 2 for layers in sets))
    lines = [f"{'k':>3}  {'method':<16}{'layers':<{width}}{'speed-up (' + mode + ')':>22}{'acceptance':>12}"
             f"{'shared':>8}"]
    for k, result in diagnosis["results"].items():
        chosen = set(result["best_layers"])
        rows = [("search", result["best_layers"], result["value"], result["acceptance_rate"])]
        rows += [(name, b["skip"], b["value"], b["acceptance_rate"])
                 for name, b in result["baselines"].items()]
        for name, layers, value, acceptance in rows:
            shown = "-" if acceptance is None else f"{acceptance:.2f}"  # an objective may not report one
            shared = f"{len(chosen & set(layers))}/{len(chosen)}"
            lines.append(f"{k:>3}  {name:<16}{','.join(map(str, layers)):<{width}}{value:>22.3f}{shown:>12}{shared:>8}")
        trials, regret = len(result["trials"]), result["baselines"].get("exhaustive", {}).get("regret")
        note = f"     {trials} trials, {result['evaluated_sets']} sets evaluated"
        if regret is not None:
            note += f", regret vs exhaustive {regret:.4f}"
        measured = result["speedup_measured"]
        if measured is not None:
            note += f", best set measured {measured:.2f}x"
        lines.append(note)
    return "\n".join(lines)
