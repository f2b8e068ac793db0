"""What the evaluated sets say beyond the single best one: per-layer redundancy, and whether the
redundant layers are a property of the model or of the prompts (best set per prompt source)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from rad.search.objective import Evaluation
from rad.search.space import Skip


def redundancy(evaluated: Mapping[Skip, Evaluation], eligible: Sequence[int]) -> dict[int, float | None]:
    """Per layer: mean objective of the evaluated sets that skip it minus that of the sets that keep it
    (None when the layer is in all or none of them). Positive: skipping the layer helps."""
    scores = {}
    for layer in eligible:
        inside = [r.value for s, r in evaluated.items() if layer in s]
        outside = [r.value for s, r in evaluated.items() if layer not in s]
        scores[layer] = sum(inside) / len(inside) - sum(outside) / len(outside) if inside and outside else None
    return scores


def best_by_source(evaluated: Mapping[Skip, Evaluation], key: str) -> dict[str, dict]:
    """For each prompt source, the evaluated set with the best value of `key` on that source alone."""
    sources = next(iter(evaluated.values())).details.get("by_source", {})
    best = {}
    for name in sources:
        skip, result = max(evaluated.items(), key=lambda item: (item[1].details["by_source"][name][key] or 0.0,
                                                               [-l for l in item[0]]))
        best[name] = {"skip": list(skip), "value": result.details["by_source"][name][key]}
    return best


def overlap(best: Mapping[str, dict]) -> dict:
    """Layers common to every source's best set, and the Jaccard index of each pair of sources."""
    sets = {name: set(b["skip"]) for name, b in best.items()}
    common = set.intersection(*sets.values()) if sets else set()
    jaccard = {f"{a} | {b}": len(sets[a] & sets[b]) / len(sets[a] | sets[b])
               for a, b in itertools.combinations(sets, 2)}
    return {"common": sorted(common), "jaccard": jaccard}


def describe_sources(evaluated: Mapping[Skip, Evaluation], key: str) -> dict | None:
    """The per-source part of the report, or None with a single source (nothing to compare)."""
    best = best_by_source(evaluated, key)
    if len(best) < 2:
        return None
    return {"best": best, "overlap": overlap(best)}
