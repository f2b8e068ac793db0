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

from rad.decode import loop
from rad.decode.draft_policy import DraftPolicy
from rad.decode.generate import generate
from rad.decode.sampling import SamplingConfig
from rad.decode.speculative import speculative_generate
from rad.eval.cost_model import measure_costs
from rad.model.compiled import CompiledDecoding, cache_slots
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

        # Self-speculative decoding: the verification's whole forward and the draft's, only once for any skip set.
        skip_sets = [[0, 3], [0, 1], [3, 0], [1, 2]] if model is llama else [[0], [3], [0]]  # the hybrid's: 0 and 3
        speculative_generate(compiled, random_prompts([20]), 40, skip=skip_sets[0], policy=DraftPolicy(3))
        assert counter.frame_count - graphs == 2
        graphs = counter.frame_count
        for seed, skip in enumerate(skip_sets[1:]):
            speculative_generate(compiled, random_prompts([20], seed=seed), 40, skip=skip, policy=DraftPolicy(3))
        assert counter.frame_count == graphs


def test_layerwise_drafts_share_one_graph_per_layer_kind(llama, hybrid):
    """Drafts run layer by layer (CUDA's way): the eager greedy tokens, and one graph per layer kind (attention kept,
    attention skipped, SSM), not one per layer, and only once for any skip set."""
    for model, skip_sets, kinds in ((llama, [[0, 3], [1], [2, 0]], 2), (hybrid, [[0], [3]], 3)):
        compiled, counter = copy.deepcopy(model), CompileCounter()
        compiled.compiled_decode = CompiledDecoding(compiled, counter, layerwise_drafts=True)
        prompts = random_prompts([20, 6])
        plain = generate(model, prompts, 30).tokens
        assert speculative_generate(compiled, prompts, 30, skip=skip_sets[0], policy=DraftPolicy(3)).tokens == plain
        assert counter.frame_count == 1 + kinds  # the verification's whole forward, and one graph per layer kind
        for skip in skip_sets[1:]:
            assert speculative_generate(compiled, prompts, 30, skip=skip, policy=DraftPolicy(3)).tokens == plain
        assert counter.frame_count == 1 + kinds


def test_cache_buckets_cover_every_size_with_little_waste():
    sizes = range(1, 20000)
    assert all(cache_slots(n) >= n for n in sizes)
    assert all(cache_slots(n) < n + max(64, n / 8) for n in sizes)
    assert len({cache_slots(n) for n in range(4097, 8193)}) == 8  # eight buckets per doubling


def test_memory_check_counts_the_cache_the_loop_allocates(llama, monkeypatch):
    """The memory a request is checked for is the cache decoding then allocates: bucketed when compiled."""
    checked, allocated = [], []
    monkeypatch.setattr(loop, "check_memory", lambda needed, *_: checked.append(needed))
    for model in (llama, compiled_copy(llama)[0]):
        new_cache = model.new_cache
        monkeypatch.setattr(model, "new_cache", lambda *args: allocated.append(new_cache(*args)) or allocated[-1])
        generate(model, random_prompts([20, 7]), 70)  # 90 slots; compiled: a bucket of 128
        speculative_generate(model, random_prompts([20]), 70, skip=[1], policy=DraftPolicy(3))
    assert checked == [cache.memory_bytes() for cache in allocated]
    assert [cache.max_len for cache in allocated] == [90, 94, 128, 128]


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


def test_inductor_draft_forward_equals_eager_for_each_skip_set(hybrid):
    """A draft forward through the one compiled draft graph (inductor, C++ wrapper) gives the eager draft's logits and
    leaves the cache as the eager draft does (a skipped layer's slots as they were), for skip sets with and without
    the first attention layer: each layer's torch.cond reads its own flag. (Tokens cannot show a wrong draft:
    verification makes speculative output right whatever the draft proposes.)"""
    compiled, _ = compiled_copy(hybrid, backend="inductor")
    prompt = torch.tensor(random_prompts([12]))
    with torch.inference_mode():
        for skip in ([3], [0], [0, 3]):  # the hybrid's attention layers: 0 and 3
            logits, caches = [], []
            for model in (hybrid, compiled):
                cache = model.new_cache(1, 64)
                model(prompt, torch.arange(12)[None], cache)
                cache.advance(12)
                cache.keys[skip[0]][:, :, 12] = 7.0  # stale keys in a skipped layer's next slot stay as they are
                logits.append(model(prompt[:, -1:], torch.tensor([[12]]), cache, skip))
                caches.append(cache)
            torch.testing.assert_close(logits[1], logits[0], rtol=1e-4, atol=1e-4)
            for layer in (0, 3):
                torch.testing.assert_close(caches[1].keys[layer], caches[0].keys[layer], rtol=1e-4, atol=1e-4)
                torch.testing.assert_close(caches[1].values[layer], caches[0].values[layer], rtol=1e-4, atol=1e-4)


def test_cost_model_times_the_compiled_layers(llama):
    """The speed-up's costs come from forwards through the compiled graphs (the whole forward at widths 1 and W, a
    draft's: three graphs), and model a draft forward's time."""
    compiled, counter = compiled_copy(llama)
    costs = measure_costs(compiled, 1, 128, 4)
    assert counter.frame_count == 3
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
    assert counter.frame_count == 3  # the draft forward ran the graphs the timing compiled


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
