"""Two processes (DDP over gloo, started with torch.multiprocessing.spawn) follow the same loss
trajectory as one process at the same global batch, through an alignment stage (whose mixers run
outside the DDP wrapper, their gradients averaged by hand) and stage 1.

Tolerance: relative 1e-5 on every step's loss and relative 1e-4 (norm of the difference) on each final weight. The two runs
compute the same sums in a different order (each process sums its own rows; gloo adds the halves),
so they agree to float32 rounding, amplified a little by Adam over a few steps; a wrong split of rows,
a gradient averaged over processes without the token weighting, or a missed all-reduce is off by far more.
"""

import os
import socket

import torch
import torch.multiprocessing as mp
from distill_helpers import config, make_hybrid, write_texts
from safetensors.torch import load_file, save_file

from rad.distill.data import build_rows, documents
from rad.distill.distill import make_accelerator
from rad.distill.metrics import read_metrics
from rad.distill.trainer import Trainer
from rad.model.io import load_model
from rad.model.tokenizer import load_tokenizer

ALIGN, STEPS = 2, 4  # alignment steps, all steps


def run(cfg, rows):
    """The engine alone (no tokenizer load: spawned processes skip importing transformers)."""
    accelerator = make_accelerator(cfg)  # resets a precision an earlier test in this process left behind
    torch.set_num_threads(1)  # after accelerate (it sets 2 for multi-process CPU); the cores are shared
    student, teacher = load_model(cfg.student).train(), load_model(cfg.teacher).requires_grad_(False)
    Trainer(cfg, student, teacher, rows, accelerator, settings={}).run()
    return student


def worker(rank, port, cfg, rows):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
    student = run(cfg, rows)
    if rank == 0:
        save_file(student.state_dict(), os.path.join(cfg.out, "weights.safetensors"))
    torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_follow_the_single_process_trajectory(llama_dir, tmp_path):
    hybrid = make_hybrid(llama_dir, tmp_path / "hybrid")
    data = write_texts(tmp_path / "texts.jsonl", 100)
    one, two = (config(hybrid, llama_dir, data, tmp_path / name, steps1=STEPS - ALIGN,
                       align_steps=ALIGN, align_lr=1e-2, align_warmup=1) for name in ("one", "two"))
    rows = build_rows(documents(one.data, load_tokenizer(hybrid), 0, False), STEPS * one.batch_size, one.seq_len, True, 0)
    single = run(one, rows)  # one thread, as conftest sets for every test
    os.makedirs(two.out, exist_ok=True)
    mp.spawn(worker, args=(free_port(), two, rows), nprocs=2)

    a, b = read_metrics(tmp_path / "one" / "metrics.jsonl"), read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, STEPS + 1))
    for x, y in zip(a, b):
        assert abs(x["loss"] - y["loss"]) <= 1e-5 * abs(x["loss"]), (x, y)
        assert abs(x["grad_norm"] - y["grad_norm"]) <= 1e-4 * x["grad_norm"], (x, y)  # Adam hides gradient scale
        assert x["loss_tokens"] == y["loss_tokens"]
    assert [r["stage"] for r in a] == [0] * ALIGN + [1] * (STEPS - ALIGN)
    assert a[0]["loss"] != a[ALIGN - 1]["loss"] and a[ALIGN]["loss"] != a[-1]["loss"]  # both stages trained
    spawned = load_file(str(tmp_path / "two" / "weights.safetensors"))
    for name, w in single.state_dict().items():  # Adam turns rounding in near-zero gradients into lr-sized steps
        assert (w - spawned[name]).norm() <= 1e-4 * w.norm(), name
