"""Verification: which draft tokens the full model accepts, and the token it adds after them.

A row keeps its first `accepted` drafts, then the full model's own token at the next position. The
greedy rule runs per row on the host; the sampled one on a whole batch of device tensors, where row b
drafted `draft_lens[b]` tokens (drafts past that are padding and never accepted).
"""

from __future__ import annotations

import torch

from rad.decode.sampling import draw


def _accepted_prefix(match: torch.Tensor, draft_lens: torch.Tensor) -> torch.Tensor:
    """Length of each row's leading run of True in match (B, k), counting only its own drafts."""
    within = torch.arange(match.shape[1], device=match.device) < draft_lens[:, None]
    return (match & within).long().cumprod(1).sum(1)


def accept_greedy(drafts: list[int], choices: list[int]) -> int:
    """Greedy, for one row on the host: how many leading drafts equal the full model's argmax.

    choices[i] is the full model's argmax after the pending token (i = 0) and after each draft, so the
    row emits drafts[:accepted] and then choices[accepted]: exactly what plain greedy decoding emits.
    (On the host because the step's tokens come over in one transfer anyway, and for a batch of a few
    rows a dozen tiny device ops cost more than this loop.)
    """
    accepted = 0
    while accepted < len(drafts) and drafts[accepted] == choices[accepted]:
        accepted += 1
    return accepted


def accept_sampled(
    drafts: torch.Tensor,
    draft_probs: torch.Tensor,
    target_probs: torch.Tensor,
    draft_lens: torch.Tensor,
    accept_uniforms: torch.Tensor,
    next_uniforms: torch.Tensor,
):
    """Speculative rejection sampling (Leviathan et al. 2023; Chen et al. 2023).

    Draft i, drawn from q_i = draft_probs[:, i], is accepted with probability min(1, p_i/q_i) where
    p_i = target_probs[:, i]; the first rejected position is resampled from norm(max(0, p - q)), and
    when every draft is accepted the next token comes from p at the end. Each emitted token then
    follows the full model's (temperature/top-p processed) distribution exactly.
    accept_uniforms (B, k) and next_uniforms (B, k + 1) are the rows' pre-drawn uniforms per position;
    the next token uses the one at its own position.
    """
    p_draft = target_probs[:, :-1].gather(-1, drafts[..., None]).squeeze(-1)
    q_draft = draft_probs.gather(-1, drafts[..., None]).squeeze(-1)
    accepted = _accepted_prefix(accept_uniforms * q_draft < p_draft, draft_lens)

    rows = torch.arange(drafts.shape[0], device=drafts.device)
    p_next = target_probs[rows, accepted]
    # After a rejection, remove the draft's mass; after the row's last draft nothing is subtracted
    # (the zero row appended also makes a step without drafts a plain draw from p).
    rejected = accepted < draft_lens
    q_padded = torch.cat([draft_probs, draft_probs.new_zeros(draft_probs.shape[0], 1, draft_probs.shape[2])], 1)
    q_next = q_padded[rows, accepted] * rejected[:, None]
    residual = (p_next - q_next).clamp_min(0)
    # Rounding can leave a rejection with no positive residual only when p and q agree to float precision.
    residual = torch.where(residual.sum(-1, keepdim=True) > 0, residual, p_next)
    return accepted, draw(residual, next_uniforms.gather(1, accepted[:, None]).squeeze(1))
