"""Our decoder against transformers' own models: same logits, same cache behaviour, same skipping."""

import pytest
import torch

from rad.model.io import load_model
from tiny_models import FAMILIES, VOCAB

PROMPT_LEN = 64


def prompt_ids(batch=2, length=PROMPT_LEN, seed=1):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def positions_for(ids):
    return torch.arange(ids.shape[1]).expand(ids.shape[0], -1)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_logits_match_transformers(tiny_dirs, family):
    folder, reference = tiny_dirs[family]
    ours = load_model(folder)
    ids = prompt_ids()
    with torch.no_grad():
        expected = reference(ids).logits
        without_cache = ours(ids, positions_for(ids))
        with_cache = ours(ids, positions_for(ids), ours.new_cache(2, PROMPT_LEN))
    assert (without_cache - expected).abs().max() <= 1e-4
    assert (with_cache - expected).abs().max() <= 1e-4


def test_llama3_scaling_is_exercised(tiny_dirs):
    """The llama3 config really changes the frequencies, so the parity above covers the scaling."""
    config = load_model(tiny_dirs["llama"][0]).config
    from rad.model.rope import inverse_frequencies

    plain = inverse_frequencies(type(config)(**{**config.to_dict(), "rope_scaling": None}))
    assert not torch.allclose(inverse_frequencies(config), plain)
    assert PROMPT_LEN > config.rope_scaling["original_max_position_embeddings"]


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen3"])
def test_prefill_then_decode_equals_full_forward(tiny_dirs, family):
    model = load_model(tiny_dirs[family][0])
    ids = prompt_ids(length=40)
    with torch.no_grad():
        full = model(ids, positions_for(ids))
        cache = model.new_cache(2, 40)
        steps = [model(ids[:, :24], positions_for(ids[:, :24]), cache)]
        for t in range(24, 40):
            steps.append(model(ids[:, t : t + 1], torch.full((2, 1), t), cache))
    assert (torch.cat(steps, dim=1) - full).abs().max() <= 1e-5


def test_rollback_then_redecode(llama_dir):
    model = load_model(llama_dir)
    ids = prompt_ids(length=30)
    other = prompt_ids(length=30, seed=7)
    positions = positions_for(ids)
    with torch.no_grad():
        cache = model.new_cache(2, 30)
        model(ids[:, :12], positions[:, :12], cache)
        cache.advance(12)
        first = model(ids[:, 12:], positions[:, 12:], cache)
        cache.advance(18)
        # Roll back to 12, decode different tokens over the same slots, roll back again, redo.
        cache.rollback(12)
        model(other[:, 12:], positions[:, 12:], cache)
        cache.advance(18)
        cache.rollback(torch.tensor([12, 12]))
        again = model(ids[:, 12:], positions[:, 12:], cache)
    assert cache.lengths.tolist() == [12, 12]
    assert torch.equal(first, again)


def zero_attention(module, args, kwargs, output):
    """A forward hook that makes an HF attention module contribute nothing."""
    return (torch.zeros_like(output[0]), *output[1:])


@pytest.mark.parametrize("skip", [{1}, {0, 2}, {0, 1, 2, 3}])
def test_skip_matches_transformers_with_zeroed_attention(tiny_dirs, skip):
    folder, reference = tiny_dirs["llama"]
    ours = load_model(folder)
    ids = prompt_ids()
    hooks = [reference.model.layers[i].self_attn.register_forward_hook(zero_attention, with_kwargs=True) for i in skip]
    try:
        with torch.no_grad():
            expected = reference(ids).logits
    finally:
        for hook in hooks:
            hook.remove()
    with torch.no_grad():
        skipped = ours(ids, positions_for(ids), ours.new_cache(2, PROMPT_LEN), skip=skip)
        full = ours(ids, positions_for(ids))
    assert (skipped - expected).abs().max() <= 1e-4
    assert (skipped - full).abs().max() > 1e-2  # the skip really changed something


def test_skipped_layers_write_nothing_to_cache(llama_dir):
    model = load_model(llama_dir)
    ids = prompt_ids()
    cache = model.new_cache(2, PROMPT_LEN)
    with torch.no_grad():
        model(ids, positions_for(ids), cache, skip={1, 3})
    assert cache.keys[1].abs().sum() == 0 and cache.values[3].abs().sum() == 0
    assert cache.keys[0].abs().sum() > 0


def test_reduced_precision_is_close(llama_dir):
    ids = prompt_ids()
    with torch.no_grad():
        full = load_model(llama_dir)(ids, positions_for(ids))
        for dtype in ("bfloat16", "float16"):
            half = load_model(llama_dir, dtype=dtype)
            assert half.dtype == getattr(torch, dtype)
            assert (half(ids, positions_for(ids)).float() - full).abs().max() < 0.1 * full.abs().max()


def test_sharded_checkpoint_loads(tiny_dirs, tmp_path):
    _, reference = tiny_dirs["qwen2"]
    reference.save_pretrained(str(tmp_path), max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    ids = prompt_ids()
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path)(ids, positions_for(ids)), load_model(tiny_dirs["qwen2"][0])(ids, positions_for(ids)))
