"""rad's additive GP for skip sets: its posterior against exactly additive truths, its local search
against brute-force enumeration, and whole searches against random search's exact expectation."""

import itertools
import statistics

import numpy as np
import pytest

import rad.search.additive as additive
from rad.search.additive import AdditiveGP
from rad.search.bayes import run_search
from rad.search.objective import CachedObjective, Evaluation


def test_posterior_mean_recovers_an_additive_objective_from_enough_sets():
    """Nine sets of 3 of 8 layers pin down 8 per-layer effects (up to the constant the standardisation
    removes): the predicted ranking of all 56 sets is then the true one."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=8)
    gp = AdditiveGP(range(8), 3, seed=0)
    sets = list(itertools.combinations(range(8), 3))
    observed = [(s, float(weight[list(s)].sum())) for s in [sets[i] for i in rng.choice(len(sets), 9, replace=False)]]
    mean, _, _ = gp.posterior(observed)
    predicted = gp.membership(sets) @ mean
    truth = np.array([weight[list(s)].sum() for s in sets])
    assert np.corrcoef(predicted, truth)[0, 1] > 0.999


def test_proposals_never_repeat_a_set_and_start_at_random():
    gp = AdditiveGP([1, 3, 5, 7], 2, seed=1)
    first = gp.propose([], set())
    assert len(first) == 2 and set(first) <= {1, 3, 5, 7}
    tried, observed = set(), []
    for _ in range(6):  # all C(4, 2) sets, each once
        skip = gp.propose(observed, tried)
        assert skip not in tried
        tried.add(skip)
        observed.append((skip, float(sum(skip))))
    assert gp.propose(observed, tried) in tried  # nothing left: a repeat, which the objective cache answers


def test_local_search_finds_the_best_set_that_enumeration_finds(monkeypatch):
    """Above ENUMERATE_LIMIT sets, expected improvement is maximised by hill-climbing over swaps; on a
    space small enough to enumerate, its pick must have the largest expected improvement of all untried sets."""
    rng = np.random.default_rng(2)
    weight = rng.normal(size=12)
    sets = list(itertools.combinations(range(12), 4))
    monkeypatch.setattr(additive, "ENUMERATE_LIMIT", 0)
    for trial in range(5):
        picked = [sets[i] for i in rng.choice(len(sets), 3 + trial, replace=False)]
        observed = [(s, float(weight[list(s)].sum())) for s in picked]
        gp = AdditiveGP(range(12), 4, seed=trial)
        searched = gp.propose(observed, set(picked))
        untried = [s for s in sets if s not in picked]
        model = gp.posterior(observed)
        gains = gp.expected_improvement(untried, *model)
        assert searched not in picked
        assert gp.expected_improvement([searched], *model)[0] >= gains.max() - 1e-9


@pytest.mark.parametrize("k", [2, 3])
def test_search_needs_at_most_half_of_random_searchs_expected_trials(k):
    """Additive objectives with small pair interactions, 8 layers, 10 seeds: random search needs
    (N + 1) / 2 trials on average (N = C(8, k) sets, one optimum); the GP's median must be at most half."""
    needed = []
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        weight, pair = rng.normal(size=8), rng.normal(0, 0.1, (8, 8))

        def objective(skip):
            return Evaluation(float(weight[list(skip)].sum() + sum(pair[a, b] for a, b in itertools.combinations(skip, 2))))

        optimum = max(objective(s).value for s in itertools.combinations(range(8), k))
        result = run_search(CachedObjective(objective), list(range(8)), k, 100, sampler="gp", seed=seed,
                            callbacks=[lambda study, trial: study.stop() if trial.value >= optimum else None])
        needed.append(next(t.number + 1 for t in result.trials if t.value >= optimum))
    expected_random = (len(list(itertools.combinations(range(8), k))) + 1) / 2
    assert statistics.median(needed) <= expected_random / 2, needed
