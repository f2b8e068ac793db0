"""lm-evaluation-harness on rad's backend vs the harness's own `hf` backend: the wall time of one generate-until
task (rad_math: 200 held-out problems, greedy, up to 256 new tokens) on the same checkpoint, one run each, and
the accuracy each reports (they must agree). Each backend first runs 8 documents untimed.

Run: python benchmarks/harness.py [--model demo] [--task rad_math] [--limit 200] [--batch-size 16] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import lm_eval
import torch
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from rad.eval.harness.backend import RadLM
from rad.eval.harness.run import SHIPPED_TASKS
from rad.machine import calibration, describe
from rad.model.io import resolve_model_dir


def timed_run(model, task: str, limit: int, manager) -> tuple[float, float]:
    """(seconds, the task's first metric) of one simple_evaluate, model loading excluded."""
    start = time.perf_counter()
    result = lm_eval.simple_evaluate(model=model, tasks=[task], limit=limit, task_manager=manager, bootstrap_iters=0)
    seconds = time.perf_counter() - start
    metrics = {k: v for k, v in result["results"][task].items() if "," in k and "stderr" not in k}
    return seconds, next(iter(metrics.values()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--task", default="rad_math")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = resolve_model_dir(args.model)
    manager = TaskManager(include_path=str(SHIPPED_TASKS), include_defaults=False)
    print(f"{args.model}, {args.task}, {args.limit} documents, batch {args.batch_size}; {describe(calibration())}")
    backends = {"rad": RadLM(str(folder), batch_size=args.batch_size),
                "hf": HFLM(pretrained=str(folder), device="cpu", dtype="float32", batch_size=args.batch_size)}
    for model in backends.values():  # warm-up: the first run of a process pays for lazy initialisation
        timed_run(model, args.task, 8, manager)
    times = {}
    for name, model in backends.items():
        times[name], metric = timed_run(model, args.task, args.limit, manager)
        print(f"  {name:<3} backend: {times[name]:7.1f} s   metric {metric:.4f}", flush=True)
    print(f"rad backend {times['hf'] / times['rad']:.2f}x as fast as hf")


if __name__ == "__main__":
    main()
