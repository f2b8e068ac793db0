"""The search machinery against synthetic objectives whose optimum brute force knows: top-k, the
de-duplicating sampler, the study (cache, resume), baselines, redundancy and the schema validator."""

import itertools
import math
import time

import numpy as np
import pytest
from optuna.trial import TrialState

from rad.errors import RadError
from rad.search.analysis import overlap, redundancy
from rad.search.baselines import random_sets, run_baselines, uniform_placement
from rad.search.bayes import make_sampler, make_storage, open_study, run_search
from rad.search.claims import SetClaims
from rad.search.objective import CachedObjective, Evaluation
from rad.search.sampler import best_untried, failed_in
from rad.search.schema import schema_errors
from rad.search.space import check_k, eligible_layers, top_k


def test_top_k_takes_the_largest_and_breaks_ties_by_index():
    assert top_k({0: 0.1, 1: 0.9, 2: 0.5, 3: 0.9}, 2) == (1, 3)
    assert top_k({0: 0.5, 1: 0.5, 2: 0.5, 5: 0.7}, 2) == (0, 5)
    assert top_k({2: 0.0, 4: 1.0, 6: 0.3}, 1) == (4,)


def test_eligible_layers_and_k_limits():
    assert eligible_layers([0, 1, 2, 3, 4], 5, exclude_first=True, exclude_last=True) == [1, 2, 3]
    assert eligible_layers([0, 2, 4], 5, exclude_last=True) == [0, 2]
    assert eligible_layers([0, 2], 5, exclude_last=True) == [0, 2]  # the last layer (4) is no attention layer
    check_k(2, [1, 2, 3])
    for k in (0, 3):
        with pytest.raises(RadError, match="eligible attention layers"):
            check_k(k, [1, 2, 3])


def test_best_untried_visits_sets_in_decreasing_z_sum():
    rng = np.random.default_rng(0)
    z = dict(enumerate(rng.uniform(size=6)))
    expected = sorted(itertools.combinations(range(6), 3), key=lambda s: -sum(z[l] for l in s))
    tried = set()
    for want in expected:
        got = best_untried(z, 3, tried)
        assert got == want
        tried.add(got)
    assert best_untried(z, 3, tried) == top_k(z, 3)  # all tried: the plain top-k set again


def additive_objective(seed: int, layers: int):
    """exp(-harm): every layer harms the speed-up by its own weight, plus small pair interactions."""
    rng = np.random.default_rng(seed)
    weight, pair = np.exp(rng.normal(0, 1, layers)), rng.normal(0, 0.05, (layers, layers))

    def objective(skip):
        harm = sum(weight[l] for l in skip) + sum(pair[a, b] for a, b in itertools.combinations(skip, 2))
        return Evaluation(float(np.exp(-harm)), {"harm": float(harm)})

    return objective, weight


class Counting:
    def __init__(self, objective):
        self.objective, self.calls = objective, []

    def __call__(self, skip):
        self.calls.append(skip)
        return self.objective(skip)


def trials_to_optimum(objective, layers, k, seed, sampler="gp", limit=30):
    optimum = max(objective(s).value for s in itertools.combinations(range(layers), k))
    result = run_search(CachedObjective(objective), list(range(layers)), k, limit, sampler=sampler, seed=seed,
                        callbacks=[lambda study, trial: study.stop() if trial.value >= optimum else None])
    hits = [t.number + 1 for t in result.trials if t.value >= optimum]
    return hits[0] if hits else None


def test_gp_search_finds_the_exhaustive_optimum_within_30_trials_for_4_of_5_seeds():
    found = [trials_to_optimum(additive_objective(seed, 8)[0], 8, 3, seed) for seed in range(5)]
    assert sum(n is not None for n in found) >= 4, found
    # Random search (24, 6, 34, 31, 24 here) passes the line above one time in four; it would pass this
    # one (a median of at most 12 of the 56 sets) about one time in fifteen.
    assert sorted(n or 31 for n in found)[2] <= 12, found


def test_each_set_is_evaluated_once_and_trials_never_repeat_a_set():
    objective = Counting(additive_objective(1, 5)[0])
    result = run_search(CachedObjective(objective), [0, 1, 2, 3, 4], 2, 10, sampler="tpe", seed=0)
    skips = [t.skip for t in result.trials]
    assert len(skips) == 10 and sorted(skips) == sorted(itertools.combinations(range(5), 2))
    assert sorted(objective.calls) == sorted(skips)  # each of the 10 sets once
    assert all(top_k(t.z, 2) == t.skip or t.skip not in skips[: i] for i, t in enumerate(result.trials))


