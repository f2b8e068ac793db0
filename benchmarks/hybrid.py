"""Decode speed and memory of a Llama vs its hybrids; rad's chunked SSD scan vs transformers' Mamba2 torch path.

Part 1: a random Llama (8 layers, hidden 512, 8 query / 4 key-value heads) and its `rad`-init hybrids
keeping 50% and 25% of the attention layers. Per context: one prefill per model, then `--reps` timed
runs of `--new-tokens` greedy decode steps from that same prefix (the cache rolled back between runs),
models interleaved rep by rep so the noise of a shared machine spreads over all of them; median
tokens/s. Memory is what decoding holds: weights + KV cache + one conv and SSM state per SSM layer
(plus the peak allocated, on CUDA). The predicted ratio is bytes moved per decoded token, teacher over
hybrid: every weight but the embedding table once, the KV cache up to the current length, each SSM
state read and written once; compute and per-op overhead are what it leaves out.

Part 2: the mixer's prefill forward at the same lengths, rad's (chunked scan in pure torch) vs
transformers' Mamba2Mixer on its torch path, with the same weights and outputs checked equal.

Part 3: rad's torch scan itself at the model's chunk (256) vs the chunk it runs (TORCH_SCAN_CHUNK), for a
prompt and for a training batch (forward + backward), outputs checked equal.

`--compile`: part 1 decodes through compiled layers (CausalLM.compile_decoding, inductor; the warm-up compiles) and
parts 2 and 3 are left out. Run: python benchmarks/hybrid.py [--reps 3] [--contexts 256,1024,4096] [--device cpu]
[--threads 1] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rad.decode.loop import synchronize
from rad.model.cache import DecodeCache
from rad.model.config import ModelConfig
from rad.model.convert import convert
from rad.model.llama import CausalLM
from rad.model.ssd import ssd_scan
from rad.model.ssm import TORCH_SCAN_CHUNK, Mamba2Mixer

SHAPE = dict(model_type="llama", vocab_size=32000, hidden_size=512, intermediate_size=1376, num_layers=8,
             num_heads=8, num_kv_heads=4, head_dim=64, max_position_embeddings=8192)  # fmt: skip
HYBRIDS = {"hybrid 50% attention": [1, 3, 5, 7], "hybrid 25% attention": [1, 2, 3, 5, 6, 7]}


def build_models(device) -> dict[str, CausalLM]:
    torch.manual_seed(0)
    teacher = CausalLM(ModelConfig(**SHAPE)).to(device).eval()
    with torch.no_grad():  # larger than torch's default init, so logits are not all ties
        for p in teacher.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.05)
    return {"llama (teacher)": teacher, **{name: convert(teacher, layers)[0] for name, layers in HYBRIDS.items()}}


def state_bytes(model: CausalLM, length: int) -> tuple[int, int]:
    """(KV, SSM) bytes of a one-row cache of `length` tokens as plain decoding holds it (no rollback ring)."""
    cache = DecodeCache(model.config, 1, length, "meta", model.dtype, ssm_history=1)
    kv = cache.kv_bytes()
    return kv, cache.ssm_bytes() // 2  # the ring of 1 has a scratch slot besides the live state


def bytes_per_token(model: CausalLM, length: int) -> float:
    """Bytes a decode step must move: weights (no embedding table), KV up to `length`, SSM state in and out."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    weights -= 0 if model.config.tie_word_embeddings else model.model.embed_tokens.weight.nbytes
    kv, ssm = state_bytes(model, length)
    return weights + kv + 2 * ssm


@torch.inference_mode()
def decode_seconds(model: CausalLM, cache: DecodeCache, context: int, token: torch.Tensor, steps: int) -> float:
    cache.rollback(context)
    synchronize(model.device)
    start = time.perf_counter()
    for _ in range(steps):
        token = model(token[:, None], cache.lengths[:, None], cache)[:, -1].argmax(-1)
        cache.advance(1)
    synchronize(model.device)
    return time.perf_counter() - start


@torch.inference_mode()
def bench_decode(models: dict[str, CausalLM], context: int, steps: int, reps: int, device):
    prompt = torch.randint(0, SHAPE["vocab_size"], (1, context), device=device)
    positions = torch.arange(context, device=device)[None]
    runs, peaks = {}, {}
    for name, model in models.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        cache = model.new_cache(1, context + steps, ssm_history=steps + 1)  # room to roll back to the prompt
        token = model(prompt, positions, cache)[:, -1].argmax(-1)
        cache.advance(context)
        runs[name] = (cache, token)
        decode_seconds(model, cache, context, token, 2)  # warm-up
        peaks[name] = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    times = {name: [] for name in models}
    for _ in range(reps):
        for name, model in models.items():
            cache, token = runs[name]
            times[name].append(decode_seconds(model, cache, context, token, steps))
    return {name: steps / statistics.median(t) for name, t in times.items()}, peaks


