"""One distillation training step, eager vs `--compile` (torch.compile of the models' layers).

The step is stage 2's: the shipped demo model as teacher (in the step's precision), its k-layer `rad`
hybrid as the student (every parameter trains), a batch of random token rows, teacher forward, student
forward and backward, KL at temperature 4 plus cross-entropy, AdamW. Two students with the same weights
take turns step by step (so a machine whose speed drifts slows both alike); the compiled one's first
step, which compiles, is timed on its own. Prints both medians and their ratio.

Run: python benchmarks/distill_step.py [--reps 10] [--threads 2] [--precision bf16] [--layers 2,3,4,6]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from hybrid import interleaved_medians
from rad.distill.losses import ce_sum, kl_sum
from rad.model.convert import convert
from rad.model.io import load_model


def training_step(student, teacher, optimizer, ids, precision):
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    mask = torch.ones(ids.shape[0], ids.shape[1] - 1, dtype=torch.bool)
    with torch.no_grad():  # as in the trainer: the teacher in its own dtype, the student under autocast
        target = teacher(ids, positions)[:, :-1]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = student(ids, positions)[:, :-1]
        loss = (kl_sum(logits, target, mask, 4.0) + ce_sum(logits, ids[:, 1:], mask)) / mask.sum()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--layers", default="2,3,4,6", help="attention layers the hybrid replaces")
    parser.add_argument("--precision", choices=["bf16", "no"], default="bf16")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    teacher_dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    teacher = load_model("demo", dtype=teacher_dtype).requires_grad_(False)
    hybrid = convert(load_model("demo"), [int(i) for i in args.layers.split(",")], "rad")[0].train()
    eager, compiled = hybrid, copy.deepcopy(hybrid)
    compiled_teacher = copy.deepcopy(teacher)
    compiled.compile_layers()
    compiled_teacher.compile_layers()
    ids = torch.randint(0, teacher.config.vocab_size, (args.batch_size, args.seq_len), generator=torch.Generator().manual_seed(0))
    optimizers = {model: torch.optim.AdamW(model.parameters(), lr=1e-4) for model in (eager, compiled)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, precision {args.precision}, "
          f"{args.batch_size} x {args.seq_len} tokens, layers {args.layers} replaced, median of {args.reps} steps")

    start = time.perf_counter()
    training_step(compiled, compiled_teacher, optimizers[compiled], ids, args.precision)
    print(f"  first compiled step (compiles; seconds when torch's on-disk cache already holds it): "
          f"{time.perf_counter() - start:.1f} s")
    steps = {"eager": lambda: training_step(eager, teacher, optimizers[eager], ids, args.precision),
             "compiled": lambda: training_step(compiled, compiled_teacher, optimizers[compiled], ids, args.precision)}
    t = interleaved_medians(steps, args.reps, torch.device("cpu"))
    print(f"  eager {t['eager']:.3f} s/step   compiled {t['compiled']:.3f} s/step   "
          f"compiled is {t['eager'] / t['compiled']:.2f}x as fast")


if __name__ == "__main__":
    main()
