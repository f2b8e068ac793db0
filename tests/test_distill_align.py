"""The alignment stage (rad distill --align-steps): each SSM mixer learns, alone, to reproduce the
teacher's attention output from the teacher's own input to its layer."""

import json
import math

import pytest
import torch
from distill_helpers import REPLACED, config, killed_at_step, make_hybrid, write_texts
from test_distill import metrics_without_timing, weights

from rad.app.cli import main
from rad.distill.data import build_rows, documents
from rad.distill.distill import distill
from rad.distill.metrics import read_metrics
from rad.errors import RadError
from rad.model.io import load_model
from rad.model.tokenizer import load_tokenizer


def align(steps: int) -> dict:
    """DistillConfig settings of an alignment stage of `steps` steps."""
    return dict(align_steps=steps, align_lr=1e-2, align_warmup=1)


@pytest.fixture(scope="module")
def setup(tiny_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("align")
    folder, reference = tiny_dirs["llama"]
    return folder, reference, make_hybrid(folder, root / "hybrid"), write_texts(root / "texts.jsonl", 200)


def test_alignment_loss_is_the_mixers_error_on_the_teachers_own_inputs(setup, tmp_path):
    """Independent reference: transformers' Llama, hooked at the replaced layers, gives each layer's input
    (after its input norm) and attention output; the mixers after one alignment step, run on those inputs,
    must give the second step's recorded loss (mean square error over the hidden size, mean over the
    layers, over real tokens). Only the mixers change."""
    folder, reference, hybrid, data = setup
    distill(config(hybrid, folder, data, tmp_path / "two", steps1=0, **align(2), pack=False))
    distill(config(hybrid, folder, data, tmp_path / "one", steps1=0, **align(1), pack=False))
    recorded = read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert [(r["stage"], r["kl"]) for r in recorded] == [(0, 0.0), (0, 0.0)]

    rows = build_rows(documents(f"jsonl:{data}", load_tokenizer(hybrid), 0, False), 8, 32, False, 0).slice(4, 8)
    assert not rows.valid.all()  # some rows are padded: padding must not count
    inputs, outputs, handles = {}, {}, []
    for i in REPLACED:
        layer = reference.model.layers[i]
        handles += [layer.input_layernorm.register_forward_hook(lambda m, a, out, i=i: inputs.__setitem__(i, out)),
                    layer.self_attn.register_forward_hook(lambda m, a, out, i=i: outputs.__setitem__(i, out[0]))]
    try:
        with torch.no_grad():
            reference(rows.ids)
    finally:
        for handle in handles:  # the reference model is shared by the whole session
            handle.remove()
    student = load_model(tmp_path / "one")
    with torch.no_grad():
        mask = rows.valid[:, 1:]
        errors = [(student.model.layers[i].mamba(inputs[i])[0] - outputs[i])[:, :-1][mask].pow(2).mean(-1).mean()
                  for i in REPLACED]
    assert math.isclose(recorded[1]["hidden"], sum(errors).item() / len(REPLACED), rel_tol=1e-4)
    assert recorded[1]["loss"] == recorded[1]["hidden"]

    before, after = weights(hybrid), weights(tmp_path / "two")
    mixer = {name for name in before if ".mamba." in name}
    assert all(torch.equal(before[n], after[n]) for n in before if n not in mixer)
    assert all(not torch.equal(before[n], after[n]) for n in mixer if "in_proj" in n or "out_proj" in n)


def test_alignment_error_falls_on_a_tiny_problem(setup, tmp_path):
    folder, _, hybrid, _ = setup
    data = write_texts(tmp_path / "few.jsonl", 8, seed=3)
    cfg = config(hybrid, folder, data, tmp_path / "out", steps1=0, align_steps=20, align_lr=1e-2, align_warmup=5,
                 pack=False, batch_size=8)
    distill(cfg)
    hidden = [r["hidden"] for r in read_metrics(tmp_path / "out" / "metrics.jsonl")]
    assert hidden[-1] < 0.3 * hidden[0], hidden


def test_killed_run_resumes_across_the_alignment_stage(setup, tmp_path):
    """Alignment 3 steps, stage 1 2 steps, checkpoints every 2 steps and at stage ends (2, 3, 4, 5):
    killed as it starts step 5, resumed, it ends bit-identical to a run that never stopped."""
    folder, _, hybrid, data = setup
    settings = dict(steps1=2, **align(3), save_every=2)
    distill(config(hybrid, folder, data, tmp_path / "whole", **settings))
    killed = tmp_path / "killed"
    with killed_at_step(5):
        distill(config(hybrid, folder, data, killed, **settings))
    distill(config(hybrid, folder, data, killed, resume=True, **settings))
    assert [r["stage"] for r in read_metrics(killed / "metrics.jsonl")] == [0, 0, 0, 1, 1]
    assert all(torch.equal(weights(killed)[n], w) for n, w in weights(tmp_path / "whole").items())
    assert metrics_without_timing(killed) == metrics_without_timing(tmp_path / "whole")


def test_alignment_needs_the_source_model_as_teacher(setup, tmp_path):
    folder, _, hybrid, data = setup
    # The hybrid as its own teacher: same tokenizer, but no attention at the replaced layers to copy.
    with pytest.raises(RadError, match="alignment stage.*needs attention in the teacher"):
        distill(config(hybrid, hybrid, data, tmp_path / "out", steps1=0, **align(1)))
    with pytest.raises(RadError, match="--align-steps must be at least 0"):
        distill(config(hybrid, folder, data, tmp_path / "out", **align(-1)))


def test_cli_align_options(setup, tmp_path, capsys):
    folder, _, hybrid, data = setup
    out = tmp_path / "out"
    main(["distill", str(hybrid), "--teacher", str(folder), "--data", f"jsonl:{data}", "--align-steps", "2",
          "--align-lr", "0.01", "--stage1-steps", "1", "--seq-len", "32", "--batch-size", "2", "--out", str(out), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["config"]["align_steps"] == 2 and summary["config"]["align_lr"] == 0.01
    assert summary["steps"] == 3
    assert [r["stage"] for r in read_metrics(out / "metrics.jsonl")] == [0, 0, 1]
