"""A variant of the diagnosis objective: choose the k attention layers whose removal moves the model's next-token
distribution least on the distillation text, i.e. the skip set with the smallest KL(full || draft) there.

Why: with the `rad` init a hybrid starts out as the draft with those layers skipped, so the draft's KL to the full
model on the training text is exactly the distillation's starting loss. The diagnosis instead maximises a
speculative-decoding speed-up from the acceptance of greedy draft tokens after short prompts: a set can keep the
full model's top token (accepted) while moving the rest of the distribution (the KL the mixers must then learn back).
The search is the diagnosis's own (rad.search.bayes, Bayesian optimisation over k-subsets; `--trials`); only the
objective differs. `--local-search N` then starts from the best set seen (the search's, or a baseline's) and swaps
one layer in and one out while that lowers the KL, trying the swaps the leave-one-out KL ranks first (N evaluations).

Also printed, for every selection a diagnosis holds (its best set, uniform, block influence, leave-one-out KL, random)
and the KL search's set: the set's KL over the first 32, 256 and 1024 tokens of the same held-out pages, to see
whether context length changes the ranking.

    python benchmarks/select_by_kl.py --model smollm2 --k 12 --diagnosis runs/diag/diagnosis.json --trials 50 \\
        --out runs/select-kl.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from rad.app.convert import layers_from_diagnosis
from rad.data import text_set
from rad.model.io import load_model, resolve_model_dir
from rad.model.tokenizer import load_tokenizer
from rad.search.baselines import lowest_scores, random_sets, uniform_placement
from rad.search.bayes import run_search
from rad.search.objective import CachedObjective, Evaluation
from rad.search.schema import read_diagnosis

LENGTHS = (32, 256, 1024)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--diagnosis", required=True, help="diagnosis.json whose selections are compared")
    p.add_argument("--trials", type=int, default=50, help="Bayesian-optimisation trials (0: none)")
    p.add_argument("--local-search", type=int, default=0, help="evaluations of swaps from the best set seen")
    p.add_argument("--correlate", action="store_true",
                   help="also the KL of every set the diagnosis evaluated, and its rank correlation with the diagnosis's "
                        "objective")
    p.add_argument("--windows", type=int, default=8, help="windows of the distillation pages the objective reads")
    p.add_argument("--window", type=int, default=256, help="tokens per window")
    p.add_argument("--heldout", type=int, default=4, help="held-out pages for the per-length table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args()


def windows(tokenizer, split: str, n: int, length: int, seed: int) -> list[torch.Tensor]:
    """The first `length` tokens of `n` pages (drawn by seed) of the split that have that many."""
    pages = text_set.documents(split)
    random.Random(seed).shuffle(pages)
    found = []
    for _, text in pages:
        ids = tokenizer(text)["input_ids"]
        if len(ids) >= length:
            found.append(torch.tensor([ids[:length]]))
            if len(found) == n:
                return found
    raise SystemExit(f"fewer than {n} pages of the {split} split have {length} tokens")


class DraftKL:
    """skip -> Evaluation(-mean KL(full || draft) per token over the windows); the full model's side computed once."""

    def __init__(self, model, rows: list[torch.Tensor]):
        self.model, self.rows = model, rows
        self.full = [self.log_probs(ids, ()) for ids in rows]

    @torch.inference_mode()
    def log_probs(self, ids: torch.Tensor, skip) -> torch.Tensor:
        positions = torch.arange(ids.shape[1])[None]
        return torch.log_softmax(self.model(ids, positions, skip=skip).float(), dim=-1)

    def kl(self, skip) -> float:
        total = sum(float((f.exp() * (f - self.log_probs(ids, skip))).sum()) for f, ids in zip(self.full, self.rows))
        return total / sum(ids.shape[1] for ids in self.rows)

    def __call__(self, skip) -> Evaluation:
        kl = self.kl(skip)
        return Evaluation(-kl, {"kl": kl})


def local_search(objective: CachedObjective, start: list[int], layers: list[int], loo: dict[int, float],
                 budget: int) -> list[int]:
    """First-improvement swaps (one layer out, one in) from `start`, most promising first by leave-one-out KL: the
    set's layers with the highest score leave first, the outside layers with the lowest come in first."""
    current, spent = sorted(start), 0
    improved = True
    while improved and spent < budget:
        improved = False
        swaps = [(out, into) for out in sorted(current, key=lambda l: -loo[l])
                 for into in sorted(set(layers) - set(current), key=lambda l: loo[l])]
        for out, into in swaps:
            candidate = tuple(sorted(set(current) - {out} | {into}))
            if not objective.is_cached(candidate):
                spent += 1
            if objective(candidate).value > objective(tuple(current)).value:
                current, improved = list(candidate), True
                break
            if spent >= budget:
                break
    return current


