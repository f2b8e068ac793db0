"""Sharded distillation (`--fsdp`, torch's FSDP2 over gloo): two processes, each holding half of the student, follow the
one-process trajectory through stage 1 and stage 2 (every weight trains), and the whole-tensor checkpoint they write
resumes in one process to the same end. Tolerances as in test_distill_multiprocess (the same sums in another order).
"""

import json
import os
import shutil

import pytest
import torch
import torch.multiprocessing as mp
from distill_helpers import config, make_hybrid, write_texts
from test_distill_multiprocess import free_port, run

from rad.distill.data import build_rows, documents
from rad.distill.distill import distill, make_accelerator
from rad.distill.metrics import read_metrics
from rad.distill.trainer import Trainer
from rad.errors import RadError
from rad.model.io import load_model
from rad.model.tokenizer import load_tokenizer

STAGE1, STAGE2 = 2, 2


def worker(rank, port, cfg):
    """The whole command's work (rows, training, the final model gathered and written by process 0)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
    distill(cfg)
    torch.distributed.destroy_process_group()


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).norm() <= 1e-4 * a.norm())


def test_two_sharded_processes_follow_the_single_process_trajectory_and_resume_in_one(llama_dir, tmp_path):
    hybrid = make_hybrid(llama_dir, tmp_path / "hybrid")
    data = write_texts(tmp_path / "texts.jsonl", 100)
    settings = dict(steps1=STAGE1, steps2=STAGE2, save_every=2, keep_checkpoints=5, ce_weight=0.5, loss_chunk=17)
    one = config(hybrid, llama_dir, data, tmp_path / "one", **settings)
    two = config(hybrid, llama_dir, data, tmp_path / "two", fsdp=True, threads=1, **settings)
    rows = build_rows(documents(one.data, load_tokenizer(hybrid), 0, False), (STAGE1 + STAGE2) * one.batch_size,
                      one.seq_len, True, 0)
    single = run(one, rows).state_dict()
    mp.spawn(worker, args=(free_port(), two), nprocs=2)
    summary = json.loads((tmp_path / "two" / "distill.json").read_text())
    assert summary["processes"] == 2 and summary["sharded"]  # FSDP, not DDP

    a, b = read_metrics(tmp_path / "one" / "metrics.jsonl"), read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert [r["stage"] for r in b] == [1] * STAGE1 + [2] * STAGE2
    for x, y in zip(a, b, strict=True):
        assert abs(x["loss"] - y["loss"]) <= 1e-5 * abs(x["loss"]), (x, y)
        assert abs(x["grad_norm"] - y["grad_norm"]) <= 1e-4 * x["grad_norm"], (x, y)
    sharded = load_model(tmp_path / "two").state_dict()
    assert all(close(w, sharded[name]) for name, w in single.items())
    assert sum(not torch.equal(w, load_model(hybrid).state_dict()[n]) for n, w in single.items()) > len(single) // 2

    # The sharded run's checkpoint after stage 1 holds whole tensors: one process resumes it to the same end.
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "two", resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-000004")
    distill(config(hybrid, llama_dir, data, resumed, resume=True, **settings))
    assert [r["step"] for r in read_metrics(resumed / "metrics.jsonl")] == [1, 2, 3, 4]
    assert all(close(w, load_model(resumed).state_dict()[name]) for name, w in single.items())


def test_sharding_needs_several_processes_and_no_stage_that_runs_layers_apart(llama_dir, tmp_path):
    hybrid = make_hybrid(llama_dir, tmp_path / "hybrid")
    cfg = config(hybrid, llama_dir, tmp_path / "none.jsonl", tmp_path / "out", fsdp=True)
    with pytest.raises(RadError, match="several processes"):
        Trainer(cfg, load_model(hybrid), load_model(llama_dir), None, make_accelerator(cfg), settings={})
    for bad in ({"align_steps": 2}, {"stage1_on_policy": 0.5}):
        with pytest.raises(RadError, match="--fsdp does not go with"):
            config(hybrid, llama_dir, tmp_path / "none.jsonl", tmp_path / "out", fsdp=True, **bad)
