"""`rad distill` end to end on a tiny hybrid (layers 1, 2 of the tiny Llama replaced, `rad` init):
stage-1 freezing, KL = 0 against itself, per-token normalisation against a hand-computed KL, the loss
falling, resume and killed runs, NaN stop, top-k cache reuse, hidden alignment, and CLI errors."""

import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from distill_helpers import REPLACED, config, killed_at_step, make_hybrid, write_texts
from safetensors.torch import load_file

import rad.distill.stage_losses as stage_losses_module
import rad.distill.trainer as trainer_module
from rad.app.cli import main
from rad.distill.data import build_rows, documents
from rad.distill.distill import distill, make_accelerator
from rad.distill.metrics import read_metrics
from rad.distill.params import select_parameters
from rad.distill.stage_losses import DistillationLoss
from rad.errors import RadError
from rad.model.io import load_model
from rad.model.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def setup(llama_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    return llama_dir, make_hybrid(llama_dir, root / "hybrid"), write_texts(root / "texts.jsonl", 200)


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_stage1_trains_only_the_mixers_and_leaves_everything_else_bit_identical(setup, tmp_path):
    teacher, hybrid, data = setup
    summary = distill(config(hybrid, teacher, data, tmp_path / "out", steps1=3))
    assert summary["final"]["kl"] > 0
    before, after = weights(hybrid), weights(tmp_path / "out")
    assert before.keys() == after.keys()
    mixer = [name for name in before if any(f"layers.{i}.mamba." in name for i in REPLACED)]
    assert mixer and all(torch.equal(before[n], after[n]) for n in before if n not in mixer)
    assert all(not torch.equal(before[n], after[n]) for n in mixer if "in_proj" in n or "out_proj" in n)
    assert load_model(tmp_path / "out").config.layer_types == ["attention", "ssm", "ssm", "attention"]


def test_kl_is_zero_when_the_student_is_the_teacher(setup, tmp_path):
    teacher, _, data = setup
    cfg = config(teacher, teacher, data, tmp_path / "out", steps1=0, steps2=1, stage2_params="model.layers.1.mlp.*")
    records = []
    original = trainer_module.Trainer.train_step

    def record(self, *args):
        records.append(original(self, *args))
        return records[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_module.Trainer, "train_step", record)
        mp.setattr("rad.distill.distill.save_student", lambda *a: None)  # the plain model is no hybrid
        distill(cfg)
    assert records[0]["kl"] == 0.0


def test_step_loss_is_the_kl_averaged_over_loss_tokens(setup, tmp_path):
    """Independent reference: per-token KL with F.kl_div over the step's rows, mean over real tokens."""
    teacher_dir, hybrid, data = setup
    distill(config(hybrid, teacher_dir, data, tmp_path / "out", steps1=1, temperature=2.0, pack=False))
    got = read_metrics(tmp_path / "out" / "metrics.jsonl")[0]["kl"]
    rows = build_rows(documents(f"jsonl:{data}", load_tokenizer(hybrid), 0, False), 4, 32, False, 0)
    assert not rows.valid.all()  # some rows are padded: padding must not count
    student, teacher = load_model(hybrid), load_model(teacher_dir)
    positions = torch.arange(32).expand(4, -1)
    with torch.no_grad():
        s = F.log_softmax(student(rows.ids, positions)[:, :-1] / 2.0, -1)
        t = F.log_softmax(teacher(rows.ids, positions)[:, :-1] / 2.0, -1)
    per_token = F.kl_div(s, t, log_target=True, reduction="none").sum(-1) * 4.0
    mask = rows.valid[:, 1:]
    assert math.isclose(got, per_token[mask].mean().item(), rel_tol=1e-5)


def test_loss_falls_on_a_tiny_problem(setup, tmp_path):
    """Eight documents, all in every batch: the mixers can learn what the removed attention did on them."""
    teacher, hybrid, _ = setup
    data = write_texts(tmp_path / "few.jsonl", 8, seed=3)
    cfg = config(hybrid, teacher, data, tmp_path / "out", steps1=20, pack=False, batch_size=8, stage1_warmup=5)
    distill(cfg)
    kl = [r["kl"] for r in read_metrics(tmp_path / "out" / "metrics.jsonl")]
    assert kl[-1] < 0.2 * kl[0], kl


def metrics_without_timing(folder):
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in read_metrics(folder / "metrics.jsonl")]