def test_matern_gp_start_up_trials_skip_every_layer_once():
    result = run_search(CachedObjective(additive_objective(6, 8)[0]), list(range(8)), 2, 4, sampler="gp-matern", seed=3)
    assert sorted(l for t in result.trials for l in t.skip) == list(range(8))


def test_ties_on_the_objective_go_to_the_higher_acceptance_rate():
    """Sets (0, 1) and (2, 3) tie on the speed-up; (2, 3) had fewer drafts rejected: it is the best, for
    the search and for the random and exhaustive baselines, whichever was evaluated first."""
    def objective(skip):
        value = 1.0 if skip in ((0, 1), (2, 3)) else 0.5
        return Evaluation(value, {"acceptance_rate": 0.96 if skip == (2, 3) else 0.9})

    result = run_search(CachedObjective(objective), [0, 1, 2, 3], 2, 6, sampler="random", seed=0)
    assert result.best.skip == (2, 3)
    baselines = run_baselines(CachedObjective(objective), [0, 1, 2, 3], 2, n_random=6, seed=0, rankings={})
    assert baselines["random"]["skip"] == [2, 3] and baselines["exhaustive"]["skip"] == [2, 3]


def test_trials_are_capped_at_the_number_of_sets():
    result = run_search(CachedObjective(additive_objective(2, 4)[0]), [0, 1, 2, 3], 1, 50, sampler="random")
    assert len(result.trials) == 4


