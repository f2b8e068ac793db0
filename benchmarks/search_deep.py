"""Bayesian search vs random search where no exhaustive search reaches: a deep model (SmolLM2-135M-Instruct, 30
attention layers; C(30, 12) is 86 million sets).

For each seed both samplers run the same number of trials on the same modeled objective (acceptance of greedy
self-speculative decoding times the timed cost model, cached across runs: a set two runs both try is evaluated
once). Then, per k: the best value each sampler found (median over seeds), and the trials each needed to reach the
best value any run found and to come within 1% of it ("never" counts as trials + 1 in the median). Prompts are
the diagnosis's own sources (the chat suite and the text set's distillation pages).

Run: python benchmarks/search_deep.py [--model smollm2] [--ks 12] [--seeds 10] [--trials 50] [--n-prompts 8]
[--max-new-tokens 32] [--draft-len 4] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rad.machine import calibration, describe
from rad.model.io import load_model, resolve_model_dir
from rad.model.tokenizer import encode_prompt, load_tokenizer
from rad.search.bayes import run_search
from rad.search.objective import CachedObjective
from rad.search.prompts import is_chat, load_prompts
from rad.search.speedup import SpeedupConfig, SpeedupObjective

SOURCES = ("task:smol", "text:python-docs")


def trials_to(values: list[float], target: float) -> int:
    """1-based trial at which the running best first reaches `target`; len + 1 if it never does."""
    return next((n for n, v in enumerate(values, 1) if v >= target), len(values) + 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--ks", default="12")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--n-prompts", type=int, default=8, help="prompts per source")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--draft-len", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = resolve_model_dir(args.model)
    model, tokenizer = load_model(folder), load_tokenizer(folder)
    sources = {spec: [encode_prompt(tokenizer, text, chat=is_chat(spec)) for text in load_prompts(spec, args.n_prompts)]
               for spec in SOURCES}
    objective = CachedObjective(SpeedupObjective(model, sources, SpeedupConfig("modeled", args.max_new_tokens, args.draft_len)))
    layers = model.config.attention_layers
    print(f"{args.model}: {len(layers)} attention layers; {args.n_prompts} prompts per source {', '.join(SOURCES)} x "
          f"{args.max_new_tokens} new tokens, draft length {args.draft_len}; {torch.get_num_threads()} threads; {describe(calibration())}")
    for k in map(int, args.ks.split(",")):
        start = time.perf_counter()
        values = {"gp": [], "random": []}
        for seed in range(args.seeds):
            for sampler, runs in values.items():
                runs.append([t.value for t in run_search(objective, layers, k, args.trials, sampler=sampler,
                                                         seed=seed).trials])
                print(f"  k={k} seed {seed} {sampler}: best {max(runs[-1]):.4f} "
                      f"(values {', '.join(f'{v:.3f}' for v in runs[-1])})", flush=True)
        best = max(v for runs in values.values() for run in runs for v in run)
        print(f"k={k}: best value any run found {best:.4f}; {len(objective.evaluated(k))} distinct sets evaluated "
              f"in {time.perf_counter() - start:.0f} s")
        for sampler, runs in values.items():
            found = [max(run) for run in runs]
            exact, close = [trials_to(run, best) for run in runs], [trials_to(run, 0.99 * best) for run in runs]
            print(f"  {sampler:<7} best found: median {statistics.median(found):.4f} (min {min(found):.4f}); "
                  f"trials to the best: median {statistics.median(exact)} {exact}; "
                  f"to within 1%: median {statistics.median(close)} {close}")


if __name__ == "__main__":
    main()
