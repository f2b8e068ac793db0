"""Greedy decode speed, rad vs transformers' generate, on the same random Llama weights.

For each model: a 256-token prompt, 128 new tokens, both implementations in turn (several
repetitions after a warm-up), the outputs checked equal, then the median tokens/s of each and the
ratio rad / transformers. Run: python benchmarks/decode.py [--reps 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rad.decode.generate import generate
from rad.model.io import load_model

MODELS = {
    "tiny (4 layers, hidden 128)": dict(hidden_size=128, intermediate_size=344, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2),
    "8 layers, hidden 512": dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4),
}


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def bench_model(name: str, shape: dict, prompt_len: int, new_tokens: int, reps: int):
    torch.manual_seed(0)
    reference = LlamaForCausalLM(LlamaConfig(vocab_size=32000, eos_token_id=None, bos_token_id=None, **shape)).eval()
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder)
        ours = load_model(folder)
    prompt = torch.randint(0, 32000, (1, prompt_len))

    def run_reference():
        with torch.inference_mode():
            return reference.generate(prompt, max_new_tokens=new_tokens, do_sample=False)[0, prompt_len:].tolist()

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
    print(f"{name:<28} rad {tps['rad']:8.1f} tok/s   transformers {tps['transformers']:8.1f} tok/s   "
          f"ratio {statistics.median(ratios):.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f})   same output: yes")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, help="torch CPU threads for both sides (1 on a machine busy with other work)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, greedy, prompt {args.prompt_len}, new {args.new_tokens}, median of {args.reps}")
    for name, shape in MODELS.items():
        bench_model(name, shape, args.prompt_len, args.new_tokens, args.reps)


if __name__ == "__main__":
    main()
