"""Hybrid models: transformers' Bamba runs our folders with the same logits, save/load is bit-exact,
the cache (KV + SSM ring) decodes, batches and rolls back exactly like a full forward."""

import copy

import pytest
import torch

from rad.decode.generate import generate
from rad.errors import RadError
from rad.model.convert import convert
from rad.model.hybrid import MixerSize
from rad.model.io import load_model, save_hybrid
from rad.model.ssd import ssd_states
from test_ssm import naive_scan, scan_inputs
from tiny_models import VOCAB

LAYERS = [1, 2]  # layers 0 and 3 keep attention
FULL = MixerSize("full")  # one SSM head per query head: a size transformers' Bamba can hold
CHUNK = 8  # small, so the 40-token inputs span several chunks in both implementations


def perturbed(model, seed=0):
    """Every parameter moved off its init, so no term of the forward is trivially 0 or 1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model


@pytest.fixture(scope="module")
def hybrid(llama_dir):
    """A kqvo-initialised, perturbed hybrid of the tiny Llama (GQA, llama3 rope), full-size mixers (Bamba's layout)."""
    return perturbed(convert(load_model(llama_dir), LAYERS, "kqvo", chunk_size=CHUNK, size=FULL)[0])


def ids_for(batch=2, length=40, seed=1):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def positions_for(ids, start=0):
    return (start + torch.arange(ids.shape[1])).expand(ids.shape[0], -1)


def max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("family,init", [("llama", "rad"), ("llama", "kqvo"), ("qwen2", "kqvo")])
def test_transformers_bamba_reproduces_our_logits(tiny_dirs, hybrid, tmp_path, family, init):
    """Llama (llama3 rope, GQA) and Qwen2 (q/k/v biases, which Bamba holds with a zero o_proj bias)."""
    from transformers import AutoModelForCausalLM

    if (family, init) == ("llama", "kqvo"):
        model = hybrid
    else:
        model = convert(load_model(tiny_dirs[family][0]), LAYERS, init, chunk_size=CHUNK, size=FULL)[0]
        model = perturbed(model) if init == "kqvo" else model
    assert save_hybrid(model, tmp_path / "h") == "bamba"
    theirs = AutoModelForCausalLM.from_pretrained(str(tmp_path / "h")).eval()
    assert type(theirs).__name__ == "BambaForCausalLM"
    assert [type(layer.mamba).__name__ for layer in theirs.model.layers if hasattr(layer, "mamba")] == ["BambaMixer"] * 2
    ours, ids = load_model(tmp_path / "h"), ids_for()
    with torch.no_grad():
        expected = theirs(ids).logits
        got = ours(ids, positions_for(ids))
    assert max_diff(got, expected) <= 1e-4
    assert max_diff(got, model(ids, positions_for(ids))) == 0


def test_loads_a_bamba_checkpoint_written_by_transformers(tmp_path):
    """Not one of ours: 2 B/C groups (the norm still spans d_inner, as transformers computes), mamba_expand 2,
    fields left to BambaConfig's defaults. Bamba's default half-rotary is refused with a clear message."""
    import json

    from transformers import BambaConfig, BambaForCausalLM

    rope = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0}
    config = BambaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, attn_layer_indices=[1], mamba_n_heads=8, mamba_d_head=16, mamba_n_groups=2,
                         mamba_d_state=8, mamba_chunk_size=8, rope_parameters=rope)  # fmt: skip
    torch.manual_seed(0)
    theirs = perturbed(BambaForCausalLM(config).eval())
    theirs.save_pretrained(str(tmp_path / "b"))
    ours, ids = load_model(tmp_path / "b"), ids_for()
    assert ours.config.layer_types == ["ssm", "attention", "ssm"]
    with torch.no_grad():
        assert max_diff(ours(ids, positions_for(ids)), theirs(ids).logits) <= 1e-4
    raw = json.loads((tmp_path / "b" / "config.json").read_text())
    del raw["rope_parameters"]["partial_rotary_factor"]
    (tmp_path / "b" / "config.json").write_text(json.dumps(raw))
    with pytest.raises(RadError, match="partial_rotary_factor 0.5"):
        load_model(tmp_path / "b")


