"""Greedy decode speed, rad vs transformers' generate, on the same weights: two random Llamas, or a real
checkpoint folder (`--model smollm2`: SmolLM2-135M-Instruct as rad imports it) at several prompt lengths.

For each model and prompt length: a random prompt, 128 new tokens (the time includes the prefill), both
implementations in turn (several repetitions after a warm-up), the outputs checked equal, then the median tokens/s
of each and the ratio rad / transformers. Run: python benchmarks/decode.py [--reps 5] [--threads 1]
[--model smollm2 --prompt-lens 512,2048,8128]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

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


def bench_model(name: str, reference, ours, prompt_len: int, new_tokens: int, reps: int):
    prompt = torch.randint(0, reference.config.vocab_size, (1, prompt_len), generator=torch.Generator().manual_seed(0))

    def run_reference():
        with torch.inference_mode():
            return reference.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                                      do_sample=False, eos_token_id=None)[0, prompt_len:].tolist()

    def run_ours():
        return generate(ours, [prompt[0].tolist()], new_tokens).tokens[0]

    run_reference(), run_ours()  # warm-up
    times = {"rad": [], "transformers": []}
    for _ in range(reps):
        t_ref, out_ref = timed(run_reference)
        t_ours, out_ours = timed(run_ours)
        assert out_ref == out_ours, "outputs differ: the comparison would be meaningless"
        times["transformers"].append(t_ref)
        times["rad"].append(t_ours)
    ratios = [r / o for r, o in zip(times["transformers"], times["rad"])]
    tps = {k: new_tokens / statistics.median(v) for k, v in times.items()}
    print(f"{name:<28} prompt {prompt_len:>5}  rad {tps['rad']:8.1f} tok/s   transformers {tps['transformers']:8.1f} tok/s   "
          f"ratio {statistics.median(ratios):.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f})   same output: yes")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--prompt-lens", default="256", help="prompt lengths, e.g. 512,2048,8192")
    parser.add_argument("--model", help="a model folder or name (smollm2) instead of the two random Llamas")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, help="torch CPU threads for both sides (1 on a machine busy with other work)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {describe(calibration())}, greedy, "
          f"new {args.new_tokens}, median of {args.reps}")
    pairs = {args.model: folder_pair(args.model)} if args.model else {n: random_pair(s) for n, s in MODELS.items()}
    for name, (reference, ours) in pairs.items():
        for prompt_len in map(int, args.prompt_lens.split(",")):
            bench_model(name, reference, ours, prompt_len, args.new_tokens, args.reps)


if __name__ == "__main__":
    main()
