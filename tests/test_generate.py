"""Generation against transformers' generate, batches against single rows, and the sampler."""

import pytest
import torch

from rad.decode.generate import generate
from rad.decode.sampling import SamplingConfig, distribution, draw
from rad.errors import RadError
from rad.model.io import load_model
from tiny_models import VOCAB


def random_prompts(lengths, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in lengths]


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
def test_greedy_equals_transformers_generate(tiny_dirs, family):
    folder, reference = tiny_dirs[family]
    ours = load_model(folder)
    for prompt in random_prompts([7, 31]):
        expected = reference.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False)[0, len(prompt):]
        assert generate(ours, [prompt], 32).tokens[0] == expected.tolist()


def test_batch_rows_equal_rows_alone(llama_dir):
    model = load_model(llama_dir)
    prompts = random_prompts([5, 23, 11, 40])
    alone = [generate(model, [p], 32).tokens[0] for p in prompts]
    assert generate(model, prompts, 32).tokens == alone


def test_sampled_batch_rows_equal_rows_alone_with_their_seeds(llama_dir):
    model = load_model(llama_dir)
    prompts = random_prompts([5, 23, 11])
    batch = generate(model, prompts, 24, SamplingConfig(temperature=1.3, top_p=0.9, seed=10)).tokens
    alone = [generate(model, [p], 24, SamplingConfig(1.3, 0.9, seed=10 + r)).tokens[0] for r, p in enumerate(prompts)]
    assert batch == alone
    other_seed = generate(model, prompts, 24, SamplingConfig(temperature=1.3, top_p=0.9, seed=11)).tokens
    assert other_seed != batch


def test_stop_token_ends_a_row(llama_dir):
    model = load_model(llama_dir)
    prompt = random_prompts([9])[0]
    free = generate(model, [prompt], 20).tokens[0]
    stop = free[5]
    stopped = generate(model, [prompt], 20, stop_tokens=[stop]).tokens[0]
    assert stopped == free[: free.index(stop) + 1]


def test_a_finished_row_stops_the_loop_without_changing_its_tokens(llama_dir):
    """`finished` is asked every few steps; once every row says so, decoding ends early, and what was decoded is
    what decoding without it gives (a prefix of it)."""
    model = load_model(llama_dir)
    prompts = random_prompts([9, 17])
    free = generate(model, prompts, 64, stop_tokens=[])
    asked = []
    early = generate(model, prompts, 64, stop_tokens=[], finished=lambda row: asked.append(len(row)) or len(row) >= 10)
    assert free.steps == 64 and early.steps == 16  # asked at 8 (not yet), then at 16
    assert sorted(set(asked)) == [8, 16]
    assert early.tokens == [row[:16] for row in free.tokens]


def test_top_p_keeps_the_smallest_nucleus():
    """Brute force: the kept set is the shortest prefix (by probability) whose mass reaches top_p."""
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]])
    probs = torch.softmax(logits, -1)[0]
    for top_p in (0.3, 0.6, 0.8, 0.95):
        kept = distribution(logits, SamplingConfig(temperature=1.0, top_p=top_p))[0]
        order = probs.argsort(descending=True).tolist()
        size = next(k for k in range(1, 6) if probs[order[:k]].sum() >= top_p)
        assert set(kept.nonzero().flatten().tolist()) == set(order[:size])
        assert torch.allclose(kept[order[:size]], probs[order[:size]] / probs[order[:size]].sum())


def test_inverse_cdf_draw_matches_probabilities():
    probs = torch.tensor([0.1, 0.6, 0.3])
    uniforms = (torch.arange(10000, dtype=torch.float64) + 0.5) / 10000  # an even grid over [0, 1)
    counts = torch.bincount(draw(probs.expand(10000, 3), uniforms), minlength=3).float() / 10000
    assert torch.allclose(counts, probs, atol=1e-3)


def test_bad_arguments_are_clear_errors(llama_dir):
    model = load_model(llama_dir)
    for kwargs, message in [
        (dict(skip=[9]), "out of range"),
        (dict(skip=[1, 1]), "repeats"),
        (dict(max_new_tokens=0), "max_new_tokens"),
    ]:
        with pytest.raises(RadError, match=message):
            generate(model, [[1, 2, 3]], **{"max_new_tokens": 4, **kwargs})
    with pytest.raises(RadError, match="temperature"):
        SamplingConfig(temperature=-1)
    with pytest.raises(RadError, match="at least one token"):
        generate(model, [[]])


def test_skip_changes_generation_only_through_attention(llama_dir):
    """Skipping every layer's attention leaves a pure MLP stack: each token's logits depend on it alone."""
    model = load_model(llama_dir)
    prompts = random_prompts([6, 6])
    prompts[1][:5] = [p + 1 for p in prompts[0][:5]]  # same last token, different history
    prompts[1][5] = prompts[0][5]
    rows = generate(model, prompts, 8, skip=range(4)).tokens
    assert rows[0] == rows[1]
    assert rows[0] != generate(model, prompts[:1], 8).tokens[0]
