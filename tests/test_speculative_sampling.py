"""Speculative sampling follows the full model's distribution: a chi-square test against brute force.

A tiny-vocabulary model makes the exact distribution of whole continuations enumerable (transformers
gives the reference logits). Many seeded rows of one prompt are independent draws; the test statistic
must accept the real rule and reject deliberately wrong ones at the same seed and sample size.
"""

import copy
import itertools

import pytest
import torch
from torch._dynamo.testing import CompileCounter
from transformers import LlamaConfig, LlamaForCausalLM

from rad.decode import speculative
from rad.decode.draft_policy import DraftPolicy
from rad.decode.sampling import SamplingConfig, distribution, draw
from rad.decode.verify import accept_sampled
from rad.model.io import load_model

VOCAB, NEW_TOKENS, ROWS = 4, 4, 6000
PROMPT = [1, 3, 0, 2, 2]
NUCLEUS = SamplingConfig(temperature=1.2, top_p=0.95, seed=1000)  # zeroes some continuations
PLAIN = SamplingConfig(temperature=1.0, top_p=1.0, seed=1000)  # every continuation possible


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(rad model, transformers reference) of a 2-layer Llama over 4 tokens, attention strong enough to matter."""
    torch.manual_seed(7)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, bos_token_id=None, eos_token_id=None)
    reference = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if p.dim() > 1:
                p.normal_(0, 0.4)
    folder = tmp_path_factory.mktemp("vocab4")
    reference.save_pretrained(str(folder))
    return load_model(folder), reference


def exact_distribution(reference, sampling: SamplingConfig) -> torch.Tensor:
    """P(continuation) for all VOCAB**NEW_TOKENS continuations, from one batched reference forward."""
    continuations = torch.tensor(list(itertools.product(range(VOCAB), repeat=NEW_TOKENS)))
    ids = torch.cat([torch.tensor(PROMPT).expand(len(continuations), -1), continuations], 1)
    with torch.no_grad():
        logits = reference(ids).logits[:, len(PROMPT) - 1 : -1]
    probs = distribution(logits, sampling).double()
    return probs.gather(-1, continuations[..., None]).squeeze(-1).prod(-1)


def chi_square_p_value(tokens: list[list[int]], expected: torch.Tensor) -> float:
    """p-value of the observed continuations under `expected`; cells expecting < 5 draws are pooled."""
    cells = torch.tensor([sum(t * VOCAB ** (NEW_TOKENS - 1 - i) for i, t in enumerate(row)) for row in tokens])
    observed = torch.bincount(cells, minlength=len(expected)).double()
    if observed[expected == 0].sum() > 0:
        return 0.0  # a continuation of probability 0 was drawn
    counts = expected * len(tokens)
    small = (counts < 5) & (expected > 0)
    obs = torch.cat([observed[~small & (expected > 0)], observed[small].sum()[None]])
    exp = torch.cat([counts[~small & (expected > 0)], counts[small].sum()[None]])
    statistic = ((obs - exp) ** 2 / exp).sum()
    df = len(obs) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.double), statistic / 2))


def sample(model, sampling: SamplingConfig):
    # Row r uses seed sampling.seed + r: ROWS independent draws in one batched call. The first step
    # drafts 2 tokens: rows reject the first, reject the second, or accept both and take a bonus token.
    out = speculative.speculative_generate(model, [PROMPT] * ROWS, NEW_TOKENS, sampling, stop_tokens=[],
                                           skip=[1], policy=DraftPolicy(3))
    assert all(len(row) == NEW_TOKENS for row in out.tokens)
    return out


def accept_everything(drafts, draft_probs, target_probs, draft_lens, accept_uniforms, next_uniforms):
    rows = torch.arange(len(drafts))
    return draft_lens, draw(target_probs[rows, draft_lens], next_uniforms.gather(1, draft_lens[:, None]).squeeze(1))


def resample_from_target(drafts, draft_probs, target_probs, draft_lens, accept_uniforms, next_uniforms):
    """The right acceptance test, but a rejected draft is replaced by a draw from p, not norm(max(0, p - q))."""
    accepted, _ = accept_sampled(drafts, draft_probs, target_probs, draft_lens, accept_uniforms, next_uniforms)
    rows = torch.arange(len(drafts))
    return accepted, draw(target_probs[rows, accepted], next_uniforms.gather(1, accepted[:, None]).squeeze(1))


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("sampling", [NUCLEUS, PLAIN])
def test_speculative_samples_follow_the_full_model(models, sampling, compiled):
    """Also with the layers compiled for decoding (CompileCounter: dynamo's graphs, run as captured)."""
    model, reference = models
    if compiled:
        torch._dynamo.reset()
        model = copy.deepcopy(model)
        counter = CompileCounter()
        model.compile_decoding(counter)
    out = sample(model, sampling)
    assert not compiled or counter.frame_count > 0
    assert min(out.stats.histogram[:3]) > ROWS / 10  # each branch of the step ran often
    assert chi_square_p_value(out.tokens, exact_distribution(reference, sampling)) > 1e-3


@pytest.mark.parametrize("wrong_rule", [accept_everything, resample_from_target])
def test_the_chi_square_test_rejects_a_wrong_rule(models, monkeypatch, wrong_rule):
    """Without top-p every continuation is possible: the statistic alone must catch the wrong rule."""
    model, reference = models
    monkeypatch.setattr(speculative, "accept_sampled", wrong_rule)
    assert chi_square_p_value(sample(model, PLAIN).tokens, exact_distribution(reference, PLAIN)) < 1e-6
