"""Self-speculative decoding against plain decoding (the reference), rows alone, and brute force."""

import json
import random

import pytest
import torch

from rad.decode.draft_policy import AdaptiveExit, DraftPolicy
from rad.decode.generate import generate
from rad.decode.loop import GenerationOutput
from rad.decode.sampling import SamplingConfig
from rad.decode.speculative import speculative_generate
from rad.errors import RadError
from rad.eval.profiling import measured_speedup, profile_speculative
from rad.model.convert import convert
from rad.data import math
from rad.model.io import load_model, resolve_model_dir
from rad.model.tokenizer import encode_prompt, load_tokenizer
from test_cli import run_cli
from test_generate import random_prompts

SAMPLED = SamplingConfig(temperature=1.1, top_p=0.9, seed=5)


@pytest.fixture(scope="module")
def llama(llama_dir):
    return load_model(llama_dir)


def random_requests(seed, trials: int):
    """(S, K policy, prompts, new tokens) of `trials` requests for a 4-layer model: random S, K (fixed or adaptive),
    batch sizes, prompt lengths and lengths to generate."""
    rng = random.Random(seed)
    for trial in range(trials):
        skip = rng.sample(range(4), rng.randint(0, 4))
        policy = DraftPolicy(draft_len=rng.randint(1, 6), adaptive=rng.random() < 0.3)
        prompts = random_prompts([rng.randint(1, 40) for _ in range(rng.randint(1, 4))], seed=trial)
        yield skip, policy, prompts, rng.randint(1, 30)


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen3"])
def test_greedy_equals_plain_greedy_for_random_skip_sets(tiny_dirs, family):
    model = load_model(tiny_dirs[family][0])
    for skip, policy, prompts, new in random_requests(family, 8):
        plain = generate(model, prompts, new).tokens
        assert speculative_generate(model, prompts, new, skip=skip, policy=policy).tokens == plain, (skip, policy)


def test_batch_rows_accept_their_own_counts_and_equal_rows_alone(llama):
    prompts = random_prompts([4, 37, 12, 25])
    batch = speculative_generate(llama, prompts, 28, skip=[1, 3], policy=DraftPolicy(4))
    alone = [speculative_generate(llama, [p], 28, skip=[1, 3], policy=DraftPolicy(4)) for p in prompts]
    assert batch.tokens == [out.tokens[0] for out in alone]
    # Rows accepted different numbers of drafts (else this test would not exercise per-row lengths).
    assert len({tuple(out.stats.histogram) for out in alone}) > 1
    assert batch.stats.histogram == [sum(h) for h in zip(*(out.stats.histogram for out in alone))]


def test_hybrid_rolls_its_ssm_state_back(llama):
    """With an SSM layer the draft also advances SSM state; only cache rollback restores it."""
    hybrid, _ = convert(llama, [1], init="kqvo")
    prompts = random_prompts([3, 29, 14])
    plain = generate(hybrid, prompts, 30).tokens
    for skip, policy in [([0], DraftPolicy(4)), ([2, 3], DraftPolicy(6, adaptive=True)), ([0, 2, 3], DraftPolicy(2))]:
        assert speculative_generate(hybrid, prompts, 30, skip=skip, policy=policy).tokens == plain
    with pytest.raises(RadError, match="not attention"):
        speculative_generate(hybrid, prompts, 4, skip=[1])


def test_empty_skip_accepts_every_draft(llama):
    prompts = random_prompts([9, 21])
    for sampling in (SamplingConfig(), SAMPLED):
        stats = speculative_generate(llama, prompts, 30, sampling, policy=DraftPolicy(5)).stats
        assert stats.drafted > 0 and stats.acceptance_rate == 1.0


def test_skipping_every_layer_is_still_exact(llama):
    prompts = random_prompts([7, 30, 2])
    out = speculative_generate(llama, prompts, 30, skip=range(4), policy=DraftPolicy(3))
    assert out.tokens == generate(llama, prompts, 30).tokens
    assert out.stats.acceptance_rate < 0.5  # the draft is poor, yet the output is the full model's


