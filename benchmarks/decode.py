"""Greedy decode speed, rad vs transformers' generate, on the same weights: two random Llamas, or a model folder
(`--model demo`: the shipped model; `--model smollm2`: SmolLM2-135M-Instruct as rad imports it) at several prompt
lengths.

For each model and prompt length: a random prompt, 128 new tokens (the time includes the prefill), four sides in turn
(several repetitions after a warm-up that also compiles): rad eager, rad compiled (`compile_decoding`, inductor),
transformers' eager `generate` (dynamic cache) and transformers' `generate` with its static cache and torch.compile
(the forward compiled whole by `generate` itself, inductor; CPU needs CompileConfig's all-devices switch). The outputs
are checked equal, then the median tokens/s of each and the ratios of rad compiled over the others, each the median
of per-round ratios. `--no-compile`: the two eager sides only. Run: python benchmarks/decode.py [--reps 5]
[--threads 1] [--model demo --prompt-lens 256] [--model smollm2 --prompt-lens 512,2048,8128]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM, CompileConfig, LlamaConfig, LlamaForCausalLM

from rad.decode.generate import generate
from rad.machine import calibration, describe
from rad.model.io import load_model, resolve_model_dir

MODELS = {
    "tiny (4 layers, hidden 128)": dict(hidden_size=128, intermediate_size=344, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2),
    "8 layers, hidden 512": dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4),
}


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def random_pair(shape: dict):
    """transformers' random Llama of `shape` and rad's model of the same weights."""
    torch.manual_seed(0)
    reference = LlamaForCausalLM(LlamaConfig(vocab_size=32000, eos_token_id=None, bos_token_id=None, **shape)).eval()
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder)
        return reference, load_model(folder)


def folder_pair(model: str):
    folder = resolve_model_dir(model)
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval(), load_model(folder)


def static_compiled() -> CompileConfig:
    config = CompileConfig(fullgraph=True, dynamic=False)
    config._compile_all_devices = True  # generate compiles on CUDA only, unless told
    return config


def bench_model(name: str, reference, ours, prompt_len: int, new_tokens: int, reps: int, compiled: bool):
    prompt = torch.randint(0, reference.config.vocab_size, (1, prompt_len), generator=torch.Generator().manual_seed(0))

    def transformers_side(**options):
        def run():
            with torch.inference_mode():
                return reference.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                                          do_sample=False, eos_token_id=None, **options)[0, prompt_len:].tolist()
        return run

    def rad_side(model):
        return lambda: generate(model, [prompt[0].tolist()], new_tokens).tokens[0]

    sides = {"rad eager": rad_side(ours), "transformers eager": transformers_side()}
    if compiled:
        twin = copy.deepcopy(ours)
        twin.compile_decoding()
        sides = {"rad compiled": rad_side(twin), **sides,
                 "transformers static+compile": transformers_side(cache_implementation="static",
                                                                  compile_config=static_compiled())}
    compile_s = {}
    for side, run in sides.items():  # warm-up; the first run of a compiled side compiles
        compile_s[side], _ = timed(run)
    times = {side: [] for side in sides}
    for _ in range(reps):
        outputs = {}
        for side, run in sides.items():
            seconds, outputs[side] = timed(run)
            times[side].append(seconds)
        assert len(set(map(tuple, outputs.values()))) == 1, "outputs differ: the comparison would be meaningless"
    tps = {side: new_tokens / statistics.median(t) for side, t in times.items()}
    ours_side = "rad compiled" if compiled else "rad eager"
    print(f"{name}, prompt {prompt_len}: " + "   ".join(f"{side} {rate:.1f} tok/s" for side, rate in tps.items()))
    for side in sides:
        if side != ours_side:
            ratios = [other / mine for other, mine in zip(times[side], times[ours_side])]
            print(f"    {ours_side} / {side}: {statistics.median(ratios):.2f}x (min {min(ratios):.2f}, max "
                  f"{max(ratios):.2f})")
    if compiled:
        print(f"    first run (compiling, once): rad {compile_s['rad compiled']:.1f} s, transformers "
              f"{compile_s['transformers static+compile']:.1f} s; same output on every side: yes")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--prompt-lens", default="256", help="prompt lengths, e.g. 512,2048,8192")
    parser.add_argument("--model", help="a model folder or name (demo, smollm2) instead of the two random Llamas")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, help="torch CPU threads for both sides (1 on a machine busy with other work)")
    parser.add_argument("--no-compile", action="store_true", help="the eager sides only")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {describe(calibration())}, greedy, "
          f"new {args.new_tokens}, median of {args.reps}")
    pairs = {args.model: folder_pair(args.model)} if args.model else {n: random_pair(s) for n, s in MODELS.items()}
    for name, (reference, ours) in pairs.items():
        for prompt_len in map(int, args.prompt_lens.split(",")):
            bench_model(name, reference, ours, prompt_len, args.new_tokens, args.reps, not args.no_compile)


if __name__ == "__main__":
    main()
