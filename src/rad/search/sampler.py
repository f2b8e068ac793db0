"""An Optuna sampler for skip sets: any base sampler proposes z, top-k turns it into a set of k layers,
and the trial records that set's vertex of the cube (z_l = 1 for the chosen layers, 0 elsewhere).

Why vertices: every z with the same top-k set has the same objective, so letting the GP fit the raw z
teaches it about regions that do not exist; on vertices it learns how each layer's membership moves
the objective (an additive-plus-interactions model on the Boolean cube), which is what the search needs.
Why de-duplication: a proposal whose set was already tried (by this run, an earlier run or another
worker) would waste a trial, so it moves to the untried set with the largest total z instead.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from rad.search.additive import AdditiveGP
from rad.search.claims import SetClaims
from rad.search.space import Skip, top_k


def failed_in(study) -> Callable[[int], bool]:
    """Whether the study's trial of a given number failed (its worker died; its claim is free)."""
    def failed(number: int) -> bool:
        states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
        return states.get(number, TrialState.FAIL) == TrialState.FAIL
    return failed


def param_name(layer: int) -> str:
    return f"z{layer}"


def vertex(skip: Skip, layers: Sequence[int]) -> dict[str, float]:
    return {param_name(layer): float(layer in skip) for layer in layers}


def best_untried(z: dict[int, float], k: int, tried: set[Skip]) -> Skip:
    """The untried k-set with the largest sum of z (the top-k set itself if untried).

    Best-first search from the top-k set over single swaps pops sets in non-increasing z-sum: every other
    set has a one-swap neighbour nearer the top-k set with at least its sum (trade one of its layers outside
    the top-k set for a missing top-k layer), so a chain of such neighbours reaches it from the start.
    """
    start = top_k(z, k)
    heap, seen = [(-sum(z[l] for l in start), start)], {start}
    while heap:
        _, skip = heapq.heappop(heap)
        if skip not in tried:
            return skip
        for out in skip:
            for into in z:
                if into in skip:
                    continue
                swapped = tuple(sorted((set(skip) - {out}) | {into}))
                if swapped not in seen:
                    seen.add(swapped)
                    heapq.heappush(heap, (-sum(z[l] for l in swapped), swapped))
    return start  # every set has been tried: repeat the proposal (the objective cache answers it)


class TopKSampler(optuna.samplers.BaseSampler):
    """Wraps `base`: an Optuna sampler on z in [0, 1] per eligible layer (Matern GP, TPE), rad's additive GP,
    which proposes sets directly (its z is the set's vertex), or None for random search."""

    def __init__(self, base: optuna.samplers.BaseSampler | AdditiveGP | None, layers: Sequence[int], k: int, seed: int):
        self.base, self.layers, self.k = base, list(layers), k
        self.space = {param_name(l): FloatDistribution(0.0, 1.0) for l in self.layers}
        self.seed = seed
        self.proposals: dict[int, dict[int, float]] = {}  # trial number -> the z the base proposed
        self.claims: SetClaims | None = None  # set for a study in a database: its sets are claimed atomically

    def infer_relative_search_space(self, study, trial):
        return self.space  # fixed, so that even the first trial is sampled here as a whole vector

    def sample_relative(self, study, trial, search_space):
        others = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
                  if t.number != trial.number and len(t.params) == len(self.layers)]
        sets = [top_k({int(n[1:]): v for n, v in t.params.items()}, self.k) for t in others]
        tried = set(sets)
        if isinstance(self.base, AdditiveGP):
            observed = [(skip, t.value) for skip, t in zip(sets, others) if t.state == TrialState.COMPLETE]
            chosen = self._claimed(lambda tried: self.base.propose(observed, tried), tried, study, trial)
            z = {layer: float(layer in chosen) for layer in self.layers}  # it proposes sets: their vertices
        else:
            proposal = self.base.sample_relative(study, trial, search_space) if self.base else {}
            z = {int(name[1:]): value for name, value in proposal.items()} or self.start_up(len(others))
            chosen = self._claimed(lambda tried: best_untried(z, self.k, tried), tried, study, trial)
        self.proposals[trial.number] = z
        return vertex(chosen, self.layers)

    def _claimed(self, propose: Callable[[set[Skip]], Skip], tried: set[Skip], study, trial) -> Skip:
        """The first proposal this trial could claim: another worker may have proposed the same set a moment ago,
        and the first claim wins (without claims, in memory, the first proposal)."""
        chosen = propose(tried)
        while self.claims is not None and len(tried) < math.comb(len(self.layers), self.k) and \
                not self.claims.claim(chosen, trial.number, failed_in(study)):
            tried.add(chosen)
            chosen = propose(tried)
        return chosen

    def start_up(self, index: int) -> dict[int, float]:
        """A z before the model-based sampler has data. Random search: uniform (a uniform random set).
        Otherwise the start-up sets partition the layers (one random permutation cut into runs of k), so
        that after n/k trials the GP has seen every layer skipped once, the least data that tells them apart."""
        rng = np.random.RandomState([self.seed, index])  # from the trial's place alone: a resumed study repeats it
        z = {layer: float(rng.rand()) for layer in self.layers}
        if self.base is None:
            return z
        runs = math.ceil(len(self.layers) / self.k)
        order = np.random.RandomState([self.seed, index // runs]).permutation(self.layers)
        for layer in order[index % runs * self.k:][: self.k]:
            z[int(layer)] += 1.0  # above every other z: top-k picks the run (a short last run is filled randomly)
        return {layer: value / 2 for layer, value in z.items()}  # back inside [0, 1]

    def sample_independent(self, study, trial, param_name, param_distribution):
        raise AssertionError("every z is sampled as a whole vector in sample_relative")

    def before_trial(self, study, trial):
        if isinstance(self.base, optuna.samplers.BaseSampler):
            self.base.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        if isinstance(self.base, optuna.samplers.BaseSampler):
            self.base.after_trial(study, trial, state, values)
