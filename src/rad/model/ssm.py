"""Mamba2 mixer (Dao & Gu 2024) in the standard layout of mamba_ssm and transformers' Bamba.

Parameter names and shapes match `BambaMixer` / mamba_ssm's `Mamba2` (no biases on the projections),
so checkpoints convert by name:

    in_proj   hidden -> [z (d_inner), x (d_inner), B (groups*d_state), C (groups*d_state), dt (heads)]
    conv1d    depthwise causal conv, kernel 4, with bias, over [x, B, C]; then SiLU
    dt_bias, A_log (A = -exp(A_log)), D      per head
    norm      gated RMSNorm: RMSNorm(y * silu(z)) * weight (gate first, as Bamba / norm_before_gate=False)
    out_proj  d_inner -> hidden

Three ways to compute it, which agree: `forward` runs the chunked SSD scan (rad.model.ssd) for prefill and
training; `step` is the recurrence for one token at a time; on CUDA, when mamba_ssm is installed, its
fused `mamba_chunk_scan_combined` replaces the torch scan.
"""

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from rad.model.ssd import ssd_scan, ssd_states


class MambaState(NamedTuple):
    """Recurrent state of one mixer for a batch.

    conv: (batch, conv_dim, conv_kernel), the last conv_kernel inputs of the conv (x, B, C before the
        conv), oldest first, zeros before the sequence start.
    ssm: (batch, n_heads, head_dim, d_state), the SSM state after the last token.
    """

    conv: torch.Tensor
    ssm: torch.Tensor


# The torch scan materialises a chunk x chunk decay matrix per head, so its cost grows with the chunk:
# on a CPU, chunks of 64 ran 1.9x (a 16 x 256-token training batch, forward + backward) to 5.4x (a
# 60-token prompt) as fast as the fused kernel's customary 256 (benchmarks/hybrid.py), and 32 no faster
# than 64. A chunk only regroups the same sums (tested against the recurrence at several sizes), so the
# model's chunk_size stays an upper bound.
TORCH_SCAN_CHUNK = 64