def test_save_load_is_bit_exact(tiny_dirs, hybrid, tmp_path):
    qwen3 = perturbed(convert(load_model(tiny_dirs["qwen3"][0]), [0, 3], "kqvo")[0])  # rad's own format
    for name, model in (("bamba", hybrid), ("rad_hybrid", qwen3)):
        assert save_hybrid(model, tmp_path / name) == name
        loaded = load_model(tmp_path / name)
        assert loaded.config.layer_types == model.config.layer_types and loaded.config.ssm == model.config.ssm
        assert loaded.state_dict().keys() == model.state_dict().keys()
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
        ids = ids_for()
        with torch.no_grad():
            assert torch.equal(loaded(ids, positions_for(ids)), model(ids, positions_for(ids)))


def test_save_refuses_a_non_empty_folder(hybrid, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(RadError, match="not an empty folder"):
        save_hybrid(hybrid, tmp_path / "taken")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no temporary folder left behind


def test_prefill_steps_and_blocks_equal_full_forward(hybrid):
    ids = ids_for()
    with torch.no_grad():
        full = hybrid(ids, positions_for(ids))
        cache = hybrid.new_cache(2, 40)
        parts = [hybrid(ids[:, :33], positions_for(ids[:, :33]), cache)]  # > ssm_history: final state only
        cache.advance(33)
        for t in range(33, 36):  # single tokens: the recurrent step
            parts.append(hybrid(ids[:, t : t + 1], torch.full((2, 1), t), cache))
            cache.advance(1)
        parts.append(hybrid(ids[:, 36:], positions_for(ids[:, 36:], 36), cache))  # a verify-sized block
    assert max_diff(torch.cat(parts, dim=1), full) <= 5e-5  # float32; chunked scan vs steps round differently


def test_decode_step_compiles_without_graph_breaks(hybrid):
    """fullgraph=True fails on a host sync or a data-dependent shape in the KV + SSM cache path."""
    ids = ids_for()
    cache = hybrid.new_cache(2, 40)
    with torch.inference_mode():
        hybrid(ids[:, :10], positions_for(ids[:, :10]), cache)
        cache.advance(10)
        step = torch.compile(lambda t, p: hybrid(t, p, cache), fullgraph=True, backend="eager", dynamic=False)
        compiled = step(ids[:, 10:11], cache.lengths[:, None])
        eager = hybrid(ids[:, 10:11], cache.lengths[:, None], cache)
    assert torch.equal(compiled, eager)


def test_right_padded_batch_decodes_each_row_as_alone(hybrid):
    # Longer than ssm_history, so the cache keeps only the final state, which padding must not touch.
    prompts = [ids_for(1, 41, seed=2)[0].tolist(), ids_for(1, 7, seed=3)[0].tolist()]
    together = generate(hybrid, prompts, max_new_tokens=8).tokens
    assert together == [generate(hybrid, [p], max_new_tokens=8).tokens[0] for p in prompts]


def prefilled(model, prompt_ids, ssm_history: int):
    """A 40-slot cache holding the prompts (B, T) (a prefill)."""
    cache = model.new_cache(prompt_ids.shape[0], 40, ssm_history=ssm_history)
    model(prompt_ids, positions_for(prompt_ids), cache)
    cache.advance(prompt_ids.shape[1])
    return cache


def test_rollback_restores_the_ssm_state(hybrid):
    """After a prefill, single-token drafts and a verify block, rolling back to any length in reach and
    re-running the rest gives the full forward's logits; further back is a clear error."""
    ids, other = ids_for(), ids_for(seed=9)
    with torch.no_grad():
        full = hybrid(ids, positions_for(ids))
        cache = prefilled(hybrid, ids[:, :20], ssm_history=16)
        for t in range(20, 24):
            hybrid(other[:, t : t + 1], torch.full((2, 1), t), cache)  # a rejected draft
            cache.advance(1)
        for back in (torch.tensor([27, 22]), torch.tensor([20, 25]), torch.tensor([30, 21])):
            cache.rollback(20)
            hybrid(ids[:, 20:30], positions_for(ids[:, 20:30], 20), cache)  # a verify block
            cache.advance(10)
            cache.rollback(back)  # to the accepted lengths
            for row, length in enumerate(back.tolist()):
                rest = ids[row : row + 1, length:]
                logits = hybrid(rest, positions_for(rest, length), _row_cache(hybrid, cache, row))
                assert max_diff(logits, full[row : row + 1, length:]) <= 5e-5
        with pytest.raises(RadError, match="ssm_history"):
            cache.rollback(13)  # the prefill recorded only its final state (position 19)


def test_a_cache_without_rollback_steps_in_place(hybrid):
    """ssm_history 1 (plain decoding): decode steps read and write the one slot in place, without the ring's
    bookkeeping, and give the full forward's logits; it can be emptied but not rolled back, and an emptied row
    starts again from a zero state (its first token, a one-token prompt, steps in place too)."""
    ids = ids_for()
    with torch.no_grad():
        full = hybrid(ids, positions_for(ids))
        cache = prefilled(hybrid, ids[:, :20], ssm_history=1)
        for t in range(20, 30):
            logits = hybrid(ids[:, t : t + 1], torch.full((2, 1), t), cache)
            cache.advance(1)
            assert max_diff(logits, full[:, t : t + 1]) <= 5e-5
    cache.rollback(30)  # where it is: nothing to undo
    with pytest.raises(RadError, match="ssm_history"):
        cache.rollback(29)
    cache.rollback(torch.tensor([30, 0]))
    assert cache.lengths.tolist() == [30, 0]
    with torch.no_grad():
        for t in range(3):
            logits = hybrid(ids[:, t : t + 1], torch.tensor([[30 + t], [t]]), cache)
            cache.advance(1)
            assert max_diff(logits[1:], full[1:, t : t + 1]) <= 5e-5


def _row_cache(model, cache, row):
    """A one-row copy of `cache` (what a batch row sees), so each row can be re-run alone."""
    single = model.new_cache(1, cache.max_len, cache.ssm_history)
    for store in ("keys", "values", "conv", "ssm"):
        for layer, tensor in getattr(cache, store).items():
            getattr(single, store)[layer].copy_(tensor[row : row + 1])
    single.ring_positions.copy_(cache.ring_positions[row : row + 1])
    single.lengths.copy_(cache.lengths[row : row + 1])
    return single


def test_speculative_greedy_on_hybrid_equals_plain_greedy(hybrid):
    speculative = pytest.importorskip("rad.decode.speculative")
    prompts = [ids_for(1, 17, seed=4)[0].tolist(), ids_for(1, 6, seed=5)[0].tolist()]
    plain = generate(hybrid, prompts, max_new_tokens=24).tokens
    assert speculative.speculative_generate(hybrid, prompts, max_new_tokens=24, skip={3}).tokens == plain


@pytest.mark.parametrize("with_state", [False, True])
def test_per_position_states_match_naive_recurrence(with_state):
    x, dt, A, B, C, s0 = scan_inputs(2, 13, 4, 3, 2, 5)
    states = ssd_states(x, dt, A, B, s0 if with_state else None)
    start = s0 if with_state else torch.zeros_like(s0)
    for t in range(13):
        _, expected = naive_scan(x[:, : t + 1], dt[:, : t + 1], A, B[:, : t + 1], C[:, : t + 1], start)
        assert max_diff(states[:, t], expected) <= 1e-10


def test_compiled_layers_give_the_eager_logits_and_gradients(hybrid):
    """`compile_layers` (AOT autograd's forward and backward graphs, the ones inductor would turn into
    code, run as they are to keep the test fast) computes what the eager layers do, also once the set of
    trainable parameters changes, as it does between distillation stages."""
    eager, compiled = copy.deepcopy(hybrid), copy.deepcopy(hybrid)
    compiled.compile_layers(backend="aot_eager")
    traced = []  # what a hook inside each kind of layer sees: compiled code runs it while tracing
    for layer in (compiled.model.layers[0], compiled.model.layers[LAYERS[0]]):
        layer.mlp.register_forward_pre_hook(lambda *_: traced.append(torch.compiler.is_compiling()))
    ids = ids_for()
    for trains in (lambda name: ".mamba." in name, lambda name: True):  # stage 1: the mixers; stage 2: all
        results = []
        for model in (eager, compiled):
            for name, p in model.named_parameters():
                p.requires_grad_(trains(name))
                p.grad = None
            logits = model(ids, positions_for(ids))
            logits.logsumexp(-1).sum().backward()
            results.append((logits.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
        (want, want_grads), (got, got_grads) = results
        assert max_diff(got, want) < 1e-5
        assert want_grads.keys() == got_grads.keys() and len(want_grads) == sum(trains(n) for n, _ in eager.named_parameters())
        assert max(max_diff(got_grads[n], want_grads[n]) for n in want_grads) < 1e-5
    assert len(traced) >= 2 and all(traced)
