"""How fast the layer search finds the best skip set: Bayesian (rad's additive GP; Optuna's Matern GP and TPE
beside it) vs random search, and the diagnosis wall time.

For each k: evaluate every k-set once (the exhaustive optimum, on the modeled objective: acceptance
from greedy self-speculative decoding times the timed cost model, fixed for the whole run), then, for
several seeds, count the trials each sampler needs to first reach that optimum (none repeats a
set, so trials = distinct sets evaluated), and to first come within 1% of it. Prints the medians, and
each Bayesian median over random search's exact expectation (target for GP: <= 0.5) and over random
search's sampled median. The exact figure is the reference: random search without repeats reaches a
unique optimum after a uniformly distributed number of trials, so its median and mean are (N + 1) / 2,
while a median over 100 seeds of it still moves by a trial or two from draw to draw. Then times a
whole `diagnose` (search, baselines, exhaustive, plot) with --wall-trials trials.

Run: python benchmarks/search.py [--model demo] [--ks 2,4] [--seeds 100] [--optuna-seeds 30] [--prompts task:math|task:code]
Without the shipped model (or with --model random) a random model of its shape, with graded attention
strengths, stands in.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import torch

from rad.model.io import DEMO_MODEL_DIR, load_model
from rad.search.bayes import SAMPLERS, run_search
from rad.search.config import DiagnoseConfig
from rad.search.diagnose import diagnose
from rad.search.objective import CachedObjective
from rad.search.prompts import load_prompts
from rad.search.speedup import SpeedupConfig, SpeedupObjective


def random_model(folder: Path) -> Path:
    """The demo model's shape (8 layers, hidden 256, GQA) with random weights and a tokenizer trained on
    the math task; attention outputs scaled log-normally, so some layers matter and some barely do."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rad.data import math
    from rad.data.bpe_trainer import save_tokenizer, train_tokenizer

    problems = math.generate(2000, seed=0)
    tokenizer = train_tokenizer([p.prompt + p.completion for p in problems])
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=768,
                                         num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=2,
                                         bos_token_id=None, eos_token_id=None)).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.mul_(4 * float(torch.randn(()).exp()))
    model.save_pretrained(str(folder))
    save_tokenizer(tokenizer, folder)
    return folder


def prompts_for(model_dir: Path, source: str, n: int) -> list[list[int]]:
    from rad.model.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    return [tokenizer(text)["input_ids"] for text in load_prompts(source, n)]


def trials_to_reach(objective: CachedObjective, layers: list[int], k: int, optimum: float, sampler: str,
                    seed: int) -> tuple[int, int]:
    """Trials until the search first reaches the optimum, and until it first comes within 1% of it."""
    def stop(study, trial):
        if trial.value >= optimum:
            study.stop()

    values = [t.value for t in run_search(objective, layers, k, 10**6, sampler=sampler, seed=seed, callbacks=[stop]).trials]
    return values.index(optimum) + 1, next(n for n, v in enumerate(values, 1) if v >= 0.99 * optimum)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo" if (DEMO_MODEL_DIR / "config.json").is_file() else "random")
    parser.add_argument("--ks", default="2,4")
    parser.add_argument("--seeds", type=int, default=100, help="seeds for gp and random search (both fast)")
    parser.add_argument("--optuna-seeds", type=int, default=30, help="seeds for gp-matern and tpe (slower; for comparison)")
    parser.add_argument("--prompts", default="task:math", help="diagnosis prompts: task:math, task:code, jsonl:PATH, text:PATH")
    parser.add_argument("--n-prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--wall-trials", type=int, default=50, help="trials of the timed diagnosis (0: skip)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = random_model(Path(scratch)) if args.model == "random" else (DEMO_MODEL_DIR if args.model == "demo" else Path(args.model))
        model = load_model(model_dir)
        layers = model.config.attention_layers
        objective = CachedObjective(SpeedupObjective(model, {"prompts": prompts_for(model_dir, args.prompts, args.n_prompts)},
                                                     SpeedupConfig(max_new_tokens=args.max_new_tokens)))
        print(f"model {args.model}: {len(layers)} attention layers; {args.n_prompts} {args.prompts} prompts x {args.max_new_tokens} "
              f"new tokens; modeled objective; torch threads {torch.get_num_threads()}")
        for k in (int(k) for k in args.ks.split(",")):
            start = time.perf_counter()
            sets = list(itertools.combinations(layers, k))
            best = max(sets, key=lambda s: objective(s).value)
            optimum = objective(best).value
            per_set = (time.perf_counter() - start) / len(sets)
            seeds = {sampler: args.seeds if sampler in ("gp", "random") else args.optuna_seeds for sampler in SAMPLERS}
            reached = {sampler: [trials_to_reach(objective, layers, k, optimum, sampler, seed) for seed in range(seeds[sampler])]
                       for sampler in SAMPLERS}
            # Random search without repeats draws the sets in a uniformly random order: its expected trials to
            # the first of `ties` optimal sets among N is (N + 1) / (ties + 1), a reference free of seed luck.
            ties = sum(objective(s).value >= optimum for s in sets)
            expected = (len(sets) + 1) / (ties + 1)
            print(f"k={k}: {len(sets)} sets, optimum {list(best)} speed-up {optimum:.3f} ({per_set:.2f} s per set); "
                  f"{ties} set(s) share the optimum, so random search expects {expected:.1f} trials")
            medians = {}
            for sampler, runs in reached.items():
                exact, close = [r[0] for r in runs], [r[1] for r in runs]
                medians[sampler] = statistics.median(exact), statistics.median(close)
                print(f"  {sampler:<9} ({len(runs)} seeds) trials to the optimum: median {medians[sampler][0]:>5} {exact}; "
                      f"to within 1%: median {medians[sampler][1]:>5} {close}")
            for sampler in ("gp", "gp-matern", "tpe"):
                exact, close = (medians[sampler][i] / medians["random"][i] for i in (0, 1))
                print(f"  {sampler}: {medians[sampler][0] / expected:.2f} of random search's expected trials (target for gp "
                      f"<= 0.5); against the sampled random median {exact:.2f} to the optimum, {close:.2f} to within 1%")
        if args.wall_trials:
            config = DiagnoseConfig(model=str(model_dir), out=str(Path(scratch) / "diagnosis"), ks=[max(int(k) for k in args.ks.split(","))],
                                    trials=args.wall_trials, n_prompts=args.n_prompts, max_new_tokens=args.max_new_tokens,
                                    progress=False)
            start = time.perf_counter()
            diagnosis = diagnose(config)
            result = diagnosis["results"][str(config.ks[0])]
            print(f"diagnosis wall time, k={config.ks[0]}, {len(result['trials'])} trials "
                  f"({result['evaluated_sets']} sets incl. baselines and exhaustive): {time.perf_counter() - start:.0f} s "
                  f"(target < 300 s)")


if __name__ == "__main__":
    main()
