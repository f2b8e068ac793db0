"""Mamba2 mixer: chunked scan vs a naive recurrence, parallel vs recurrent, vs transformers' Bamba, padding."""

import importlib.util

import pytest
import torch

from rad.model.ssd import ssd_scan
from rad.model.ssm import TORCH_SCAN_CHUNK, Mamba2Mixer, MambaState

F64 = torch.float64


def naive_scan(x, dt, A, B, C, state):
    """Token-by-token S <- exp(dt A) S + dt x B^T, y = S C, with B, C repeated over each group's heads."""
    r = x.shape[2] // B.shape[2]
    B, C = B.repeat_interleave(r, dim=2), C.repeat_interleave(r, dim=2)
    ys = []
    for t in range(x.shape[1]):
        decay = torch.exp(dt[:, t] * A)[..., None, None]
        state = decay * state + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None, :]
        ys.append((state * C[:, t, :, None, :]).sum(-1))
    return torch.stack(ys, dim=1), state


def scan_inputs(b, t, h, p, g, n, dtype=F64, a_scale=2.0, dt_scale=1.0):
    gen = torch.Generator().manual_seed(t * 1000 + h * 10 + g)
    rand = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)  # noqa: E731
    dt = torch.rand(b, t, h, generator=gen, dtype=dtype) * dt_scale
    A = -torch.rand(h, generator=gen, dtype=dtype) * a_scale
    return rand(b, t, h, p), dt, A, rand(b, t, g, n), rand(b, t, g, n), rand(b, h, p, n)


@pytest.mark.parametrize("heads,groups", [(4, 2), (4, 4), (3, 1)])
@pytest.mark.parametrize("chunk", [1, 4, 16, 64])
@pytest.mark.parametrize("length", [1, 13, 37])
@pytest.mark.parametrize("with_state", [False, True])
def test_scan_matches_naive_recurrence(heads, groups, chunk, length, with_state):
    x, dt, A, B, C, s0 = scan_inputs(2, length, heads, 3, groups, 5)
    init = s0 if with_state else None
    y, final = ssd_scan(x, dt, A, B, C, chunk, init)
    y_ref, final_ref = naive_scan(x, dt, A, B, C, s0 if with_state else torch.zeros_like(s0))
    assert (y - y_ref).abs().max() <= 1e-10
    assert (final - final_ref).abs().max() <= 1e-10


def test_scan_stable_under_strong_decay():
    """dt*A of -100 per step: cumulative log-decays of -10^4 inside a chunk must give zeros, not NaN."""
    x, dt, A, B, C, s0 = scan_inputs(1, 200, 4, 3, 2, 5, dtype=torch.float32, a_scale=50.0, dt_scale=2.0)
    y, final = ssd_scan(x, dt, A, B, C, 128, s0)
    y_ref, final_ref = naive_scan(*(v.double() for v in (x, dt, A, B, C, s0)))
    assert torch.isfinite(y).all() and torch.isfinite(final).all()
    assert (y - y_ref).abs().max() <= 1e-4
    assert (final - final_ref).abs().max() <= 1e-4


def test_scan_gradients_match_naive_recurrence():
    """Training backpropagates through the chunked scan: its gradients must be the recurrence's."""
    inputs = scan_inputs(2, 13, 4, 3, 2, 5)
    grads = []
    for scan in (lambda x, dt, A, B, C, s: ssd_scan(x, dt, A, B, C, 4, s), naive_scan):
        leaves = [v.clone().requires_grad_() for v in inputs]
        y, final = scan(*leaves)
        grads.append(torch.autograd.grad(y.sin().sum() + final.cos().sum(), leaves))
    assert max(max_diff(a, b) for a, b in zip(*grads)) <= 1e-10


def make_mixer(heads=4, groups=2, dtype=F64, seed=0, **kw):
    torch.manual_seed(seed)
    m = Mamba2Mixer(hidden_size=24, n_heads=heads, head_dim=6, n_groups=groups, d_state=5, chunk_size=4, **kw)
    with torch.no_grad():  # move every parameter off its init so no term is trivially 0 or 1
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
        m.A_log.copy_(torch.rand(heads).mul(2).sub(1))
    return m.to(dtype).eval()


def max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("heads,groups", [(4, 2), (4, 4), (4, 1)])
def test_parallel_equals_prefill_plus_steps(heads, groups):
    m = make_mixer(heads, groups)
    h = torch.randn(2, 19, 24, dtype=F64)
    with torch.no_grad():
        y_all, s_all = m(h)
        y_pre, state = m(h[:, :7])
        ys = [y_pre]
        for t in range(7, 19):
            y_t, state = m.step(h[:, t : t + 1], state)
            ys.append(y_t)
        y_cont, s_cont = m(h[:, 7:], m(h[:, :7])[1])  # chunked prefill continuing from a state
    assert max_diff(torch.cat(ys, dim=1), y_all) <= 1e-10
    assert max_diff(state.conv, s_all.conv) <= 1e-12 and max_diff(state.ssm, s_all.ssm) <= 1e-10
    assert max_diff(y_cont, y_all[:, 7:]) <= 1e-10
    assert max_diff(s_cont.conv, s_all.conv) <= 1e-12 and max_diff(s_cont.ssm, s_all.ssm) <= 1e-10


