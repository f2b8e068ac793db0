"""The diagnosis objective: the self-speculative speed-up of skipping the attention of layers S.

`modeled` (default): acceptance statistics from a greedy speculative run times the measured sub-layer
cost model (rad.eval.cost_model): the acceptance part is exact and repeatable, the costs are timed
once per model, so the search is not steered by a noisy clock. `measured`: wall-clock tokens/s over
plain decoding of the same prompts in the same call (what a user sees, noise included).

With several prompt sources each one runs as its own batch; the pooled value is the speed-up of all
their tokens together (total plain time over total speculative time), and each source's own value is
kept so that the report can ask whether the redundant layers depend on the prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

from rad.decode.draft_policy import DraftPolicy
from rad.decode.sampling import SamplingConfig
from rad.errors import RadError
from rad.eval.profiling import profile_speculative
from rad.model.llama import CausalLM
from rad.search.objective import Evaluation
from rad.search.space import Skip

MODES = ("modeled", "measured")


@dataclass(frozen=True)
class SpeedupConfig:
    mode: str = "modeled"
    max_new_tokens: int = 24
    draft_len: int = 4  # a fixed K: an adaptive one would let the threshold's history colour each set's value

    def __post_init__(self):
        if self.mode not in MODES:
            raise RadError(f"unknown objective '{self.mode}'; choose one of {', '.join(MODES)}")
        if self.max_new_tokens < 2:
            raise RadError(f"--max-new-tokens must be at least 2 (one token to draft after), got {self.max_new_tokens}")


def pooled_speedup(parts: list[tuple[int, float]]) -> float:
    """Speed-up of several runs together, from (tokens, speed-up) each: plain time / speculative time."""
    return sum(n for n, _ in parts) / sum(n / s for n, s in parts)


class SpeedupObjective:
    """`objective(skip) -> Evaluation` over prompt sources {name: [token ids per prompt]}."""

    def __init__(self, model: CausalLM, sources: dict[str, list[list[int]]], config: SpeedupConfig = SpeedupConfig()):
        self.model, self.sources, self.config = model, sources, config

    def run(self, skip: Skip, prompts: list[list[int]], measure: bool) -> dict:
        profile = profile_speculative(self.model, prompts, self.config.max_new_tokens, SamplingConfig(temperature=0.0),
                                      skip=skip, policy=DraftPolicy(draft_len=self.config.draft_len), measure=measure)
        stats = profile.output.stats
        return {"tokens": profile.output.num_tokens, "accepted": stats.accepted, "drafted": stats.drafted,
                "steps": stats.steps, "speedup_modeled": profile.speedup_modeled,
                "speedup_measured": profile.speedup_measured}

    def __call__(self, skip: Skip, measure: bool = False) -> Evaluation:
        """Evaluate `skip`; `measure` also times plain decoding (always done in measured mode)."""
        measure = measure or self.config.mode == "measured"
        runs = {name: self.run(skip, prompts, measure) for name, prompts in self.sources.items()}
        details = {**summarise(list(runs.values())),
                   "by_source": {name: summarise([run]) for name, run in runs.items()}}
        # No speed-up is defined when every prompt stopped at its first token: nothing was drafted.
        return Evaluation(details[f"speedup_{self.config.mode}"] or 1.0, details)


def summarise(runs: list[dict]) -> dict:
    """Acceptance and speed-ups of one or several runs taken together."""
    accepted, drafted, steps = (sum(r[key] for r in runs) for key in ("accepted", "drafted", "steps"))
    summary = {"acceptance_rate": accepted / drafted if drafted else 0.0,
               "mean_accepted": accepted / steps if steps else 0.0,
               "tokens": sum(r["tokens"] for r in runs)}
    for key in ("speedup_modeled", "speedup_measured"):
        parts = [(r["tokens"], r[key]) for r in runs if r[key]]
        summary[key] = pooled_speedup(parts) if parts else None
    return summary