@functools.cache
def _fused_chunk_scan():
    """mamba_ssm's Triton scan if the package is importable, else None (it is optional, GPU only)."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except ImportError:
        return None
    return mamba_chunk_scan_combined


class GatedRMSNorm(nn.Module):
    """RMSNorm(y * silu(z)) over groups of `group_size` channels, in float32 or wider.

    mamba_ssm normalises each of the n_groups groups separately (group_size = d_inner / n_groups);
    transformers' Bamba/Mamba2 torch path normalises over all of d_inner (group_size = d_inner).
    The two coincide only for n_groups == 1, hence the explicit group size.
    """

    def __init__(self, size: int, group_size: int, eps: float):
        super().__init__()
        if size % group_size:
            raise ValueError(f"norm group size {group_size} must divide d_inner {size}")
        self.weight = nn.Parameter(torch.ones(size))
        self.group_size = group_size
        self.eps = eps

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(y.dtype, torch.float32)
        y = y.to(dtype) * F.silu(z.to(dtype))
        grouped = y.unflatten(-1, (-1, self.group_size))
        grouped = grouped * torch.rsqrt(grouped.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * grouped.flatten(-2)


class Mamba2Mixer(nn.Module):
    """Mamba2 token mixer: (batch, T, hidden) -> (batch, T, hidden), plus its recurrent state.

    d_inner = n_heads * head_dim. B and C have n_groups groups of d_state each, shared by the
    n_heads / n_groups consecutive heads of a group (n_groups == n_heads gives every head its own).
    norm_group_size defaults to d_inner / n_groups (mamba_ssm); pass d_inner to match transformers'
    Bamba torch path. dt is initialised log-uniform in [dt_min, dt_max] (floored at dt_init_floor),
    stored as softplus^-1 in dt_bias; A uniform in A_init_range; D = 1; dt_limit clamps softplus(dt).
    """

    def __init__(
        self,
        hidden_size: int,
        n_heads: int,
        head_dim: int,
        n_groups: int = 1,
        d_state: int = 128,
        conv_kernel: int = 4,
        chunk_size: int = 256,
        rms_eps: float = 1e-5,
        norm_group_size: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        dt_limit: tuple[float, float] = (0.0, math.inf),
        A_init_range: tuple[float, float] = (1.0, 16.0),
    ):
        super().__init__()
        if n_heads % n_groups:
            raise ValueError(f"n_groups ({n_groups}) must divide n_heads ({n_heads})")
        self.n_heads, self.head_dim, self.n_groups, self.d_state = n_heads, head_dim, n_groups, d_state
        self.d_inner = n_heads * head_dim
        self.conv_dim = self.d_inner + 2 * n_groups * d_state
        self.conv_kernel, self.chunk_size, self.dt_limit = conv_kernel, chunk_size, dt_limit
        self.dt_init = (dt_min, dt_max, dt_init_floor)
        self.A_init_range = A_init_range

        self.in_proj = nn.Linear(hidden_size, self.d_inner + self.conv_dim + n_heads, bias=False)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, conv_kernel, groups=self.conv_dim, bias=True)
        self.dt_bias = nn.Parameter(torch.empty(n_heads))
        self.A_log = nn.Parameter(torch.empty(n_heads))
        self.D = nn.Parameter(torch.empty(n_heads))
        self.norm = GatedRMSNorm(self.d_inner, norm_group_size or self.d_inner // n_groups, rms_eps)
        self.out_proj = nn.Linear(self.d_inner, hidden_size, bias=False)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """mamba_ssm's init of dt_bias, A_log and D (the projections and conv keep torch's defaults)."""
        dt_min, dt_max, floor = self.dt_init
        dt = torch.exp(torch.rand(self.n_heads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=floor)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.A_log.copy_(torch.empty(self.n_heads).uniform_(*self.A_init_range).log())
        self.D.fill_(1.0)

    def init_state(self, batch: int, device=None, dtype: torch.dtype | None = None) -> MambaState:
        """Zero state for `batch` rows. The conv state takes the weights' dtype; the SSM state at least
        float32 (it accumulates over the whole sequence), unless `dtype` says otherwise."""
        weight = self.out_proj.weight
        device = weight.device if device is None else device
        conv_dtype = dtype or weight.dtype
        ssm_dtype = dtype or torch.promote_types(weight.dtype, torch.float32)
        return MambaState(
            torch.zeros(batch, self.conv_dim, self.conv_kernel, device=device, dtype=conv_dtype),
            torch.zeros(batch, self.n_heads, self.head_dim, self.d_state, device=device, dtype=ssm_dtype),
        )

    def _dt(self, dt: torch.Tensor) -> torch.Tensor:
        """Discretisation step: softplus(dt + dt_bias), clamped to dt_limit, in float32 or wider."""
        dt = F.softplus(dt.to(torch.promote_types(dt.dtype, torch.float32)) + self.dt_bias)
        return dt if self.dt_limit == (0.0, math.inf) else dt.clamp(*self.dt_limit)  # softplus is >= 0 already

    def _split_xbc(self, xbc: torch.Tensor):
        return xbc.split([self.d_inner, self.n_groups * self.d_state, self.n_groups * self.d_state], dim=-1)

    def forward(
        self,
        hidden_states: torch.Tensor,
        state: MambaState | None = None,
        valid: torch.Tensor | None = None,
        per_position: bool = False,
    ) -> tuple[torch.Tensor, MambaState]:
        """Process T tokens in parallel, continuing from `state` (zeros if None).

        valid: optional bool (batch, T), True for real tokens; padding must be on the right of each
        row. Padded positions leave the state untouched (their dt and x are zeroed, so the SSM neither
        decays nor takes input), and the returned conv state holds each row's last conv_kernel real
        inputs, so every row ends exactly as if run alone. Outputs at padded positions are meaningless.
        Returns the outputs (batch, T, hidden) and the state after each row's last real token.
        A single token with a state and no mask goes through `step`.

        per_position: return the state after every position instead, with a T dim after the batch
        (conv (batch, T, conv_dim, kernel), ssm (batch, T, heads, head_dim, d_state)); a cache that
        must roll back to any prefix of a short block keeps them. Entries at padded positions are
        meaningless.
        """
        bsz, t, _ = hidden_states.shape
        if state is not None and t == 1 and valid is None:
            out, new = self.step(hidden_states, state)
            return out, MambaState(new.conv[:, None], new.ssm[:, None]) if per_position else new
        z, xbc, dt = self.in_proj(hidden_states).split([self.d_inner, self.conv_dim, self.n_heads], dim=-1)

        # Causal depthwise conv: left context is the previous conv inputs (zeros at the start).
        xbc = xbc.transpose(1, 2)
        prev = state.conv if state is not None else xbc.new_zeros(bsz, self.conv_dim, self.conv_kernel)
        inputs = torch.cat([prev.to(xbc.dtype), xbc], dim=-1)  # (b, conv_dim, kernel + T)
        conv_out = F.conv1d(inputs[..., 1:], self.conv1d.weight, self.conv1d.bias, groups=self.conv_dim)
        # SiLU on the (batch, T, channels) layout that everything after reads: on the conv's (channels, T)
        # layout its backward met strided gradients and ran 3-4x slower (same values either way).
        x, B, C = self._split_xbc(F.silu(conv_out.transpose(1, 2).contiguous()))

        dt = self._dt(dt)
        if valid is None:
            conv_state = inputs[..., -self.conv_kernel :]
        else:
            # Row b's real inputs end at index kernel + len_b - 1 of `inputs`: keep the kernel before it.
            lengths = valid.sum(dim=1)
            index = lengths[:, None] + torch.arange(self.conv_kernel, device=valid.device)
            conv_state = inputs.gather(2, index[:, None, :].expand(-1, self.conv_dim, -1))
            dt = dt * valid[..., None]
            x = x * valid[..., None]

        x = x.unflatten(-1, (self.n_heads, self.head_dim))
        B = B.unflatten(-1, (self.n_groups, self.d_state))
        C = C.unflatten(-1, (self.n_groups, self.d_state))
        y, ssm_state = self._scan(x, dt, B, C, state.ssm if state is not None else None)
        y = y + self.D[:, None] * x
        out = self.out_proj(self.norm(y.flatten(-2), z).to(hidden_states.dtype))
        if per_position:
            # The conv window ending at position i is inputs[..., i+1 : i+1+kernel].
            conv_state = inputs.unfold(-1, self.conv_kernel, 1)[:, :, 1:].transpose(1, 2)
            A = -torch.exp(self.A_log.float())
            ssm_state = ssd_states(x, dt, A, B, state.ssm if state is not None else None)
        ssm_dtype = state.ssm.dtype if state is not None else ssm_state.dtype
        return out, MambaState(conv_state.to(prev.dtype), ssm_state.to(ssm_dtype))

    def _scan(self, x, dt, B, C, initial_state):
        A = -torch.exp(self.A_log.float())
        fused = _fused_chunk_scan() if x.is_cuda else None
        if fused is not None:
            # dt arrives already biased, softplus-ed and clamped, so the kernel's own options stay off.
            return fused(x, dt, A, B, C, self.chunk_size, initial_states=initial_state, return_final_states=True)
        return ssd_scan(x, dt, A, B, C, min(self.chunk_size, TORCH_SCAN_CHUNK), initial_state)

    def step(self, hidden_states: torch.Tensor, state: MambaState) -> tuple[torch.Tensor, MambaState]:
        """One decoding token: (batch, 1, hidden) -> (batch, 1, hidden) and the new state.

        The recurrence S <- exp(dt A) S + dt x B^T, y = S C + D x, with fixed shapes and no host
        syncs so it can be compiled / captured in a CUDA graph. `state` is not modified; copy the
        returned tensors into a preallocated cache if you keep one.
        """
        # Eager, a step is bound by the number of ops it launches (~2-5 us each on a CPU, where the matrix-vector
        # products of a small mixer take ~100 us): hence vecdot and addcmul where two ops would do.
        z, xbc, dt = self.in_proj(hidden_states[:, 0]).split([self.d_inner, self.conv_dim, self.n_heads], dim=-1)
        window = torch.cat([state.conv[..., 1:], xbc[..., None].to(state.conv.dtype)], dim=-1)
        conv_out = torch.linalg.vecdot(window, self.conv1d.weight[:, 0]) + self.conv1d.bias
        x, B, C = self._split_xbc(F.silu(conv_out))

        dt = self._dt(dt)  # (b, heads)
        g, r = self.n_groups, self.n_heads // self.n_groups
        # Heads of a group are consecutive: view heads as (groups, r) and broadcast B, C over r.
        xg = x.to(dt.dtype).view(-1, g, r, self.head_dim)
        decay = torch.exp(dt * -torch.exp(self.A_log.float())).view(-1, g, r, 1, 1)
        dt_x = (dt.view(-1, g, r, 1) * xg)[..., None]  # (b, g, r, p, 1)
        ssm = state.ssm.to(dt.dtype).view(-1, g, r, self.head_dim, self.d_state)
        ssm = torch.addcmul(decay * ssm, dt_x, B.to(dt.dtype).view(-1, g, 1, 1, self.d_state))
        read = torch.linalg.vecdot(ssm, C.to(dt.dtype).view(-1, g, 1, 1, self.d_state))  # S C: (b, g, r, p)
        y = torch.addcmul(read, self.D.view(g, r, 1), xg)
        out = self.out_proj(self.norm(y.flatten(1), z).to(hidden_states.dtype))
        new_state = MambaState(window, ssm.view_as(state.ssm).to(state.ssm.dtype))
        return out[:, None], new_state