def test_model_chunk_above_the_torch_cap_matches_steps():
    """A model's chunk_size of 256 runs as chunks of TORCH_SCAN_CHUNK in the torch scan: 150 tokens span
    two whole capped chunks and a partial one, and must still equal the token-by-token recurrence."""
    m = make_mixer()
    m.chunk_size = 256
    h = torch.randn(2, 150, 24, dtype=F64)
    with torch.no_grad():
        y_all, s_all = m(h)
        state, ys = m.init_state(2), []
        for t in range(150):
            y_t, state = m.step(h[:, t : t + 1], state)
            ys.append(y_t)
    assert 2 * TORCH_SCAN_CHUNK < 150 < 256
    assert max_diff(torch.cat(ys, dim=1), y_all) <= 1e-10 and max_diff(state.ssm, s_all.ssm) <= 1e-10


def test_init_state_and_step_shapes():
    m = make_mixer(dtype=torch.bfloat16)
    state = m.init_state(3)
    assert state.conv.shape == (3, m.conv_dim, 4) and state.conv.dtype == torch.bfloat16
    assert state.ssm.shape == (3, 4, 6, 5) and state.ssm.dtype == torch.float32
    assert not state.conv.any() and not state.ssm.any()
    with torch.no_grad():
        y, new = m(torch.randn(3, 1, 24, dtype=torch.bfloat16), state)  # T == 1 with a state: the step path
    assert y.shape == (3, 1, 24) and new.conv.shape == state.conv.shape and new.ssm.dtype == torch.float32
    assert not state.ssm.any(), "step must not modify the state it was given"


def test_step_compiles_without_graph_breaks():
    """fullgraph=True fails on any graph break, e.g. a host sync such as .item() or a data-dependent branch."""
    m = make_mixer(dtype=torch.float32)
    state, h = m.init_state(2), torch.randn(2, 1, 24)
    step = torch.compile(m.step, fullgraph=True, backend="eager", dynamic=False)
    with torch.no_grad():
        (y, new), (y_ref, new_ref) = step(h, state), m.step(h, state)
    assert max_diff(y, y_ref) == 0 and max_diff(new.ssm, new_ref.ssm) == 0


def bamba_mixer(heads, groups):
    from transformers import BambaConfig
    from transformers.models.bamba.modeling_bamba import BambaMixer

    cfg = BambaConfig(
        vocab_size=32, hidden_size=24, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
        attn_layer_indices=[], mamba_n_heads=heads, mamba_d_head=6, mamba_expand=1, mamba_n_groups=groups,
        mamba_d_state=5, mamba_chunk_size=4, rms_norm_eps=1e-5,
    )  # fmt: skip
    return BambaMixer(cfg, layer_idx=0).eval()


@pytest.mark.parametrize("heads,groups", [(4, 2), (4, 4)])
def test_matches_transformers_bamba_mixer(heads, groups):
    # No fused kernels here, so transformers runs its pure-torch path (the reference we want).
    assert importlib.util.find_spec("mamba_ssm") is None and importlib.util.find_spec("kernels") is None
    ours = make_mixer(heads, groups, dtype=torch.float32, norm_group_size=heads * 6)  # Bamba: norm over d_inner
    theirs = bamba_mixer(heads, groups)
    theirs.load_state_dict(ours.state_dict(), strict=True)  # same names and shapes
    h = torch.randn(2, 11, 24)
    with torch.no_grad():
        expected = theirs(h)
        got, _ = ours(h)
    assert max_diff(got, expected) <= 1e-4


def test_grouped_norm_normalises_each_group():
    """mamba_ssm's default: RMS over each d_inner / n_groups slice, checked slice by slice against Bamba's norm."""
    from transformers.models.bamba.modeling_bamba import BambaRMSNormGated

    m = make_mixer(4, 2, dtype=torch.float32)
    y, z = torch.randn(3, 24), torch.randn(3, 24)
    ref = BambaRMSNormGated(12, eps=1e-5)
    parts = []
    for s in (slice(0, 12), slice(12, 24)):
        ref.weight.data.copy_(m.norm.weight.data[s])
        parts.append(ref(y[:, s], z[:, s]))
    assert max_diff(m.norm(y, z), torch.cat(parts, dim=-1)) <= 1e-6


def test_right_padded_rows_equal_rows_alone():
    m = make_mixer()
    lengths = [9, 2, 0, 5]  # 2 < kernel: conv state keeps zeros from before the start
    h = torch.randn(4, 9, 24, dtype=F64)
    valid = torch.arange(9)[None, :] < torch.tensor(lengths)[:, None]
    h = torch.where(valid[..., None], h, 1e3)  # junk in the padding must not leak
    start = MambaState(torch.randn(4, m.conv_dim, 4, dtype=F64), torch.randn(4, 4, 6, 5, dtype=F64))
    for init in (None, start):
        with torch.no_grad():
            y, state = m(h, init, valid=valid)
            for b, n in enumerate(lengths):
                row_init = None if init is None else MambaState(init.conv[b : b + 1], init.ssm[b : b + 1])
                if n == 0:
                    alone = row_init or m.init_state(1)
                else:
                    y_b, alone = m(h[b : b + 1, :n], row_init)
                    assert max_diff(y[b, :n], y_b[0]) <= 1e-10
                assert max_diff(state.conv[b], alone.conv[0]) <= 1e-12
                assert max_diff(state.ssm[b], alone.ssm[0]) <= 1e-10


def test_rejects_groups_that_do_not_divide_heads():
    with pytest.raises(ValueError, match="n_groups"):
        Mamba2Mixer(hidden_size=24, n_heads=4, head_dim=6, n_groups=3, d_state=5)
