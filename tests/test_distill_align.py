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
from rad.distill.config import DistillConfig
from rad.distill.distill import check_config, distill, make_accelerator
from rad.distill.metrics import read_metrics
from rad.distill.stage_losses import stage_losses
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


@pytest.mark.parametrize("stage", [0, 1])
def test_compiled_layers_give_the_eager_alignment_losses_and_gradients(setup, stage):
    """The alignment stage (0) and hidden-state alignment next to the KL (stage 1) read the mixers' inputs and
    outputs from the models' forward, so compiled layers (AOT autograd's graphs, run by the `aot_eager` backend
    to keep the test fast) give the eager losses and gradients, and the models' layers did run compiled."""
    folder, _, hybrid, data = setup
    settings = config(hybrid, folder, data, "unused", steps1=1, hidden_weight=0.5, **align(1))
    rows = build_rows(documents(f"jsonl:{data}", load_tokenizer(hybrid), 0, False), 4, 32, False, 0)
    accelerator = make_accelerator(settings)
    results = []
    for compiled in (False, True):
        student, teacher = load_model(hybrid).train(), load_model(folder).requires_grad_(False)
        traced = []
        if compiled:
            for model in (student, teacher):
                model.compile_layers(backend="aot_eager")
                layer = model.model.layers[REPLACED[0]]
                layer.mlp.register_forward_pre_hook(lambda *_: traced.append(torch.compiler.is_compiling()))
        loss = stage_losses(settings, student, teacher, accelerator, None)[stage]
        terms = loss.terms(student, rows, 0)
        sum(w * t for w, t in zip(loss.weights, terms)).backward()
        grads = {n: p.grad for n, p in student.named_parameters() if p.grad is not None}
        results.append(([float(t.detach()) for t in terms], grads))
        assert not compiled or (traced and all(traced))
    (want, want_grads), (got, got_grads) = results
    assert want[1] > 0 and got == pytest.approx(want, rel=1e-5, abs=1e-7)
    assert want_grads.keys() == got_grads.keys() and any(".mamba." in n for n in want_grads)
    assert max((got_grads[n] - want_grads[n]).abs().max().item() for n in want_grads) < 1e-5


def test_compile_combines_with_alignment():
    """Once refused (hooks saw nothing inside compiled layers): compiling with both alignments is a valid setting."""
    check_config(DistillConfig(student="s", teacher="t", data="task:math", out="o", compile=True, align_steps=2,
                               hidden_weight=0.5))