def test_stop_tokens_end_rows_as_in_plain_decoding(llama):
    prompts = random_prompts([6, 19, 33])
    free = generate(llama, prompts, 24).tokens
    stops = [free[0][4], free[1][10]]
    plain = generate(llama, prompts, 24, stop_tokens=stops).tokens
    assert len(plain[0]) <= 5 and len(plain[2]) > len(plain[0])  # rows finish at different steps
    out = speculative_generate(llama, prompts, 24, stop_tokens=stops, skip=[2], policy=DraftPolicy(4))
    assert out.tokens == plain


def test_sampled_batch_rows_equal_rows_alone_with_their_seeds(llama):
    prompts = random_prompts([5, 23, 11])
    policy = DraftPolicy(5, adaptive=True)
    batch = speculative_generate(llama, prompts, 24, SAMPLED, skip=[0, 2], policy=policy).tokens
    alone = [
        speculative_generate(llama, [p], 24, SamplingConfig(SAMPLED.temperature, SAMPLED.top_p, SAMPLED.seed + r),
                             skip=[0, 2], policy=policy).tokens[0]
        for r, p in enumerate(prompts)
    ]
    assert batch == alone
    other_seed = SamplingConfig(SAMPLED.temperature, SAMPLED.top_p, SAMPLED.seed + 1)
    assert speculative_generate(llama, prompts, 24, other_seed, skip=[0, 2], policy=policy).tokens != batch


def brute_force_histogram(model, prompt, tokens, skip):
    """K = 1 replayed from scratch: at each step the draft reads the full model's cache of everything
    before the pending token and proposes one token; it is accepted iff it is the next greedy token."""
    histogram, i = [0, 0], 1  # tokens[0] comes from the prefill; tokens[i - 1] is pending
    while i < len(tokens):
        if i == len(tokens) - 1:  # one token left to emit: nothing is drafted
            histogram[0] += 1
            break
        context = prompt + tokens[: i - 1]
        cache = model.new_cache(1, len(context) + 1)
        model(torch.tensor([context]), torch.arange(len(context))[None], cache)
        cache.advance(len(context))
        draft = model(torch.tensor([[tokens[i - 1]]]), torch.tensor([[len(context)]]), cache, skip)[0, -1].argmax()
        accepted = int(draft == tokens[i])
        histogram[accepted] += 1
        i += accepted + 1
    return histogram


def test_statistics_match_a_brute_force_replay(llama):
    prompt = random_prompts([13])[0]
    for skip in ([1], [0, 3]):
        out = speculative_generate(llama, [prompt], 40, skip=skip, policy=DraftPolicy(1))
        with torch.inference_mode():
            assert out.stats.histogram == brute_force_histogram(llama, prompt, out.tokens[0], skip)


def test_statistics_add_up(llama):
    prompts = random_prompts([8, 26, 3])
    profile = profile_speculative(llama, prompts, 30, skip=[1], policy=DraftPolicy(4), model_cost=False)
    out, stats = profile.output, profile.output.stats
    # Every live (row, step) pair emits its accepted drafts plus one token; the first comes from the prefill.
    assert out.num_tokens == len(prompts) + stats.steps + stats.accepted
    assert stats.accepted <= stats.drafted <= 4 * stats.steps
    assert stats.verify_forwards <= stats.steps and stats.draft_forwards <= 4 * stats.verify_forwards
    assert stats.acceptance_rate == stats.accepted / stats.drafted
    assert profile.plain.tokens == out.tokens and profile.speedup_measured > 0
    unmeasured = profile_speculative(llama, prompts, 30, skip=[1], measure=False, model_cost=False)
    assert unmeasured.plain is None and unmeasured.speedup_measured is None  # only when asked


def test_shipped_model_greedy_is_exact():
    try:
        folder = resolve_model_dir("demo")
    except RadError:
        pytest.skip("the demo model is not shipped yet")
    demo, tokenizer = load_model(folder), load_tokenizer(folder)
    prompts = [encode_prompt(tokenizer, problem.prompt) for problem in math.generate(3, seed=2, split="test")]
    plain = generate(demo, prompts, 40).tokens
    every_layer = list(range(demo.config.num_layers))
    for skip, policy in [([], DraftPolicy(3)), ([1, 3], DraftPolicy(4)), (every_layer, DraftPolicy(2, adaptive=True))]:
        out = speculative_generate(demo, prompts, 40, skip=skip, policy=policy)
        assert out.tokens == plain, skip
        assert skip or out.stats.acceptance_rate == 1.0


