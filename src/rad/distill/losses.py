"""Distillation losses, each returned as a SUM over the positions selected by `mask`.

Sums, not means: the trainer divides by the number of loss tokens in the whole optimizer step (over
micro-batches and processes), so the loss is normalised per token, padding never counts, and a step
gives the same gradient however its rows are split between processes and micro-batches.

Shapes: logits (B, T, V) at the positions that predict the next token; mask (B, T) bool.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_sum(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Sum over masked positions of KL(teacher || student) at `temperature`, times temperature**2
    (Hinton et al.: keeps gradient sizes comparable across temperatures). Computed in float32."""
    s = F.log_softmax(student_logits[mask].float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits[mask].float() / temperature, dim=-1)
    return (t.exp() * (t - s)).sum() * temperature**2


def topk_kl_sum(student_logits: torch.Tensor, values: torch.Tensor, indices: torch.Tensor, mask: torch.Tensor,
                temperature: float = 1.0) -> torch.Tensor:
    """KL from cached top-k teacher logits (values, indices: (B, T, k)). The teacher distribution is
    its top-k renormalised; the student's log-probabilities are over the full vocabulary, so the loss
    is still a KL divergence (≥ 0) and is smallest when the student puts its mass where the teacher does.
    For a student equal to the teacher it is -log(teacher's top-k mass), not 0."""
    s = F.log_softmax(student_logits[mask].float() / temperature, dim=-1).gather(-1, indices[mask].long())
    t = F.log_softmax(values[mask].float() / temperature, dim=-1)
    return (t.exp() * (t - s)).sum() * temperature**2


def hidden_sum(student: list[torch.Tensor], teacher: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Hidden-state alignment: mean squared error over the hidden size, averaged over the aligned
    layers, summed over masked positions. Inputs (B, T, H) per layer, same positions as `mask`."""
    per_layer = [(s[mask].float() - t[mask].float()).pow(2).mean(-1).sum() for s, t in zip(student, teacher, strict=True)]
    return torch.stack(per_layer).mean()


def ce_sum(student_logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the data's next tokens, summed over masked positions."""
    return F.cross_entropy(student_logits[mask].float(), targets[mask], reduction="sum")
