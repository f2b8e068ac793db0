"""How self-speculative decoding compares with plain decoding: measured by the clock (plain decoding of the
same prompts in the same call) and modeled (the acceptance statistics times the sub-layer cost model,
rad.eval.cost_model). Decoding itself (rad.decode) measures nothing but its own time."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from rad.decode.draft_policy import DraftPolicy
from rad.decode.generate import generate
from rad.decode.loop import GenerationOutput
from rad.decode.sampling import SamplingConfig
from rad.decode.speculative import SpeculativeOutput, speculative_generate
from rad.eval.cost_model import measure_costs
from rad.model.llama import CausalLM


@dataclass
class SpeculativeProfile:
    output: SpeculativeOutput
    plain: GenerationOutput | None  # plain decoding of the same prompts, when measured
    speedup_measured: float | None  # decode-phase tokens/s over plain decoding's, same call
    speedup_modeled: float | None  # from the cost model

    def to_dict(self) -> dict:
        """The acceptance statistics and both speed-ups."""
        return {**self.output.stats.to_dict(), "speedup_measured": self.speedup_measured,
                "speedup_modeled": self.speedup_modeled}


def profile_speculative(model: CausalLM, prompts: Sequence[Sequence[int]], max_new_tokens: int = 64,
                        sampling: SamplingConfig = SamplingConfig(), stop_tokens: Collection[int] | None = None,
                        skip: Collection[int] = (), policy: DraftPolicy = DraftPolicy(), measure: bool = True,
                        model_cost: bool = True) -> SpeculativeProfile:  # fmt: skip
    """Self-speculative decoding of `prompts`, then (with `measure`) plain decoding of the same prompts, and
    (with `model_cost`) the cost model's speed-up for the run's statistics."""
    output = settled(model, lambda: speculative_generate(model, prompts, max_new_tokens, sampling, stop_tokens, skip,
                                                         policy))
    plain = settled(model, lambda: generate(model, prompts, max_new_tokens, sampling, stop_tokens)) if measure else None
    modeled = modeled_speedup(model, output, len(prompts), len(set(skip))) if model_cost else None
    return SpeculativeProfile(output, plain, measured_speedup(output, plain) if plain else None, modeled)


def settled(model: CausalLM, run: Callable[[], GenerationOutput]) -> GenerationOutput:
    """run(), and once more if it met shapes the model's compiled graphs had not run (its time was the compiler's)."""
    compiled = model.compiled_decode
    before = None if compiled is None else compiled.compile_seconds
    output = run()
    return run() if compiled is not None and compiled.compile_seconds > before else output


def modeled_speedup(model: CausalLM, output: SpeculativeOutput, batch: int, skipped: int) -> float | None:
    """The cost model's speed-up for a run's statistics (None when it verified nothing), its costs timed in a
    cache of the run's length at the run's verify width."""
    stats = output.stats
    if not stats.verify_forwards:
        return None
    return measure_costs(model, batch, output.cache_len, stats.draft_len + 1).speedup(stats, skipped)


def measured_speedup(spec: GenerationOutput, plain: GenerationOutput) -> float | None:
    """Ratio of decode-phase tokens/s (each row's first token comes from the prefill, the same in both).

    Plain decoding looks for finished rows only every few steps (STOP_CHECK_INTERVAL), so it may run
    steps past the end of its longest row; its time is cut to the steps that row needed, so that the
    ratio measures speculation, not that throttle (which would flatter short, stopped generations).
    """
    decoded = [sum(len(row) - 1 for row in out.tokens) for out in (spec, plain)]
    forwards_needed, forwards_run = max(len(row) for row in plain.tokens) - 1, plain.steps - 1
    plain_s = plain.decode_s * forwards_needed / forwards_run if forwards_run else 0.0
    if spec.decode_s <= 0 or plain_s <= 0:
        return None
    return (decoded[0] / spec.decode_s) / (decoded[1] / plain_s)
