"""Compiled decoding (rad.model.compiled) against eager decoding, and how often it compiles.

Most tests compile with torch's CompileCounter backend: dynamo traces and guards the layers exactly as for inductor,
then runs the captured graphs as they are, and counts every graph it captured (a recompile is one more). One test
runs inductor itself.
"""

import copy
import json
import time

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from rad.decode.draft_policy import DraftPolicy
from rad.decode.generate import generate
from rad.decode.sampling import SamplingConfig
from rad.decode.speculative import speculative_generate
from rad.eval.cost_model import measure_costs
from rad.model.compiled import cache_slots
from rad.model.convert import convert
from rad.model.io import load_model
from rad.model.llama import CausalLM
from test_cli import run_cli
from test_generate import random_prompts
from test_speculative import random_requests


def compiled_copy(model, backend=None):
    """A copy of `model` compiled for decoding, and the counter of the graphs it captures."""
    counter = backend or CompileCounter()
    twin = copy.deepcopy(model)
    twin.compile_decoding(counter)
    return twin, counter


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()  # graphs of earlier tests would otherwise be found, not captured
    yield
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def llama(llama_dir):
    return load_model(llama_dir)


@pytest.fixture(scope="module")
def hybrid(llama):
    return convert(llama, [1, 2], init="kqvo")[0]


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen3"])
def test_compiled_greedy_equals_eager_greedy(tiny_dirs, family):
    """Plain and speculative decoding, random S and K (fixed or adaptive), ragged batches."""
    eager = load_model(tiny_dirs[family][0])
    compiled, counter = compiled_copy(eager)
    for skip, policy, prompts, new in random_requests(family, 6):
        plain = generate(eager, prompts, new).tokens
        assert generate(compiled, prompts, new).tokens == plain
        assert speculative_generate(compiled, prompts, new, skip=skip, policy=policy).tokens == plain, (skip, policy)
    assert counter.frame_count > 0  # the layers did run compiled


def test_compiled_hybrid_greedy_equals_eager(hybrid):
    compiled, counter = compiled_copy(hybrid)
    prompts = random_prompts([3, 29, 14])
    plain = generate(hybrid, prompts, 30).tokens
    assert generate(compiled, prompts, 30).tokens == plain
    for skip, policy in [([0], DraftPolicy(4)), ([3], DraftPolicy(3, adaptive=True)), ([0, 3], DraftPolicy(2))]:
        assert speculative_generate(compiled, prompts, 30, skip=skip, policy=policy).tokens == plain
    assert counter.frame_count > 0


