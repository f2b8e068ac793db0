"""Chunked SSD scan (Mamba2, Dao & Gu 2024, "Transformers are SSMs", section 6) in pure torch.

The recurrence, per head h (state S is head_dim x d_state, B/C shared by the heads of one group):

    S_t = exp(dt_t * A_h) * S_{t-1} + dt_t * x_t B_t^T          y_t = S_t C_t

Unrolled, y = M x with the semiseparable matrix M[t, s] = (C_t . B_s) exp(sum_{k=s+1..t} dt_k A_h) dt_s
for s <= t. The chunked algorithm splits the sequence into chunks of length Q and computes
  1. the diagonal blocks of M directly (quadratic "attention" within a chunk),
  2. each chunk's final state from its own inputs,
  3. the states entering every chunk (a recurrence over chunks, written as a small lower-triangular
     matmul so it is parallel),
  4. the contribution of each chunk's entering state to its outputs.
All decays are exponentials of non-positive segment sums, so nothing overflows.
"""

import torch
import torch.nn.functional as F


def segsum(a: torch.Tensor) -> torch.Tensor:
    """out[..., i, j] = sum_{k=j+1..i} a[..., k] for i >= j, and -inf above the diagonal.

    Summed directly (a masked cumsum) rather than as cumsum[i] - cumsum[j]: the difference of two
    large running sums loses float32 precision on long chunks. The -inf makes exp() exactly 0 where
    a later input would otherwise leak into an earlier output.
    """
    q = a.shape[-1]
    below = torch.ones(q, q, dtype=torch.bool, device=a.device).tril(-1)
    out = a[..., :, None].expand(*a.shape, q).masked_fill(~below, 0).cumsum(dim=-2)
    causal = torch.ones(q, q, dtype=torch.bool, device=a.device).tril()
    return out.masked_fill(~causal, -torch.inf)


def ssd_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the SSM over a whole sequence.

    x: (batch, T, heads, head_dim); dt: (batch, T, heads), already positive (softplus + bias);
    A: (heads,), negative; B, C: (batch, T, groups, d_state); initial_state: (batch, heads, head_dim,
    d_state) or None for zeros. Returns y (batch, T, heads, head_dim), without the D skip, and the
    state after the last position, both in float32 (float64 if the inputs are float64).
    """
    b, t, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    r = h // g  # heads per group; heads of a group are consecutive (as in mamba_ssm's repeat)
    dtype = torch.promote_types(x.dtype, torch.float32)
    x, dt, A, B, C = (v.to(dtype) for v in (x, dt, A, B, C))

    # Pad to whole chunks with dt = 0: a padded step neither decays nor feeds the state, so the final
    # state is exact and the padded outputs are simply cut off.
    pad = (-t) % chunk_size
    nc = (t + pad) // chunk_size
    x = F.pad(x * dt[..., None], (0, 0, 0, 0, 0, pad)).view(b, nc, chunk_size, g, r, p)
    a = F.pad(dt * A, (0, 0, 0, pad)).view(b, nc, chunk_size, g, r).permute(0, 1, 3, 4, 2)
    B = F.pad(B, (0, 0, 0, 0, 0, pad)).view(b, nc, chunk_size, g, n)
    C = F.pad(C, (0, 0, 0, 0, 0, pad)).view(b, nc, chunk_size, g, n)
    a_cum = a.cumsum(dim=-1)  # (b, c, g, r, l): log-decay from the chunk start to l, inclusive

    # 1. diagonal blocks: y_i = sum_{j<=i} (C_i . B_j) exp(segsum)[i, j] (dt_j x_j)
    decay = torch.exp(segsum(a))  # (b, c, g, r, l, l)
    scores = torch.einsum("bcign,bcjgn->bcgij", C, B)[:, :, :, None] * decay
    y = torch.einsum("bcgrij,bcjgrp->bcigrp", scores, x)

    # 2. state each chunk builds from its own inputs, decayed to the chunk's end
    to_end = torch.exp(a_cum[..., -1:] - a_cum)  # both cumsums from the same chunk start; <= 1
    chunk_states = torch.einsum("bcjgn,bcgrj,bcjgrp->bcgrpn", B, to_end, x)

    # 3. states entering each chunk: S_c = sum_{c' < c} exp(decay between c' and c) chunk_states[c'],
    # with the initial state as chunk "-1"
    if initial_state is None:
        initial_state = torch.zeros(b, h, p, n, dtype=dtype, device=x.device)
    init = initial_state.to(dtype).reshape(b, 1, g, r, p, n)
    chunk_states = torch.cat([init, chunk_states], dim=1)  # (b, c+1, g, r, p, n)
    chunk_decay = torch.exp(segsum(F.pad(a_cum[..., -1].permute(0, 2, 3, 1), (1, 0))))  # (b,g,r,c+1,c+1)
    states = torch.einsum("bgrzc,bcgrpn->bzgrpn", chunk_decay, chunk_states)
    entering, final = states[:, :-1], states[:, -1]

    # 4. entering state read out by C_i, decayed from the chunk start to i
    y = y + torch.einsum("bcign,bcgrpn,bcgri->bcigrp", C, entering, torch.exp(a_cum))

    y = y.reshape(b, nc * chunk_size, h, p)[:, :t]
    return y, final.reshape(b, h, p, n)


def ssd_states(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    initial_state: torch.Tensor | None = None,
) -> torch.Tensor:
    """The state after every position, (batch, T, heads, head_dim, d_state), same inputs as `ssd_scan`.

    S_i = exp(sum_{k<=i} a_k) S_0 + sum_{j<=i} exp(segsum[i, j]) dt_j x_j B_j^T, as one quadratic
    einsum: meant for short sequences (a speculative verify block, whose every prefix may become the
    accepted one), not for prefill, where T x state would not fit.
    """
    b, t, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    r = h // g
    dtype = torch.promote_types(x.dtype, torch.float32)
    x, dt, A, B = (v.to(dtype) for v in (x, dt, A, B))
    a = (dt * A).view(b, t, g, r).permute(0, 2, 3, 1)  # (b, g, r, t)
    # A leading zero step makes column 0 of the segsum the log-decay from the initial state.
    decay = torch.exp(segsum(F.pad(a, (1, 0))))  # (b, g, r, t+1, t+1)
    dt_x = (x * dt[..., None]).view(b, t, g, r, p)
    states = torch.einsum("bgrij,bjgrp,bjgn->bigrpn", decay[..., 1:, 1:], dt_x, B)
    if initial_state is not None:
        init = initial_state.to(dtype).view(b, g, r, p, n)
        states = states + torch.einsum("bgri,bgrpn->bigrpn", decay[..., 1:, 0], init)
    return states.reshape(b, t, h, p, n)