def test_adaptive_threshold_moves_toward_the_target():
    """By hand: too many rejections raise a row's threshold (draft less), too few lower it (draft more)."""
    policy = DraftPolicy(4, adaptive=True, threshold=0.5, target_acceptance=0.8, step=0.1, smoothing=0.5)
    exit_ = AdaptiveExit(policy, batch=4, device="cpu")
    accepted, drafted = torch.tensor([0, 4, 1, 3]), torch.tensor([4, 4, 0, 4])
    exit_.update(accepted, drafted, live=torch.tensor([True, True, True, False]))
    # Row 0: smoothed rate 0.5 * 0.8 + 0.5 * 0 = 0.4 < 0.8; row 1: 0.9 > 0.8; row 2 drafted nothing; row 3 finished.
    assert torch.allclose(exit_.acceptance, torch.tensor([0.4, 0.9, 0.8, 0.8]))
    assert torch.allclose(exit_.threshold, torch.tensor([0.6, 0.4, 0.5, 0.5]))
    probs = torch.tensor([[0.55, 0.45], [0.55, 0.45], [0.55, 0.45], [0.45, 0.55]])
    assert exit_.keep_drafting(probs).tolist() == [False, True, True, True]


def test_measured_speedup_leaves_out_plain_decodings_stop_check_overrun():
    """By hand: plain decoding ran 16 steps (15 forwards) where its longest row needed 9 tokens (8)."""
    tokens = [[1] * 9, [2] * 4]
    plain = GenerationOutput(tokens, prefill_s=0.1, decode_s=1.5, steps=16)
    spec = GenerationOutput(tokens, prefill_s=0.1, decode_s=0.4)
    assert measured_speedup(spec, plain) == pytest.approx((1.5 * 8 / 15) / 0.4)
    assert measured_speedup(GenerationOutput([[1]], 0.1, 0.0), GenerationOutput([[1]], 0.1, 0.0, steps=1)) is None


def test_bad_arguments_are_clear_errors(llama):
    for kwargs, message in [
        (dict(skip=[9]), "out of range"),
        (dict(skip=[-1]), "out of range"),
        (dict(skip=[1, 1]), "repeats"),
        (dict(max_new_tokens=0), "max_new_tokens"),
    ]:
        with pytest.raises(RadError, match=message):
            speculative_generate(llama, [[1, 2, 3]], **{"max_new_tokens": 4, **kwargs})
    with pytest.raises(RadError, match="--draft-len must be at least 1"):
        DraftPolicy(draft_len=0)
    with pytest.raises(RadError, match="--threshold must be at most 1"):
        DraftPolicy(adaptive=True, threshold=1.5)


def test_cli_speculative_json(capsys, llama_dir):
    base = ["generate", str(llama_dir), "--prompt", "w1 w2 w3", "--max-new-tokens", "10", "--json"]
    plain = json.loads(run_cli(capsys, *base)[1])
    for extra in (["--draft-len", "3"], ["--adaptive"]):
        code, out, _ = run_cli(capsys, *base, "--speculative", "--skip", "1,3", *extra)
        result = json.loads(out)
        assert code == 0 and result["tokens"] == plain["tokens"] and result["skip"] == [1, 3]
        assert 0 <= result["acceptance_rate"] <= 1 and result["mean_accepted"] >= 0
        assert result["speedup_measured"] > 0 and result["speedup_modeled"] > 0
        assert sum(result["accepted_histogram"]) >= result["verify_forwards"] > 0


@pytest.mark.parametrize("args, message", [
    (["--draft-len", "2"], "--speculative"),
    (["--speculative", "--draft-len", "0"], "--draft-len must be at least 1"),
    (["--speculative", "--skip", "1,1"], "repeats"),
])
def test_cli_bad_speculative_arguments(capsys, llama_dir, args, message):
    code, out, err = run_cli(capsys, "generate", str(llama_dir), "--prompt", "w1", *args)
    assert code == 2 and out == "" and message in err and err.count("\n") == 1
