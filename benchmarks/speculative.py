"""Self-speculative decoding: rad vs transformers' assisted generation, same model, prompts and S.

The draft skips the attention sub-layers of S. transformers gets, as its assistant, a copy of the model
whose attention layers in S have zero o_proj weights: it drafts exactly what rad's draft drafts, but it
still computes those layers (transformers has no layer skipping; zeroing is the simplest correct
assistant on 5.17). Both draft K tokens per step (transformers: constant schedule, no confidence exit).
Every output is checked equal to plain greedy decoding. Printed per model, medians over repetitions:
tokens/s of both, their acceptance (transformers': from its forward counts), the ratio rad /
transformers, and rad's speed-up over its own plain decoding of the same prompt (decode phase, the two
taking turns at running first after transformers'), per prompt and over all prompts together.

Models: `redundant`, a random Llama whose attention in S is nearly silent (o_proj scaled down: what RAD
looks for), and, when it is shipped, `demo` on held-out math questions, with the S and K that a small
sweep finds best (greedy growth of S by rad's modeled speed-up, then the best few timed); the benchmark then
measures them again, in runs of their own.
`--compile`: rad decodes compiled (CausalLM.compile_decoding, inductor; the warm-up round compiles), its plain decoding
too, and the sweep's cost model times the compiled forwards; the modeled speed-up of the chosen S and K is printed
beside the measured one. `--set 1,5:4` times that S and K on the trained model instead of sweeping (e.g. the set a
diagnosis chose), `--no-redundant` leaves the random model out. Run: python benchmarks/speculative.py [--reps 5]
[--threads 1] [--new-tokens 128] [--compile] [--set S:K] [--no-redundant]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from rad.decode.draft_policy import DraftPolicy
from rad.decode.generate import generate
from rad.decode.speculative import speculative_generate
from rad.errors import RadError
from rad.eval.profiling import measured_speedup, profile_speculative
from rad.data import math
from rad.model.io import load_model, resolve_model_dir
from rad.model.tokenizer import encode_prompt, load_tokenizer
from rad.search.speedup import pooled_speedup

REDUNDANT = dict(vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=8,
                 num_attention_heads=8, num_key_value_heads=4, bos_token_id=None, eos_token_id=None)
REDUNDANT_SKIP = [1, 2, 3, 4, 5, 6]


def redundant_model():
    """(folder, transformers model): random weights large enough for confident predictions, S nearly silent."""
    torch.manual_seed(0)
    reference = LlamaForCausalLM(LlamaConfig(**REDUNDANT)).eval()
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if p.dim() > 1 and "embed" not in name:
                p.normal_(0, 0.06)
        for i in REDUNDANT_SKIP:
            reference.model.layers[i].self_attn.o_proj.weight.mul_(0.05)
    folder = tempfile.mkdtemp(prefix="rad-bench-")
    reference.save_pretrained(folder)
    return folder, reference


def zeroed_assistant(reference, skip, draft_len):
    assistant = copy.deepcopy(reference)
    with torch.no_grad():
        for i in skip:
            assistant.model.layers[i].self_attn.o_proj.weight.zero_()
    assistant.generation_config.num_assistant_tokens = draft_len
    assistant.generation_config.num_assistant_tokens_schedule = "constant"
    assistant.generation_config.assistant_confidence_threshold = 0.0
    return assistant


class CallCounter:
    """Counts forward calls of a module (transformers does not report its acceptance)."""

    def __init__(self, module):
        self.calls = 0
        module.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.calls += 1


def run_transformers(reference, assistant, prompt, new_tokens, counters):
    before = [c.calls for c in counters]
    with torch.inference_mode():
        start = time.perf_counter()
        out = reference.generate(torch.tensor([prompt], device=reference.device), max_new_tokens=new_tokens,
                                 do_sample=False, assistant_model=assistant)[0, len(prompt):].tolist()
        seconds = time.perf_counter() - start  # tolist() waited for the device
    verifies, drafts = (c.calls - b for c, b in zip(counters, before))
    return out, seconds, (len(out) - verifies) / max(drafts, 1)  # each verification emits accepted + 1


def bench(name, folder, reference, skip, prompts, args, draft_len):
    ours = load_model(folder, device=args.device, compile=args.compile)
    reference = reference.to(args.device)
    policy = DraftPolicy(draft_len)
    assistant = zeroed_assistant(reference, skip, draft_len)
    greedy = [generate(ours, [p], args.new_tokens).tokens[0] for p in prompts]
    with torch.inference_mode():
        for prompt, expected in zip(prompts, greedy):
            hf = reference.generate(torch.tensor([prompt], device=args.device), max_new_tokens=args.new_tokens, do_sample=False)
            if hf[0, len(prompt):].tolist() != expected:
                raise SystemExit(f"{name}: rad's and transformers' greedy outputs differ")
    counters = [CallCounter(reference), CallCounter(assistant)]
    rows = {key: [] for key in ("rad_tps", "hf_tps", "ratio", "rad_acc", "hf_acc", "vs_plain")}
    pooled_parts = []
    for rep in range(args.reps + 1):  # the first round warms up
        for i, (prompt, expected) in enumerate(zip(prompts, greedy)):
            hf_tokens, hf_seconds, hf_acceptance = run_transformers(reference, assistant, prompt, args.new_tokens, counters)
            # The run right after transformers' is a few percent slower (its caches hold transformers' data), so
            # rad's speculative and plain decoding take turns at going first.
            if (rep + i) % 2:
                out = speculative_generate(ours, [prompt], args.new_tokens, skip=skip, policy=policy)
                plain = generate(ours, [prompt], args.new_tokens)
            else:
                plain = generate(ours, [prompt], args.new_tokens)
                out = speculative_generate(ours, [prompt], args.new_tokens, skip=skip, policy=policy)
            if out.tokens[0] != expected or hf_tokens != expected:
                raise SystemExit(f"{name}: an output differs from greedy decoding: the comparison would be meaningless")
            if rep:
                rows["rad_tps"].append(len(expected) / out.seconds)
                rows["hf_tps"].append(len(expected) / hf_seconds)
                rows["ratio"].append(hf_seconds / out.seconds)
                rows["rad_acc"].append(out.stats.acceptance_rate)
                rows["hf_acc"].append(hf_acceptance)
                rows["vs_plain"].append(measured_speedup(out, plain))
                pooled_parts.append((out.num_tokens, rows["vs_plain"][-1]))
    med = {key: statistics.median(values) for key, values in rows.items()}
    print(f"{name:<10} S={skip} K={draft_len}  rad {med['rad_tps']:7.1f} tok/s (acceptance {med['rad_acc']:.2f})   "
          f"transformers assisted {med['hf_tps']:7.1f} tok/s (acceptance {med['hf_acc']:.2f})   "
          f"ratio {med['ratio']:.2f}x (min {min(rows['ratio']):.2f}, max {max(rows['ratio']):.2f})   "
          f"rad vs its plain decoding {med['vs_plain']:.2f}x (decode phase; all prompts together "
          f"{pooled_speedup(pooled_parts):.2f}x; modeled {pooled(ours, prompts, skip, draft_len, args.new_tokens, False):.2f}x)"
          f"   outputs = greedy: yes", flush=True)


def pooled(model, prompts, skip, draft_len, new_tokens, measured: bool) -> float:
    """rad's speed-up of S and K over the prompts, each decoded alone as the timing does: modeled (from the
    cost model) or measured (against plain decoding in the same call)."""
    parts = []
    for prompt in prompts:
        profile = profile_speculative(model, [prompt], new_tokens, skip=skip, policy=DraftPolicy(draft_len),
                                      measure=measured, model_cost=not measured)
        speedup = profile.speedup_measured if measured else profile.speedup_modeled
        parts.append((profile.output.num_tokens, speedup or 1.0))
    return pooled_speedup(parts)


def sweep(folder, prompts, args, most: int = 6, finalists: int = 4) -> tuple[list[int], int]:
    """A small sweep: for each K, grow S one layer at a time, each time adding the layer with the best
    modeled speed-up (acceptance on the prompts, costs from the cost model); then time the `finalists`
    best (S, K) met and return the fastest. The modeled speed-up narrows the field without a clock, but it
    leaves out what a step costs besides its forwards (bookkeeping, a last step's token past the stop),
    and its best few lie within a few percent of each other on the shipped model, so the clock decides."""
    model = load_model(folder, device=args.device, compile=args.compile)
    met = {}
    for draft_len in args.sweep_draft_lens:
        skip = []
        for _ in range(most):
            scores = {layer: pooled(model, prompts, skip + [layer], draft_len, args.new_tokens, measured=False)
                      for layer in sorted(set(range(model.config.num_layers)) - set(skip))}
            layer = max(scores, key=scores.get)
            skip = sorted(skip + [layer])
            met[tuple(skip), draft_len] = scores[layer]
            print(f"  sweep: K={draft_len} S={skip} modeled speed-up {scores[layer]:.3f}x", flush=True)
    best = sorted(met, key=met.get, reverse=True)[:finalists]
    timed = {choice: [] for choice in best}
    for _ in range(2):  # alternating, so that a slow phase of the machine hits every finalist
        for skip, draft_len in best:
            timed[skip, draft_len].append(pooled(model, prompts, list(skip), draft_len, args.new_tokens, measured=True))
    for (skip, draft_len), speedups in timed.items():
        print(f"  finalist: K={draft_len} S={list(skip)} measured speed-up {statistics.median(speedups):.3f}x", flush=True)
    skip, draft_len = max(timed, key=lambda choice: statistics.median(timed[choice]))
    return list(skip), draft_len


def parse_set(text: str) -> tuple[list[int], int]:
    """'1,5:4' -> ([1, 5], 4)."""
    layers, draft_len = text.split(":")
    return [int(layer) for layer in layers.split(",")], int(draft_len)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--draft-len", type=int, default=2, help="K for both on the random model (2: the cost model's best there)")
    parser.add_argument("--demo-prompts", type=int, default=8, help="held-out math questions for the trained model")
    parser.add_argument("--sweep-draft-lens", type=lambda text: [int(k) for k in text.split(",")], default=[1, 2, 3, 4],
                        help="the values of K the trained model's sweep tries")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="rad decodes compiled (plain decoding too)")
    parser.add_argument("--set", type=parse_set, help="S:K to time on the trained model instead of a sweep, e.g. 1,5:4")
    parser.add_argument("--no-redundant", action="store_true", help="leave the random redundant model out")
    parser.add_argument("--model", default="demo", help="a trained model folder to sweep and time (default: the shipped demo)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, "
          f"{'compiled' if args.compile else 'eager'}, greedy, K={args.draft_len}, "
          f"prompt {args.prompt_len}, new {args.new_tokens}, median of {args.reps} x {args.prompts} prompts "
          f"({args.demo_prompts} for the trained model)")
    g = torch.Generator().manual_seed(0)

    if not args.no_redundant:
        folder, reference = redundant_model()
        prompts = [torch.randint(0, REDUNDANT["vocab_size"], (args.prompt_len,), generator=g).tolist()
                   for _ in range(args.prompts)]
        bench("redundant", folder, reference, REDUNDANT_SKIP, prompts, args, args.draft_len)

    try:
        folder = resolve_model_dir(args.model)
    except RadError as err:
        print(f"{args.model:<10} ({err})")
        return
    reference = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    tokenizer = load_tokenizer(folder)
    # What the demo model was trained for: held-out math questions (the sweep and the timing share them).
    prompts = [encode_prompt(tokenizer, problem.prompt) for problem in math.generate(args.demo_prompts, seed=1, split="test")]
    skip, draft_len = args.set or sweep(folder, prompts, args)
    bench(folder.name, folder, reference, skip, prompts, args, draft_len)


if __name__ == "__main__":
    main()
