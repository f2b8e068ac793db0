"""A distillation within a time budget: the last stage's length from its measured step time (a clock injected
here, so the sizing is exact), kept by a resumed run."""

import itertools

import pytest
import torch
from distill_helpers import config, killed_at_step, make_hybrid, write_texts
from test_distill import metrics_without_timing

from rad.distill.budget import PROBE_STEPS, StageBudget, size_stage
from rad.distill.data import build_rows, documents
from rad.distill.distill import make_accelerator
from rad.distill.trainer import Trainer
from rad.model.io import load_model
from rad.model.tokenizer import load_tokenizer


@pytest.mark.parametrize("left_s, step_s, done, cap, steps", [
    (100.0, 2.0, 4, 150, 54),  # 50 more steps fit
    (1000.0, 2.0, 4, 150, 150),  # the configured steps are the most
    (3.0, 2.0, 4, 150, 5),  # one more fits
    (-5.0, 2.0, 4, 150, 4),  # past the deadline: stop where it is
    # The demo on a slow host (step time 3.5 s, 300 s left when stage 2 is sized after its 4th step): pinned.
    (300.0, 3.5, 4, 150, 89),
])
def test_size_stage(left_s, step_s, done, cap, steps):
    assert size_stage(left_s, step_s, done, cap) == steps


def fake_clock(step_s: float):
    """A clock that moves `step_s` between each reading and the next: every step takes step_s."""
    ticks = itertools.count()
    return lambda: next(ticks) * step_s


def test_stage_budget_sizes_after_its_probe_steps():
    budget = StageBudget(deadline=100.0, clock=fake_clock(2.0))
    sizes = []
    for done in range(1, PROBE_STEPS + 2):
        budget.step_started()
        sizes.append(budget.step_ended(done, 150))
    assert sizes[:-1] == [None] * PROBE_STEPS
    # readings 0..7 timed the steps (2 s each); reading 8, 16.0, leaves 84 s: 42 more steps
    assert sizes[-1] == PROBE_STEPS + 1 + 42


@pytest.fixture(scope="module")
def setup(llama_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("budget")
    return llama_dir, make_hybrid(llama_dir, root / "hybrid"), write_texts(root / "texts.jsonl", 100)


def train(cfg, rows, budget):
    student, teacher = load_model(cfg.student).train(), load_model(cfg.teacher).requires_grad_(False)
    trainer = Trainer(cfg, student, teacher, rows, make_accelerator(cfg), settings={}, budget=budget)
    trainer.run()
    return student, trainer.sized


def test_budgeted_run_is_cut_and_a_resumed_run_keeps_the_cut(setup, tmp_path):
    teacher, hybrid, data = setup
    settings = dict(steps1=2, steps2=20, save_every=3)
    rows = build_rows(documents(f"jsonl:{data}", load_tokenizer(hybrid), 0, False), 22 * 4, 32, True, 0)
    # Stage 2 starts at reading 0 of the clock, each step takes 1 s, the deadline is at 20: sized after its 4th step.
    whole, sized = train(config(hybrid, teacher, data, tmp_path / "whole", **settings), rows,
                         StageBudget(20.0, fake_clock(1.0)))
    assert sized == 4 + 12  # readings 0..7 timed 4 steps; at reading 8 the deadline is 12 s away: 12 more
    steps = [r["step"] for r in metrics_without_timing(tmp_path / "whole")]
    assert steps == list(range(1, 2 + sized + 1))
    killed = tmp_path / "killed"
    with killed_at_step(2 + 8):  # after the sizing (step 6) and the checkpoint at step 9, before the end
        train(config(hybrid, teacher, data, killed, **settings), rows, StageBudget(20.0, fake_clock(1.0)))
    # Resumed with a budget that would size otherwise (no time left): the checkpoint's cut stands.
    resumed, kept = train(config(hybrid, teacher, data, killed, resume=True, **settings), rows,
                          StageBudget(0.0, fake_clock(1.0)))
    assert kept == sized
    assert metrics_without_timing(killed) == metrics_without_timing(tmp_path / "whole")
    assert all(torch.equal(w, resumed.state_dict()[n]) for n, w in whole.state_dict().items())