def test_killed_run_resumes_to_the_same_weights_and_metrics(setup, tmp_path):
    """Stage 1 has 3 steps, stage 2 has 3; checkpoints every 2 steps and at stage ends (2, 3, 4, 6).
    A run killed during step 6 loses only step 5 and 6; resumed, it ends bit-identical to one that never stopped."""
    teacher, hybrid, data = setup
    settings = dict(steps1=3, steps2=3, save_every=2)
    distill(config(hybrid, teacher, data, tmp_path / "whole", **settings))

    killed = tmp_path / "killed"
    with killed_at_step(6):
        distill(config(hybrid, teacher, data, killed, **settings))
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["step-000003", "step-000004"]
    assert len(read_metrics(killed / "metrics.jsonl")) == 5  # step 5 was logged, then lost with the kill
    # A half-written checkpoint (killed mid-save) is ignored: only renamed folders count.
    shutil.copytree(killed / "checkpoints" / "step-000004", killed / "checkpoints" / ".tmp-step-000006")
    (killed / "checkpoints" / ".tmp-step-000006" / "state.json").unlink()

    with pytest.raises(RadError, match="--resume"):
        distill(config(hybrid, teacher, data, killed, **settings))
    with pytest.raises(RadError, match="settings differ.*seq_len"):
        distill(config(hybrid, teacher, data, killed, resume=True, **{**settings, "seq_len": 16}))
    distill(config(hybrid, teacher, data, killed, resume=True, **settings))
    assert weights(killed).keys() == weights(tmp_path / "whole").keys()
    assert all(torch.equal(weights(killed)[n], w) for n, w in weights(tmp_path / "whole").items())
    assert metrics_without_timing(killed) == metrics_without_timing(tmp_path / "whole")


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(setup, tmp_path, monkeypatch):
    teacher, hybrid, data = setup
    calls = []
    real_terms = stage_losses_module.head_terms

    def turns_nan(*args, **kwargs):
        calls.append(1)
        kl, ce = real_terms(*args, **kwargs)
        return (kl * float("nan"), ce) if len(calls) >= 3 else (kl, ce)

    monkeypatch.setattr(stage_losses_module, "head_terms", turns_nan)
    out = tmp_path / "out"
    with pytest.raises(RadError, match=r"stopped at step 3 \(stage 1\): the loss nan is not finite; the last good checkpoint is .*step-000002"):
        distill(config(hybrid, teacher, data, out, steps1=5, save_every=2))
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000002"]
    assert not (out / "model.safetensors").exists()  # no model is written from a diverged run


def test_topk_cache_is_reused_and_refuses_other_settings(setup, tmp_path):
    teacher, hybrid, data = setup
    cache = tmp_path / "cache"
    distill(config(hybrid, teacher, data, tmp_path / "a", steps1=2, topk_cache=str(cache), topk=8))
    assert len(list(cache.glob("rows-*.safetensors"))) == 2
    calls = []
    with pytest.MonkeyPatch.context() as mp:  # the second run must not run the teacher at all
        mp.setattr(trainer_module.TopkCache, "put", lambda *a: calls.append(a))
        distill(config(hybrid, teacher, data, tmp_path / "b", steps1=2, topk_cache=str(cache), topk=8))
    assert not calls
    assert metrics_without_timing(tmp_path / "a") == metrics_without_timing(tmp_path / "b")
    with pytest.raises(RadError, match="other settings.*seq_len"):
        distill(config(hybrid, teacher, data, tmp_path / "c", steps1=2, topk_cache=str(cache), topk=8, seq_len=16))


def test_hidden_alignment_compares_teacher_attention_with_student_mixer(setup, tmp_path):
    """With `rad` init the mixers output 0, so the first step's hidden loss is the teacher's attention
    output's mean square at the replaced layers (hooked here independently), over real tokens."""
    teacher_dir, hybrid, data = setup
    distill(config(hybrid, teacher_dir, data, tmp_path / "out", steps1=1, hidden_weight=0.5, pack=False))
    got = read_metrics(tmp_path / "out" / "metrics.jsonl")[0]
    rows = build_rows(documents(f"jsonl:{data}", load_tokenizer(hybrid), 0, False), 4, 32, False, 0)
    teacher, outputs = load_model(teacher_dir), {}
    for i in REPLACED:
        teacher.model.layers[i].self_attn.register_forward_hook(lambda m, a, out, i=i: outputs.__setitem__(i, out))
    with torch.no_grad():
        teacher(rows.ids, torch.arange(32).expand(4, -1))
    mask = rows.valid[:, 1:]
    expected = sum(outputs[i][:, :-1][mask].pow(2).mean(-1).mean() for i in REPLACED) / len(REPLACED)
    assert math.isclose(got["hidden"], expected.item(), rel_tol=1e-5)
    assert math.isclose(got["loss"], got["kl"] + 0.5 * got["hidden"], rel_tol=1e-9)


def test_stage2_subset_and_parameter_specs(setup):
    _, hybrid, _ = setup
    model = load_model(hybrid)
    mlp = select_parameters(model, "model.layers.*.mlp.*")
    assert mlp and all(".mlp." in n for n in mlp)
    names = select_parameters(model, "ssm,model.layers.0.*")
    assert names == [n for n, _ in model.named_parameters() if ".mamba." in n or n.startswith("model.layers.0.")]
    with pytest.raises(RadError, match="no parameter matches"):
        select_parameters(model, "model.nothing.*")


