"""Bayesian optimisation over skip sets with Optuna: z in [0, 1]^n, mapped by top-k to a set of k layers.

The study lives in any Optuna storage (SQLite in the output folder by default), so an interrupted run
resumes where it stopped and several workers can share one study. Every completed trial stores its skip
set and evaluation, which is how a resumed run (or another worker) avoids evaluating a set twice.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from rad.errors import RadError
from rad.search.additive import AdditiveGP
from rad.search.claims import SetClaims
from rad.search.objective import CachedObjective, Evaluation, rank_key
from rad.search.sampler import TopKSampler, param_name
from rad.search.space import Skip, check_k

SAMPLERS = ("gp", "gp-matern", "tpe", "random")
# A trial whose worker stopped beating for 2 x HEARTBEAT_S (killed, crashed) is marked failed by the next
# trial of any worker, so a resumed or shared study never waits on it; only completed trials count.
HEARTBEAT_S = 30


@dataclass
class TrialRecord:
    number: int
    z: dict[int, float]  # the sampler's proposal; its top-k set, or the nearest untried one, is `skip`
    skip: Skip
    value: float
    details: dict
    eval_seconds: float  # time spent evaluating; 0 when the set had been evaluated before
    seconds: float  # the whole trial, sampler included
    cached: bool

    def to_dict(self) -> dict:
        return {"number": self.number, "z": {str(l): v for l, v in self.z.items()}, "skip": list(self.skip),
                "value": self.value, "details": self.details, "eval_seconds": self.eval_seconds,
                "seconds": self.seconds, "cached": self.cached}


@dataclass
class SearchResult:
    k: int
    trials: list[TrialRecord]  # completed trials in order

    @property
    def best(self) -> TrialRecord:
        return max(self.trials, key=lambda t: (*rank_key(t.value, t.details), -t.number))  # then the earliest trial


def make_sampler(name: str, layers: Sequence[int], k: int, seed: int, deterministic: bool = True) -> TopKSampler:
    """gp: rad's additive GP on the sets (rad.search.additive), from one random trial. gp-matern: Optuna's GP
    (Matern 5/2 on z; `deterministic`: the objective gives the same value for the same set, as in modeled
    mode, so it fits without a noise term) and tpe: both start after n/k trials (at least 4) whose sets skip
    every layer once (TopKSampler.start_up), not after Optuna's 10 random ones. Measured with
    benchmarks/search.py's loop on a partly trained demo checkpoint (8 layers, 11 seeds, median trials to
    the exhaustive optimum): for gp-matern k = 4 took 19 trials with 2 start-up trials, 13 with 4, 12 with 6,
    14 with 8; k = 2 took 8 with 4, 15 with 6, 12 with 8; random search needed 37 and 11."""
    startup = max(4, math.ceil(len(layers) / k))
    with warnings.catch_warnings():  # both Optuna options are marked experimental in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "gp":
            base = AdditiveGP(layers, k, seed)
        elif name == "gp-matern":
            base = optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup,
                                             deterministic_objective=deterministic)
        elif name == "tpe":
            base = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)
        elif name == "random":
            base = None
        else:
            raise RadError(f"unknown sampler '{name}'; choose one of {', '.join(SAMPLERS)}")
    return TopKSampler(base, layers, k, seed)


def make_storage(url: str | None) -> optuna.storages.BaseStorage | None:
    """None keeps the study in memory; a URL (sqlite:///..., postgresql://...) shares it on disk."""
    if url is None:
        return None
    try:
        with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=2 * HEARTBEAT_S)
    except Exception as err:  # sqlalchemy raises its own types for bad URLs and unreachable databases
        raise RadError(f"cannot open the study storage '{hide_password(url)}': {hide_password(str(err), url)}") from None


def hide_password(text: str, url: str | None = None) -> str:
    """`text` with the password of storage URL `url` (by default `text` itself is the URL) shown as ***."""
    from sqlalchemy.engine import make_url  # installed with optuna

    try:
        password = make_url(url or text).password
    except Exception:  # not a URL sqlalchemy can parse: nothing to find a password in
        return text
    return text.replace(str(password), "***") if password else text


