"""Baselines evaluated on the search's own objective, so that the report compares like with like.

- uniform: k layers evenly spread over the eligible ones (the fixed placement of Mamba-in-the-Llama);
- random: the best of as many distinct random sets as the search had trials;
- block_influence: the k layers whose attention turns the residual stream least (rad.search.influence);
- loo_kl: the k layers whose attention, skipped alone, moves the output distribution least
  (rad.search.leave_one_out);
- exhaustive: every set, when there are at most EXHAUSTIVE_LIMIT of them: the true optimum.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence

from rad.search.objective import CachedObjective, rank_key
from rad.search.space import Skip

EXHAUSTIVE_LIMIT = 500


def uniform_placement(eligible: Sequence[int], k: int) -> Skip:
    """Layers at the centres of k equal intervals of the eligible list."""
    n = len(eligible)
    return tuple(eligible[int((i + 0.5) * n / k)] for i in range(k))


def lowest_scores(scores: Mapping[int, float], eligible: Sequence[int], k: int) -> Skip:
    """The k eligible layers with the lowest per-layer score (ties: the earlier layer)."""
    return tuple(sorted(sorted(eligible, key=lambda layer: (scores[layer], layer))[:k]))


def random_sets(eligible: Sequence[int], k: int, n: int, seed: int) -> list[Skip]:
    """`n` distinct uniformly random k-sets (all of them if there are fewer)."""
    rng, sets = random.Random(seed), []
    n = min(n, math.comb(len(eligible), k))
    while len(sets) < n:
        skip = tuple(sorted(rng.sample(list(eligible), k)))
        if skip not in sets:
            sets.append(skip)
    return sets


def best_of(objective: CachedObjective, sets: Sequence[Skip]) -> dict:
    """The best set among `sets` by the objective (rank_key; then the first), with how many were evaluated."""
    ranks = [rank_key(result.value, result.details) for result in map(objective, sets)]
    best = max(range(len(sets)), key=lambda i: (*ranks[i], -i))
    return entry(objective, sets[best]) | {"evaluated": len(sets)}


def entry(objective: CachedObjective, skip: Skip) -> dict:
    result = objective(skip)
    return {"skip": list(skip), "value": result.value,
            **{key: result.details.get(key) for key in ("acceptance_rate", "speedup_modeled", "speedup_measured")}}


def run_baselines(objective: CachedObjective, eligible: Sequence[int], k: int, n_random: int, seed: int,
                  rankings: Mapping[str, Mapping[int, float]]) -> dict:
    """`rankings`: per-layer scores by name (block_influence, loo_kl), lower meaning more removable."""
    baselines = {
        "uniform": entry(objective, uniform_placement(eligible, k)),
        "random": best_of(objective, random_sets(eligible, k, n_random, seed)),
    }
    for name, scores in rankings.items():
        baselines[name] = entry(objective, lowest_scores(scores, eligible, k))
    if math.comb(len(eligible), k) <= EXHAUSTIVE_LIMIT:
        baselines["exhaustive"] = best_of(objective, list(itertools.combinations(eligible, k)))
    return baselines
