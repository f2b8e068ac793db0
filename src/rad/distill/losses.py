"""Distillation losses, each returned as a SUM over the loss positions.

Sums, not means: the trainer divides by the number of loss tokens in the whole optimizer step (over
micro-batches and processes), so the loss is normalised per token, padding never counts, and a step
gives the same gradient however its rows are split between processes and micro-batches.

The KL to the teacher and the cross-entropy are computed from the final hidden states, `chunk` positions at a
time (`head_terms`): a step never holds full-vocabulary logits for all its positions (16 x 256 positions of a
49,152-token vocabulary are 805 MB per float32 tensor, and autograd would keep several). The forward pass computes
each chunk's loss and its gradients with respect to the hidden states and the head's weight, and keeps only those
(as liger-kernel's fused linear + cross-entropy does on a GPU); the backward pass scales them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# (rows) -> the teacher's log-probabilities at those loss positions at the KL's temperature, and the token ids
# they belong to (None: over the whole vocabulary; else (n, k) ids of a top-k cache, renormalised over k)
TeacherSide = Callable[[slice, float], tuple[torch.Tensor, torch.Tensor | None]]


def full_teacher(hidden: torch.Tensor, weight: torch.Tensor) -> TeacherSide:
    """The teacher's distribution from its final hidden states (N, H) and its head's weight, computed per chunk."""
    def log_probs(rows: slice, temperature: float):
        return F.log_softmax(F.linear(hidden[rows], weight).float() / temperature, dim=-1), None
    return log_probs


def topk_teacher(values: torch.Tensor, indices: torch.Tensor) -> TeacherSide:
    """The teacher's distribution from cached top-k logits (N, k), renormalised over the k: the loss is still a
    KL divergence (>= 0), smallest when the student puts its mass where the teacher does; for a student equal to
    the teacher it is -log(the teacher's top-k mass), not 0."""
    def log_probs(rows: slice, temperature: float):
        return F.log_softmax(values[rows].float() / temperature, dim=-1), indices[rows].long()
    return log_probs


def teacher_topk(hidden: torch.Tensor, weight: torch.Tensor, k: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest logits (N, k) and their ids from final hidden states (N, H), chunk by chunk."""
    parts = [F.linear(hidden[a:a + chunk], weight).float().topk(k, dim=-1) for a in range(0, hidden.shape[0], chunk)]
    return torch.cat([p.values for p in parts]), torch.cat([p.indices for p in parts])


class _HeadLosses(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, teacher, targets, temperature, chunk):
        want_weight = ctx.needs_input_grad[1]
        kl, ce = hidden.new_zeros((), dtype=torch.float32), hidden.new_zeros((), dtype=torch.float32)
        grads = {name: [torch.empty_like(hidden), torch.zeros_like(weight) if want_weight else None]
                 for name in (("kl", "ce") if targets is not None else ("kl",))}
        for a in range(0, hidden.shape[0], chunk):
            rows = slice(a, a + chunk)
            h = hidden[rows]
            logits = F.linear(h, weight).float()
            log_s = F.log_softmax(logits / temperature, dim=-1)
            log_t, ids = teacher(rows, temperature)
            p_s, p_t = log_s.exp(), log_t.exp()
            if ids is None:
                kl += (p_t * (log_t - log_s)).sum()
                d_kl = p_s - p_t
            else:
                kl += (p_t * (log_t - log_s.gather(-1, ids))).sum()
                d_kl = p_s.scatter_add(-1, ids, -p_t)
            # d/dlogits of temperature**2 * KL(t || softmax(logits / temperature)) = temperature * (p_s - p_t)
            d_kl *= temperature
            d_ce = None
            if targets is not None:
                log_p = log_s if temperature == 1 else F.log_softmax(logits, dim=-1)
                ce -= log_p.gather(-1, targets[rows, None]).sum()
                p = p_s if temperature == 1 else log_p.exp()
                d_ce = p.scatter_add(-1, targets[rows, None], torch.full_like(p[:, :1], -1.0))
            for name, d in (("kl", d_kl), ("ce", d_ce)):
                if d is None:
                    continue
                d = d.to(h.dtype)
                grads[name][0][rows] = d @ weight
                if want_weight:
                    grads[name][1] += d.T @ h
        ctx.grads = grads
        ctx.with_ce = targets is not None
        return kl * temperature**2, ce

    @staticmethod
    def backward(ctx, grad_kl, grad_ce):
        kl_hidden, kl_weight = ctx.grads["kl"]
        grad_hidden = kl_hidden * grad_kl
        grad_weight = kl_weight * grad_kl if kl_weight is not None else None
        if ctx.with_ce:
            ce_hidden, ce_weight = ctx.grads["ce"]
            grad_hidden = grad_hidden + ce_hidden * grad_ce
            grad_weight = grad_weight + ce_weight * grad_ce if grad_weight is not None else None
        return grad_hidden, grad_weight, None, None, None, None


def head_terms(hidden: torch.Tensor, weight: torch.Tensor, teacher: TeacherSide, targets: torch.Tensor | None,
               temperature: float, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(KL sum, cross-entropy sum) over the loss positions, from the student's final hidden states there (N, H) and
    its head's `weight` (V, H). KL(teacher || student) at `temperature`, times temperature**2 (Hinton et al.:
    gradient sizes comparable across temperatures); cross-entropy (temperature 1) on `targets` (N,), zero when
    None. Both in float32."""
    return _HeadLosses.apply(hidden, weight, teacher, targets, temperature, chunk)


def hidden_sum(student: list[torch.Tensor], teacher: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Hidden-state alignment: mean squared error over the hidden size, averaged over the aligned
    layers, summed over masked positions. Inputs (B, T, H) per layer, same positions as `mask`."""
    per_layer = [(s[mask].float() - t[mask].float()).pow(2).mean(-1).sum() for s, t in zip(student, teacher, strict=True)]
    return torch.stack(per_layer).mean()
