"""`rad run` end to end on a tiny model: every artifact, resuming after a kill, bad input up front."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rad.data import math
from rad.data.bpe_trainer import save_tokenizer, train_tokenizer
from rad.errors import RadError
from rad.app.pipeline import STAGES, RunConfig, run
from rad.distill.config import DistillConfig
from rad.eval.accuracy import EvalConfig
from rad.eval.throughput import BenchConfig
from rad.search.config import DiagnoseConfig


@pytest.fixture(scope="module")
def task_model(tmp_path_factory):
    """A tiny random Llama with a byte-level tokenizer trained on the task corpus."""
    folder = tmp_path_factory.mktemp("task_model")
    tokenizer = train_tokenizer((p.prompt + p.completion for p in math.generate(200, seed=1)), vocab_size=300)
    save_tokenizer(tokenizer, folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    return folder


def reduced(model, out, distill: dict | None = None, **changes) -> RunConfig:
    """A run small enough for a test; `distill` changes the distillation's settings, `changes` the run's."""
    distill_settings = dict(stage1_steps=4, batch_size=2, seq_len=48, save_every=2, mixed_precision="no") | (distill or {})
    settings = dict(model=str(model), k=1, out=str(out), tasks=["math"],
                    diagnose=DiagnoseConfig(trials=3, prompts=["task:math", "task:code"], n_prompts=2, max_new_tokens=6),
                    distill=DistillConfig(**distill_settings), eval=EvalConfig(n=3, max_new_tokens=8, batch_size=32),
                    bench=BenchConfig(contexts=[16, 32], batch_sizes=[1], new_tokens=4, reps=1))
    return RunConfig(**(settings | changes))


def test_reduced_run_writes_every_artifact(task_model, tmp_path):
    lines = []
    # Rows long enough to hold a whole problem: with --assistant-only a row of prompt tokens alone has no loss.
    threads = torch.get_num_threads()
    try:
        distill = dict(temperature=2.0, assistant_only=True, seq_len=160, threads=2)
        summaries = run(reduced(task_model, tmp_path, distill, threads=1, time_budget=10_000), log=lines.append)
        assert torch.get_num_threads() == 1  # the stages after distillation ran with the run's thread count again
    finally:
        torch.set_num_threads(threads)
    assert list(summaries) == list(STAGES)
    distilled = json.loads((tmp_path / "distill" / "distill.json").read_text())["config"]
    assert distilled["temperature"] == 2.0 and distilled["assistant_only"] is True and distilled["threads"] == 2
    # The run's budget, less what the stages before took and a reserve for the evaluation, went to distillation;
    # it was ample, so the stage kept its configured steps.
    assert 9_000 < summaries["distill"]["time_budget"] < 10_000 - summaries["baseline"]["seconds"]
    assert summaries["distill"]["steps"] == 4
    diagnosis = json.loads((tmp_path / "diagnose" / "diagnosis.json").read_text())
    layers = diagnosis["results"]["1"]["best_layers"]
    hybrid = json.loads((tmp_path / "distill" / "config.json").read_text())
    assert len(layers) == 1 and summaries["convert"]["layers"] == layers
    types = hybrid["rad_config"]["layer_types"]  # the default (kv) mixers of a grouped-query model: rad's format
    assert hybrid["model_type"] == "rad_hybrid" and types[layers[0]] == "ssm" and types.count("ssm") == 1
    metrics = [json.loads(line) for line in (tmp_path / "distill" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    evaluation = json.loads((tmp_path / "eval.json").read_text())["models"]
    assert set(evaluation) == {"teacher", "hybrid"} and evaluation["hybrid"]["math"]["n"] == 3
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert [p["context"] for p in bench["models"][1]["points"]] == [16, 32]
    # The hybrid keeps K/V in 3 of 4 layers: its state grows 3/4 as fast with context (the SSM state is constant).
    growth = [m["points"][1]["state_bytes"] - m["points"][0]["state_bytes"] for m in bench["models"]]
    assert growth[1] * 4 == growth[0] * 3
    report = (tmp_path / "report.md").read_text()
    for title in ("redundant", "Distillation", "Accuracy", "Decode throughput", "Cost"):
        assert title in report
    assert all((tmp_path / "stages" / f"{stage}.json").is_file() for stage in STAGES)
    assert (tmp_path / "report.html").stat().st_size > 10_000


def test_killed_during_distillation_resumes_without_repeating_stages(task_model, tmp_path):
    config = reduced(task_model, tmp_path, dict(stage1_steps=30, save_every=2))
    script = f"from rad.app.pipeline import RunConfig, run; from rad.options import from_dict; " \
             f"run(from_dict(RunConfig, {asdict(config)!r}))"
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoints = tmp_path / "distill" / "checkpoints"
    deadline = time.monotonic() + 240
    while not (checkpoints.is_dir() and len(list(checkpoints.iterdir())) >= 2):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "distillation never checkpointed"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {stage: (tmp_path / "stages" / f"{stage}.json").stat().st_mtime_ns for stage in ("diagnose", "convert")}
    assert not (tmp_path / "stages" / "distill.json").exists()

    lines = []
    run(config, log=lines.append)
    assert any("diagnose: already done, skipped" in line for line in lines)
    assert any("convert: already done, skipped" in line for line in lines)
    for stage, mtime in finished.items():
        assert (tmp_path / "stages" / f"{stage}.json").stat().st_mtime_ns == mtime
    steps = [json.loads(line)["step"] for line in (tmp_path / "distill" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 31))  # resumed from a checkpoint: each step once, none missing


@pytest.mark.parametrize("changes, distill, message", [
    (dict(k=4), None, "--k must be between 1 and 3"),
    (dict(data="task:chess"), None, "chess"),
    (dict(tasks=["poetry"]), None, "unknown task 'poetry'"),
    (dict(tasks=["math", "ppl:python-docs"]), None, "rad run evaluates exact-match tasks"),
    (dict(teacher="/nowhere"), None, "does not exist"),
    (dict(price_per_hour=0), None, "--price-per-hour must be greater than 0"),
    ({}, dict(stage2_lr=-1e-4), "--stage2-lr must be greater than 0"),
    ({}, dict(temperature=0.0), "--temperature must be greater than 0"),
    ({}, dict(stage1_steps=0), "nothing to train"),
])
def test_bad_input_stops_before_any_stage(task_model, tmp_path, changes, distill, message):
    with pytest.raises(RadError, match=message):
        run(reduced(task_model, tmp_path / "out", distill, **changes), log=lambda line: None)
    assert not (tmp_path / "out" / "diagnose").exists()
