"""The cost model: its formula against a hand computation, its cache, and its timings against real forwards."""

import time

import pytest
import torch

from rad.decode.draft_policy import DraftPolicy
from rad.decode.spec_stats import SpecStats
from rad.eval.cost_model import SubLayerCosts, measure_costs
from rad.eval.profiling import profile_speculative
from rad.model.io import load_model
from test_generate import random_prompts


@pytest.fixture(scope="module")
def llama(llama_dir):
    return load_model(llama_dir)  # on one thread (conftest): timings of a tiny model are steadier


def test_modeled_speedup_by_hand():
    costs = SubLayerCosts(width=5, attention=(1.0, 2.0), mlp=(2.0, 3.0), rest=(4.0, 4.0), num_layers=4, num_attention=4)
    assert costs.forward(1) == 4 * 1 + 4 * 2 + 4
    assert costs.forward(5) == 4 * 2 + 4 * 3 + 4
    assert costs.forward(3) == 4 * 1.5 + 4 * 2.5 + 4  # halfway between the timed widths
    assert costs.forward(1, skipped=2) == 2 * 1 + 4 * 2 + 4
    # 4 steps accepting 0, 2, 4, 4 drafts (10 in all), 8 draft forwards: t = 3.5 tokens per step, d = 2.
    stats = SpecStats(draft_len=4, histogram=[1, 0, 1, 0, 2], drafted=14, draft_forwards=8, verify_forwards=4)
    assert costs.speedup(stats, skipped=2) == pytest.approx(3.5 * 16 / (2 * 14 + 20))
    # A free draft that is always right, with a verification costing one decode step: K + 1 tokens per step.
    free = SubLayerCosts(width=5, attention=(0.0, 0.0), mlp=(0.0, 0.0), rest=(1.0, 1.0), num_layers=4, num_attention=4)
    perfect = SpecStats(draft_len=4, histogram=[0, 0, 0, 0, 3], drafted=12, draft_forwards=12, verify_forwards=3)
    assert free.speedup(perfect, skipped=4) == pytest.approx(5 / (4 + 1))


def test_costs_are_measured_once_per_setting(llama):
    costs = measure_costs(llama, 2, 64, 5)
    assert measure_costs(llama, 2, 64, 5) is costs
    assert measure_costs(llama, 3, 64, 5) is not costs
    assert costs.num_layers == costs.num_attention == 4 and costs.width == 5
    assert min(*costs.attention, *costs.mlp) > 0 and min(costs.rest) >= 0


def timed_forward(model, skip, batch, context, reps=20) -> float:
    """The least seconds of one decode-step forward at the end of a `context`-slot cache."""
    cache = model.new_cache(batch, context)
    ids = torch.zeros(batch, 1, dtype=torch.long)
    positions = torch.full((batch, 1), context - 1)
    times = []
    with torch.inference_mode():
        for _ in range(reps):
            start = time.perf_counter()
            model(ids, positions, cache, skip)
            times.append(time.perf_counter() - start)
    return min(times)


def test_modeled_draft_cost_matches_a_timed_forward(llama):
    """Independent of the timed sub-layers: whole forwards with attention skipped, timed directly."""
    costs = measure_costs(llama, 1, 256, 5)
    for skip in ([1], [0, 1, 2, 3]):
        ratio = costs.forward(1, skipped=len(skip)) / timed_forward(llama, skip, 1, 256)
        assert 0.5 < ratio < 2.0, (skip, ratio)  # wide: other work shares these cores


def test_speculative_run_reports_the_modeled_speedup(llama):
    prompts = random_prompts([5, 12])
    profile = profile_speculative(llama, prompts, 20, skip=[1, 2], policy=DraftPolicy(3), measure=False)
    capacity = 12 + 20 + 3 + 1  # longest prompt + new tokens + a step's drafts past the end
    assert profile.speedup_modeled == measure_costs(llama, 2, capacity, 4).speedup(profile.output.stats, 2)