def test_resume_continues_the_study_and_reuses_its_evaluations(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    base, _ = additive_objective(3, 8)
    first = Counting(base)
    run_search(CachedObjective(first), list(range(8)), 3, 6, storage=storage, sampler="tpe", settings={"run": 1})
    with pytest.raises(RadError, match="--resume"):
        run_search(CachedObjective(first), list(range(8)), 3, 9, storage=storage, seed=0, settings={"run": 1})
    with pytest.raises(RadError, match="other settings"):
        run_search(CachedObjective(first), list(range(8)), 3, 9, storage=storage, resume=True, settings={"run": 2})
    second = Counting(base)
    cache = CachedObjective(second)
    result = run_search(cache, list(range(8)), 3, 9, storage=storage, sampler="tpe", settings={"run": 1}, resume=True)
    assert [t.number for t in result.trials] == list(range(9))
    assert [t.skip for t in result.trials[:6]] == first.calls  # the earlier trials, as they were
    assert len(second.calls) == 3 and not set(second.calls) & set(first.calls)
    assert set(cache.results) == set(first.calls) | set(second.calls)  # the old values came back into the cache


def test_baselines_against_brute_force():
    objective, weight = additive_objective(4, 8)
    cache = CachedObjective(objective)
    influence = {l: float(w) for l, w in enumerate(weight)}  # a perfect proxy: low harm = low influence
    baselines = run_baselines(cache, list(range(8)), 3, 10, seed=0, rankings={"block_influence": influence})
    brute = max(itertools.combinations(range(8), 3), key=lambda s: objective(s).value)
    assert baselines["exhaustive"]["skip"] == list(brute) and baselines["exhaustive"]["evaluated"] == 56
    assert baselines["random"]["evaluated"] == 10
    assert baselines["uniform"]["skip"] == [1, 4, 6]
    assert baselines["block_influence"]["skip"] == sorted(np.argsort(weight)[:3].tolist())
    wide = CachedObjective(additive_objective(0, 12)[0])
    assert "exhaustive" not in run_baselines(wide, list(range(12)), 6, 5, 0, {})  # C(12, 6) = 924 > 500


def test_uniform_placement_and_random_sets():
    assert uniform_placement(list(range(8)), 2) == (2, 6)
    assert uniform_placement(list(range(8)), 4) == (1, 3, 5, 7)
    assert uniform_placement([1, 2, 3, 4, 5, 6], 3) == (2, 4, 6)
    sets = random_sets(list(range(6)), 2, 100, seed=0)
    assert len(sets) == math.comb(6, 2) == len(set(sets))


def test_redundancy_ranks_layers_by_their_harm():
    objective, weight = additive_objective(5, 7)
    evaluated = {s: objective(s) for s in itertools.combinations(range(7), 2)}
    scores = redundancy(evaluated, list(range(7)))
    assert sorted(scores, key=scores.get, reverse=True) == np.argsort(weight).tolist()
    assert redundancy({(0,): Evaluation(1.0)}, [0, 1]) == {0: None, 1: None}


def test_overlap_of_best_sets():
    result = overlap({"a": {"skip": [1, 2]}, "b": {"skip": [2, 3]}, "c": {"skip": [2, 5]}})
    assert result["common"] == [2] and result["jaccard"]["a | b"] == pytest.approx(1 / 3)


def test_schema_validator_catches_what_is_wrong():
    schema = {"type": "object", "required": ["a"], "additionalProperties": False,
              "properties": {"a": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                             "b": {"type": ["number", "null"], "maximum": 1}}}
    assert schema_errors({"a": [0, 2], "b": None}, schema) == []
    assert schema_errors({"a": [0, -1, True], "b": 2, "c": 0}, schema) == [
        "$.a[1]: -1 is below the minimum 0", "$.a[2]: expected integer, got bool",
        "$.b: 2 is above the maximum 1", "$: unexpected 'c'"]
    assert schema_errors({}, schema) == ["$: missing 'a'"]


def test_pooled_statistics_weigh_each_run_by_its_tokens():
    from rad.search.speedup import summarise

    runs = [{"tokens": 10, "accepted": 6, "drafted": 8, "steps": 4, "speedup_modeled": 2.0, "speedup_measured": None},
            {"tokens": 30, "accepted": 2, "drafted": 12, "steps": 6, "speedup_modeled": 1.0, "speedup_measured": None}]
    pooled = summarise(runs)
    assert pooled["speedup_modeled"] == pytest.approx(40 / (10 / 2 + 30 / 1))  # total plain time / total speculative
    assert pooled["acceptance_rate"] == pytest.approx(8 / 20) and pooled["mean_accepted"] == pytest.approx(8 / 10)
    assert pooled["speedup_measured"] is None and pooled["tokens"] == 40


def test_storage_urls_are_recorded_without_their_password():
    from rad.search.diagnose import hide_password

    assert hide_password("postgresql://rad:secret@db.example/studies") == "postgresql://rad:***@db.example/studies"
    assert hide_password("sqlite:////tmp/out/study.db") == "sqlite:////tmp/out/study.db"


def test_two_workers_share_one_study(tmp_path):
    """What `--storage URL` is for: workers add trials to one study until it holds n_trials between them."""
    import threading

    storage, (objective, _) = f"sqlite:///{tmp_path / 'shared.db'}", additive_objective(7, 8)
    run_search(CachedObjective(objective), list(range(8)), 3, 2, storage=storage, sampler="tpe")  # the first worker
    def slow(skip):  # long enough that neither worker can fill the study before the other starts
        time.sleep(0.05)
        return objective(skip)

    caches = [CachedObjective(Counting(slow)) for _ in range(2)]
    workers = [threading.Thread(target=run_search, args=(cache, list(range(8)), 3, 12),
                                kwargs=dict(storage=storage, sampler="tpe", seed=w, resume=True))
               for w, cache in enumerate(caches)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    result = run_search(CachedObjective(objective), list(range(8)), 3, 12, storage=storage, resume=True)
    assert 12 <= len(result.trials) <= 13  # each worker stops once the study is full: at most one trial over
    assert all(cache.objective.calls for cache in caches)  # both joined in
    assert len({t.skip for t in result.trials}) >= len(result.trials) - 1  # at most one race on the same set


def test_two_workers_proposing_at_once_claim_different_sets(tmp_path):
    """Two workers of one shared study sample at the same moment (both trials exist, neither has its set yet): they
    see the same history, so they propose the same set; the claim lets only the first keep it."""
    storage = make_storage(f"sqlite:///{tmp_path / 'shared.db'}")
    study = open_study(storage, "k2", None, {"k": 2}, resume=False)
    workers = [make_sampler("gp", list(range(6)), 2, seed=0) for _ in range(2)]
    trials = [study._storage.get_trial(study._storage.create_new_trial(study._study_id)) for _ in workers]
    alone = workers[0].sample_relative(study, trials[0], workers[0].space)  # without a claim: what both propose
    assert workers[1].sample_relative(study, trials[1], workers[1].space) == alone
    for worker in workers:
        worker.claims = SetClaims(storage.engine, "k2")
    first, second = (worker.sample_relative(study, trial, worker.space) for worker, trial in zip(workers, trials))
    assert first == alone and second != first
    # A worker that dies leaves its trial failed: its claim is free for the next trial.
    study._storage.set_trial_state_values(trials[0]._trial_id, state=TrialState.FAIL)
    third = study._storage.get_trial(study._storage.create_new_trial(study._study_id))
    assert SetClaims(storage.engine, "k2").claim(top_k({int(n[1:]): v for n, v in first.items()}, 2), third.number,
                                                  failed_in(study))