def open_study(storage, name: str, sampler, settings: dict, resume: bool) -> optuna.Study:
    """Create the study, or continue it with --resume; refuse to mix runs made with other settings."""
    # Optuna's warnings name its internals (e.g. a missing optional speed-up), not the user's mistakes.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(storage=storage, study_name=name, sampler=sampler, direction="maximize",
                                load_if_exists=True)
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", settings)
    elif stored != settings:
        raise RadError(f"study '{name}' was made with other settings ({stored}); use a new --out or the same options")
    elif not resume and study.get_trials(deepcopy=False):
        raise RadError(f"study '{name}' already has trials; pass --resume to continue it, or use a new --out")
    return study


def fail_unfinished(study: optuna.Study) -> None:
    """Mark the trials a killed run left RUNNING as failed: the sampler then proposes their sets again (a RUNNING
    trial's set counts as taken), as the uninterrupted search would have."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)


def completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "skip" in t.user_attrs]


def learn_from_study(study: optuna.Study, objective: CachedObjective) -> None:
    """Put every set the study has evaluated (earlier runs, other workers) into the cache."""
    for trial in completed(study):
        objective.remember(trial.user_attrs["skip"], Evaluation.from_dict(trial.user_attrs["evaluation"]))


def record(trial: optuna.trial.FrozenTrial) -> TrialRecord:
    attrs = trial.user_attrs
    z = {int(layer): value for layer, value in attrs["z"].items()}
    seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    return TrialRecord(trial.number, z, tuple(attrs["skip"]), trial.value, attrs["evaluation"]["details"],
                       attrs["eval_seconds"], seconds, attrs["cached"])


def run_search(objective: CachedObjective, eligible: Sequence[int], k: int, n_trials: int, *,
               sampler: str = "gp", seed: int = 0, storage: str | None = None, study_name: str | None = None,
               settings: dict | None = None, resume: bool = False, deterministic: bool = True,
               progress: bool = False, callbacks: Sequence[Callable] = (), own_storage: bool = False) -> SearchResult:
    """Run until the study holds `n_trials` completed trials (counting those of earlier runs), or one per
    possible set if there are fewer: every further trial could only repeat one. `own_storage`: no other process
    uses the study (it lives in this run's locked folder), so a trial an earlier run left RUNNING died with it."""
    check_k(k, eligible)
    n_trials = min(n_trials, math.comb(len(eligible), k))
    topk_sampler = make_sampler(sampler, eligible, k, seed, deterministic)
    storage = make_storage(storage) if isinstance(storage, str) else storage
    study = open_study(storage, study_name or f"k{k}", topk_sampler,
                       {"k": k, "eligible": list(eligible), **(settings or {})}, resume)
    if own_storage:
        fail_unfinished(study)
    if isinstance(storage, optuna.storages.RDBStorage):
        topk_sampler.claims = SetClaims(storage.engine, study.study_name)

    def evaluate(trial: optuna.Trial) -> float:
        point = {layer: trial.suggest_float(param_name(layer), 0.0, 1.0) for layer in eligible}
        skip = tuple(layer for layer in eligible if point[layer] == 1.0)  # the sampler proposes vertices
        trial.set_user_attr("z", {str(l): v for l, v in topk_sampler.proposals[trial.number].items()})
        if not objective.is_cached(skip):
            learn_from_study(study, objective)
        cached = objective.is_cached(skip)
        result = objective(skip)
        trial.set_user_attr("skip", list(skip))
        trial.set_user_attr("evaluation", result.to_dict())
        trial.set_user_attr("cached", cached)
        trial.set_user_attr("eval_seconds", 0.0 if cached else result.seconds)
        return result.value

    learn_from_study(study, objective)
    remaining = n_trials - len(completed(study))
    if remaining > 0:
        bar = ProgressBar(len(completed(study)), n_trials) if progress else None
        stop = optuna.study.MaxTrialsCallback(n_trials, states=(TrialState.COMPLETE,))
        try:
            study.optimize(evaluate, n_trials=remaining, callbacks=[stop, *callbacks, *([bar] if bar else [])])
        finally:
            if bar:
                bar.close()
    return SearchResult(k, [record(t) for t in completed(study)])


class ProgressBar:
    """A tqdm bar on stderr that shows the best skip set so far; an Optuna callback."""

    def __init__(self, done: int, total: int):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=done, file=sys.stderr, unit="trial", dynamic_ncols=True)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE:
            best = study.best_trial
            self.bar.set_postfix_str(f"best S={best.user_attrs['skip']} {best.value:.3f}")
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