def ranks(values: list[float]) -> list[float]:
    """0-based ranks, ties sharing their mean rank."""
    ordered = sorted(values)
    first = {v: ordered.index(v) for v in values}
    return [first[v] + (ordered.count(v) - 1) / 2 for v in values]


def correlate(objective: CachedObjective, diagnosis: dict, k: int) -> dict:
    """Spearman's rank correlation, over the sets the diagnosis evaluated, between its objective (higher: better)
    and the draft's KL on the distillation text (lower: better); a good proxy gives a strongly negative value."""
    trials = {tuple(sorted(t["skip"])): t["value"] for t in diagnosis["results"][str(k)]["trials"]}
    kls = [objective(skip).details["kl"] for skip in trials]
    a, b = ranks(list(trials.values())), ranks(kls)
    mean = (len(a) - 1) / 2
    rho = sum((x - mean) * (y - mean) for x, y in zip(a, b)) / (
        sum((x - mean) ** 2 for x in a) * sum((y - mean) ** 2 for y in b)) ** 0.5
    print(f"over the diagnosis's {len(kls)} sets: Spearman's rho between its objective and the draft's KL = {rho:.3f}; "
          f"KL of its sets {min(kls):.3f}..{max(kls):.3f}")
    return {"rho": rho, "sets": len(kls), "kl": kls, "objective": list(trials.values())}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    model_dir = resolve_model_dir(args.model)
    model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
    layers = list(range(model.config.num_layers))
    started = time.perf_counter()
    objective = CachedObjective(DraftKL(model, windows(tokenizer, "distill", args.windows, args.window, args.seed)))
    diagnosis = read_diagnosis(args.diagnosis)
    loo = {int(l): v for l, v in diagnosis["loo_kl"].items()}
    sets = {"rad": sorted(layers_from_diagnosis(args.diagnosis, args.k)), "uniform": list(uniform_placement(layers, args.k))}
    for name in ("block_influence", "loo_kl"):
        sets[name] = list(lowest_scores({int(l): v for l, v in diagnosis[name].items()}, layers, args.k))
    sets["random"] = next(list(s) for s in random_sets(layers, args.k, 10, args.seed) if list(s) not in sets.values())
    if args.trials:
        search = run_search(objective, layers, args.k, args.trials, seed=args.seed, progress=True)
        sets["kl_search"] = sorted(search.best.skip)
        print(f"KL search: {args.trials} trials in {time.perf_counter() - started:.0f} s; best set {sets['kl_search']}, "
              f"KL {-search.best.value:.4f} per token on {args.windows} x {args.window} distillation tokens")
    if args.local_search:
        start = max(sets.values(), key=lambda skip: objective(tuple(skip)).value)
        sets["kl_local"] = local_search(objective, start, layers, loo, args.local_search)
        print(f"local search from {start}: {sets['kl_local']}, KL {objective(tuple(sets['kl_local'])).details['kl']:.4f}")
    best = sets.get("kl_local") or sets.get("kl_search")
    correlation = correlate(objective, diagnosis, args.k) if args.correlate else None
    table = {}
    print(f"KL(full || draft) per token on {args.heldout} held-out pages, by context length")
    print(f"{'selection':>15} " + " ".join(f"{n:>8}" for n in LENGTHS) + f" {'objective':>9}")
    pages = windows(tokenizer, "eval", args.heldout, max(LENGTHS), args.seed)  # the same pages at every length
    held = {n: DraftKL(model, [ids[:, :n] for ids in pages]) for n in LENGTHS}
    for name, skip in sets.items():
        table[name] = {"layers": skip, "objective_kl": objective(tuple(skip)).details["kl"],
                       **{str(n): held[n].kl(tuple(skip)) for n in LENGTHS}}
        print(f"{name:>15} " + " ".join(f"{table[name][str(n)]:8.4f}" for n in LENGTHS)
              + f" {table[name]['objective_kl']:9.4f}")
    args.out.write_text(json.dumps({"best": best, "table": table, "correlation": correlation,
                                    "evaluated": len(objective.results),
                                    "seconds": time.perf_counter() - started, "settings": vars(args)},
                                   default=str, indent=1))


if __name__ == "__main__":
    main()