def report_decode(models, contexts, steps, reps, device):
    names = list(models)
    teacher = names[0]
    for context in contexts:
        tps, peaks = bench_decode(models, context, steps, reps, device)
        length = context + steps // 2
        print(f"\ncontext {context}")
        teacher_kv = state_bytes(models[teacher], context + steps)[0]
        for name in names:
            model = models[name]
            kv, ssm = state_bytes(model, context + steps)
            weights = sum(p.numel() * p.element_size() for p in model.parameters())
            line = (f"  {name:<22} {tps[name]:7.1f} tok/s   memory {(weights + kv + ssm) / 2**20:6.1f} MiB"
                    f" (KV {kv / 2**20:5.1f} MiB = {kv / teacher_kv:.2f}x teacher's, SSM state {ssm / 2**10:5.0f} KiB)")
            if peaks[name] is not None:
                line += f"   peak allocated {peaks[name] / 2**20:.0f} MiB (prefill included)"
            if name != teacher:
                predicted = bytes_per_token(models[teacher], length) / bytes_per_token(model, length)
                measured = tps[name] / tps[teacher]
                line += f"   speed-up measured {measured:.2f}x, predicted {predicted:.2f}x ({measured / predicted:.2f} of predicted)"
            print(line)


def interleaved_medians(runs: dict, reps: int, device) -> dict:
    """Median seconds of each callable over `reps` rounds (after a warm-up round), taking turns so that a
    machine whose speed drifts slows all of them alike."""
    times = {name: [] for name in runs}
    for _ in range(reps + 1):
        for name, run in runs.items():
            synchronize(device)
            start = time.perf_counter()
            run()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(v[1:]) for name, v in times.items()}


def bench_scan(lengths, reps, device):
    """Mixer prefill forward: rad vs transformers' Mamba2 (torch path), same weights."""
    from transformers import Mamba2Config
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer as HFMixer

    hidden, heads, dim = SHAPE["hidden_size"], SHAPE["num_heads"], SHAPE["head_dim"]
    torch.manual_seed(0)  # the hybrids' mixer shape, with live (not rad-init zero) weights
    ours = Mamba2Mixer(hidden, heads, dim, n_groups=heads, d_state=dim, norm_group_size=heads * dim).to(device).eval()
    hf_config = Mamba2Config(hidden_size=hidden, num_heads=heads, head_dim=dim, expand=1, n_groups=heads,
                             state_size=dim, chunk_size=ours.chunk_size, use_bias=False, use_conv_bias=True,
                             layer_norm_epsilon=ours.norm.eps, num_hidden_layers=1)  # fmt: skip
    theirs = HFMixer(hf_config, layer_idx=0).to(device).eval()
    theirs.load_state_dict(ours.state_dict())
    print(f"\nMamba2 mixer prefill (heads {heads}, head_dim {dim}, d_state {dim}, groups {heads}, chunk {ours.chunk_size}: "
          f"transformers' as is, rad's torch scan capped at {TORCH_SCAN_CHUNK}), rad chunked scan vs transformers' Mamba2 torch path")
    for length in lengths:
        x = torch.randn(1, length, hidden, device=device)
        with torch.inference_mode():
            diff = (ours(x)[0] - theirs(x)).abs().max().item()
            t = interleaved_medians({"rad": lambda: ours(x), "transformers": lambda: theirs(x)}, reps, device)
        print(f"  length {length:>5}   rad {t['rad'] * 1000:8.1f} ms   transformers {t['transformers'] * 1000:8.1f} ms"
              f"   rad is {t['transformers'] / t['rad']:.2f}x as fast   (max |diff| {diff:.1e})")


def bench_chunks(reps, device):
    """rad's torch scan at chunk 256 vs TORCH_SCAN_CHUNK: the same sums, split differently."""
    heads, dim = SHAPE["num_heads"], SHAPE["head_dim"]
    print(f"\nrad's torch scan (heads {heads}, head_dim {dim}, d_state {dim}), chunk 256 vs {TORCH_SCAN_CHUNK}")
    for batch, length, train in ((1, 60, False), (1, 1024, False), (16, 256, True)):
        torch.manual_seed(0)
        x = torch.randn(batch, length, heads, dim, device=device, requires_grad=train)
        dt = torch.rand(batch, length, heads, device=device) * 0.1
        A, B, C = -torch.rand(heads, device=device), *torch.randn(2, batch, length, heads, dim, device=device)

        def run(chunk):
            with torch.set_grad_enabled(train):
                y, final = ssd_scan(x, dt, A, B, C, chunk)
                if train:
                    (y.square().sum() + final.sum()).backward()
            return y.detach()

        diff = (run(256) - run(TORCH_SCAN_CHUNK)).abs().max().item()
        t = interleaved_medians({chunk: lambda chunk=chunk: run(chunk) for chunk in (256, TORCH_SCAN_CHUNK)}, reps, device)
        what = f"{batch} x {length}, {'forward + backward' if train else 'forward'}"
        print(f"  {what:<32} chunk 256 {t[256] * 1000:8.1f} ms   chunk {TORCH_SCAN_CHUNK} {t[TORCH_SCAN_CHUNK] * 1000:8.1f} ms"
              f"   {t[256] / t[TORCH_SCAN_CHUNK]:.2f}x as fast   (max |diff| {diff:.1e})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", default="256,1024,4096")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--scan-reps", type=int, default=3, help="timed repetitions of each scan (transformers' is slow)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="decode through compiled layers; part 1 only")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 on a machine busy with other work: "
                        "spinning threads waiting for a busy core cost far more than they give)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    contexts = [int(c) for c in args.contexts.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}, float32, batch 1, "
          f"{args.new_tokens} decode steps, median of {args.reps}, {'compiled' if args.compile else 'eager'}")
    models = build_models(device)
    if args.compile:
        for model in models.values():
            model.compile_decoding()
    report_decode(models, contexts, args.new_tokens, args.reps, device)
    if args.compile:
        return
    bench_scan(contexts, args.scan_reps, device)
    bench_chunks(max(args.scan_reps, 5), device)


if __name__ == "__main__":
    main()