def test_no_recompile_across_decode_steps_skip_sets_and_bucketed_prompts(llama, hybrid):
    for model in (llama, hybrid):
        compiled, counter = compiled_copy(model)
        assert len(generate(compiled, random_prompts([20]), 65, stop_tokens=[]).tokens[0]) == 65  # 64 decode steps
        graphs = counter.frame_count
        assert graphs == 1  # the whole forward
        # Prompts of other lengths whose cache falls in the same bucket.
        lengths = [n for n in range(1, 120) if cache_slots(n + 65) == cache_slots(20 + 65)]
        assert len(lengths) > 10
        for n in lengths[:: len(lengths) // 4]:
            generate(compiled, random_prompts([n], seed=n), 65)
        assert counter.frame_count == graphs

        # Self-speculative decoding: the verification's whole forward, and the drafts' layers one graph per kind
        # (attention kept, attention skipped, SSM), not one per layer, and only once for any skip set.
        skip_sets = [[0, 3], [0, 1], [3, 0], [1, 2]] if model is llama else [[0], [3], [0]]  # the hybrid's: 0 and 3
        speculative_generate(compiled, random_prompts([20]), 40, skip=skip_sets[0], policy=DraftPolicy(3))
        assert counter.frame_count - graphs == (3 if model is llama else 4)
        graphs = counter.frame_count
        for seed, skip in enumerate(skip_sets[1:]):
            speculative_generate(compiled, random_prompts([20], seed=seed), 40, skip=skip, policy=DraftPolicy(3))
        assert counter.frame_count == graphs


def test_cache_buckets_cover_every_size_with_little_waste():
    sizes = range(1, 20000)
    assert all(cache_slots(n) >= n for n in sizes)
    assert all(cache_slots(n) < n + max(64, n / 8) for n in sizes)
    assert len({cache_slots(n) for n in range(4097, 8193)}) == 8  # eight buckets per doubling


def test_sampled_rows_follow_the_eager_streams(llama):
    """Sampling draws from the same uniforms compiled or not: the same tokens where logits agree (here: exactly)."""
    compiled, _ = compiled_copy(llama)
    prompts = random_prompts([5, 17])
    sampling = SamplingConfig(temperature=1.1, top_p=0.9, seed=3)
    assert generate(compiled, prompts, 20, sampling).tokens == generate(llama, prompts, 20, sampling).tokens
    assert (speculative_generate(compiled, prompts, 20, sampling, skip=[2], policy=DraftPolicy(3)).tokens
            == speculative_generate(llama, prompts, 20, sampling, skip=[2], policy=DraftPolicy(3)).tokens)


def test_inductor_compiled_decoding_equals_eager(hybrid):
    """The real compiler: C++ kernels generated for the layers give the eager greedy tokens, and its compile time is
    kept."""
    compiled, _ = compiled_copy(hybrid, backend="inductor")
    prompts = random_prompts([9, 30])
    plain = generate(hybrid, prompts, 24).tokens
    assert generate(compiled, prompts, 24).tokens == plain
    assert speculative_generate(compiled, prompts, 24, skip=[0], policy=DraftPolicy(3)).tokens == plain
    assert compiled.compiled_decode.compile_seconds > 0


def test_cost_model_times_the_compiled_layers(llama):
    """The speed-up's costs come from forwards through the compiled graphs (the whole forward at widths 1 and W; a
    draft's layers, attention kept and skipped: four graphs), and model a draft forward's time."""
    compiled, counter = compiled_copy(llama)
    costs = measure_costs(compiled, 1, 128, 4)
    assert counter.frame_count == 4
    assert min(costs.attention) > 0 and costs.mlp == (0.0, 0.0) and min(costs.rest) > 0 and min(costs.full) > 0
    times = []
    with torch.inference_mode():  # as decoding runs: tensors made outside it would be guarded as other inputs
        cache = compiled.new_cache(1, 128)
        cache.fresh = False
        for _ in range(20):
            start = time.perf_counter()
            compiled(torch.zeros(1, 1, dtype=torch.long), torch.tensor([[127]]), cache, [1])
            times.append(time.perf_counter() - start)
    assert 0.5 < costs.forward(1, skipped=1) / min(times) < 2.0  # wide: other work shares these cores
    assert counter.frame_count == 4  # the draft forward ran the graphs the timing compiled


def test_cli_compile_decodes_compiled_and_reports_the_compile_time(capsys, llama_dir, monkeypatch):
    """`rad generate --compile` (plain and speculative) and `rad bench --compile`: the eager tokens, the compile time
    reported. (Compiled with the `eager` backend here: dynamo's graphs, run as captured, to keep the test fast.)"""
    compile_decoding = CausalLM.compile_decoding
    monkeypatch.setattr(CausalLM, "compile_decoding", lambda self, backend="inductor": compile_decoding(self, "eager"))
    base = ["generate", str(llama_dir), "--prompt", "w1 w2 w3", "--max-new-tokens", "10", "--json"]
    plain = json.loads(run_cli(capsys, *base)[1])
    assert "compile_s" not in plain
    for extra in ([], ["--speculative", "--skip", "1,3"]):
        code, out, _ = run_cli(capsys, *base, "--compile", *extra)
        result = json.loads(out)
        assert code == 0 and result["tokens"] == plain["tokens"] and result["compile_s"] > 0
    code, out, _ = run_cli(capsys, "bench", str(llama_dir), "--contexts", "16", "--batch-sizes", "1", "--reps", "1",
                           "--new-tokens", "4", "--compile", "--json")
    bench = json.loads(out)
    assert code == 0 and bench["compiled"] and bench["models"][0]["compile_s"] > 0