def test_cli_errors_are_one_line(setup, tmp_path, capsys):
    teacher, hybrid, data = setup
    other = tmp_path / "other"  # the same model with a tokenizer whose ids are shuffled
    shutil.copytree(teacher, other)
    raw = json.loads((other / "tokenizer.json").read_text())
    vocab = raw["model"]["vocab"]
    raw["model"]["vocab"] = dict(zip(vocab, reversed(vocab.values())))
    (other / "tokenizer.json").write_text(json.dumps(raw))
    cases = [
        ([str(hybrid), "--teacher", str(other), "--data", f"jsonl:{data}"], "maps 128 tokens differently"),
        ([str(teacher), "--teacher", str(teacher), "--data", f"jsonl:{data}"], "no SSM mixers"),
        ([str(hybrid), "--teacher", str(teacher), "--data", "task:poetry"], "unknown task"),
        ([str(hybrid), "--teacher", str(teacher), "--data", f"jsonl:{data}", "--batch-size", "3", "--grad-accum", "2"],
         "multiple of"),
    ]
    for args, message in cases:
        assert main(["distill", *args, "--stage1-steps", "1", "--seq-len", "16", "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err


def test_bf16_autocast_on_cpu_follows_float32(setup, tmp_path):
    """--mixed-precision bf16 on a CPU (autocast, teacher in bfloat16): the same steps' losses as float32 to
    bfloat16's precision, the mixers' weights still float32, the model written in the student's dtype."""
    teacher, hybrid, data = setup
    distill(config(hybrid, teacher, data, tmp_path / "fp32", steps1=3))
    distill(config(hybrid, teacher, data, tmp_path / "bf16", steps1=3, mixed_precision="bf16"))
    full, half = (read_metrics(tmp_path / name / "metrics.jsonl") for name in ("fp32", "bf16"))
    assert all(math.isclose(a["kl"], b["kl"], rel_tol=0.05) for a, b in zip(full, half)), (full, half)
    assert full[0]["kl"] != half[0]["kl"]  # it did run in bfloat16
    written, source = weights(tmp_path / "bf16"), weights(hybrid)
    assert written.keys() == source.keys()
    assert all(w.dtype == source[n].dtype for n, w in written.items())


def test_killed_while_saving_the_model_resumes_to_a_complete_summary(setup, tmp_path, monkeypatch):
    """The last checkpoint is written, then the run dies writing the distilled model: the resumed run has no step
    left, and its distill.json still holds the final step's figures, those of a run that was never killed."""
    teacher, hybrid, data = setup
    distill(config(hybrid, teacher, data, tmp_path / "whole", steps1=3))
    killed = tmp_path / "killed"
    with monkeypatch.context() as mp, pytest.raises(KeyboardInterrupt):
        mp.setattr("rad.distill.distill.save_student", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
        distill(config(hybrid, teacher, data, killed, steps1=3))
    assert not (killed / "distill.json").exists()
    resumed = distill(config(hybrid, teacher, data, killed, steps1=3, resume=True))
    whole = json.loads((tmp_path / "whole" / "distill.json").read_text())
    final = json.loads((killed / "distill.json").read_text())["final"]
    assert resumed["final"] == final and final is not None
    assert {k: v for k, v in final.items() if k != "tokens_per_s"} == \
        {k: v for k, v in whole["final"].items() if k != "tokens_per_s"}
    assert all(torch.equal(weights(killed)[n], w) for n, w in weights(tmp_path / "whole").items())


@pytest.mark.parametrize("chunk, recompute", [(7, False), (1000, True)])
def test_a_steps_chunked_loss_and_gradients_equal_autograd_on_the_whole_logits(setup, tmp_path, chunk, recompute):
    """Every parameter trains (stage 2), the tied head too; the reference: torch's kl_div and cross_entropy over
    the full logits of every position, differentiated by autograd."""
    teacher_dir, hybrid, data = setup
    cfg = config(hybrid, teacher_dir, data, tmp_path / "out", temperature=2.0, ce_weight=0.5, loss_chunk=chunk,
                 pack=False)
    rows = build_rows(documents(f"jsonl:{data}", load_tokenizer(hybrid), 0, False), 4, 32, False, 0)
    student, teacher = load_model(hybrid).train(), load_model(teacher_dir).requires_grad_(False)
    student.checkpoint_layers = recompute
    loss = DistillationLoss(cfg, student, teacher, make_accelerator(cfg), None)
    kl, _, ce = loss.terms(student, rows, None)
    (kl + 0.5 * ce).backward()
    got = {name: p.grad.clone() for name, p in student.named_parameters()}
    student.zero_grad()
    student.checkpoint_layers = False
    positions, mask = torch.arange(32).expand(4, -1), rows.loss[:, 1:]
    s = student(rows.ids, positions)[:, :-1][mask]
    with torch.no_grad():
        t = teacher(rows.ids, positions)[:, :-1][mask]
    ref_kl = F.kl_div(F.log_softmax(s / 2, -1), F.log_softmax(t / 2, -1), log_target=True, reduction="sum") * 4
    ref_ce = F.cross_entropy(s, rows.ids[:, 1:][mask], reduction="sum")
    (ref_kl + 0.5 * ref_ce).backward()
    assert torch.allclose(kl, ref_kl, rtol=1e-5) and torch.allclose(ce, ref_ce, rtol=1e-5)
    for name, p in student.named_parameters():
        assert torch.allclose(got[name], p.grad, rtol=1e-4, atol=1e-6 * float(p.grad.abs().max())), name
