"""What each training stage minimises: one object per stage that computes its loss terms for a micro-batch.

Every stage reports the same three sums over the micro-batch's loss positions, [KL, hidden, CE] (see
rad.distill.losses), and weighs them with its own weights:
- the alignment stage (0): each SSM mixer, run on the teacher's own input to its layer, against the teacher's
  attention output there (teacher-forced: the layers learn independently; MOHAWK's hidden-state alignment,
  Bick et al. 2024, arXiv 2408.10189). Weights (0, 1, 0).
- stages 1 and 2: the KL to the teacher's next-token distribution, plus (optionally) hidden-state alignment of
  the student's mixers, run on its own hidden states, with the teacher's attention, and cross-entropy on the data.
The models return the mixers' inputs and outputs from their forward (`capture`), so compiled layers work too.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator

from rad.distill.alignment import replaced_layers
from rad.distill.config import DistillConfig
from rad.distill.data import Rows
from rad.distill.losses import full_teacher, head_terms, hidden_sum, teacher_topk, topk_teacher
from rad.distill.teacher import TopkCache


def inputs(part: Rows, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A micro-batch's ids, positions, and the mask of positions whose next token counts in the loss."""
    ids = part.ids.to(device)
    positions = torch.arange(ids.shape[1], device=device).expand_as(ids)
    return ids, positions, part.loss[:, 1:].to(device)  # position t predicts token t+1


class AlignmentLoss:
    weights = (0.0, 1.0, 0.0)  # the hidden-state error alone
    # The mixers run outside the prepared (DDP-wrapped) model, which therefore does not average their gradients.
    outside_model = True

    def __init__(self, student, teacher, accelerator: Accelerator):
        self.layers, self.mixers = replaced_layers(student, teacher, "the alignment stage (--align-steps)")
        self.teacher, self.acc = teacher, accelerator

    def terms(self, model, part: Rows, first_row: int | None) -> list[torch.Tensor]:
        ids, positions, mask = inputs(part, self.acc.device)
        with torch.no_grad():
            _, teacher_io = self.teacher(ids, positions, capture=self.layers)
        with self.acc.autocast():  # the mixers run outside the prepared model, so outside its autocast
            mixed = [mixer(teacher_io[layer].input.float())[0] for layer, mixer in zip(self.layers, self.mixers)]
        targets = [teacher_io[layer].output[:, :-1] for layer in self.layers]
        hidden = hidden_sum([out[:, :-1] for out in mixed], targets, mask)
        zero = hidden.new_zeros(())
        return [zero, hidden, zero]


class DistillationLoss:
    outside_model = False

    def __init__(self, config: DistillConfig, student, teacher, accelerator: Accelerator, cache: TopkCache | None):
        self.config, self.teacher, self.acc, self.cache = config, teacher, accelerator, cache
        self.weights = (config.kl_weight, config.hidden_weight, config.ce_weight)
        self.aligned = replaced_layers(student, teacher, "hidden-state alignment")[0] if config.hidden_weight > 0 else []

    def terms(self, model, part: Rows, first_row: int | None) -> list[torch.Tensor]:
        """`first_row`: the rows' index in the data, which keys the top-k cache; None for rows the student wrote
        (graded online)."""
        ids, positions, mask = inputs(part, self.acc.device)
        cache = self.cache if first_row is not None else None
        cached = cache.get(first_row, len(part)) if cache is not None else None
        teacher_io = {}
        if cached is None or self.aligned:
            with torch.no_grad():
                teacher_hidden, teacher_io = self.forward(self.teacher, ids, positions)
        if cache is not None:
            values, indices = cached if cached is not None else cache.put(first_row, *self.topk(teacher_hidden))
            teacher = topk_teacher(values.to(ids.device)[mask], indices.to(ids.device)[mask])
        else:
            teacher = full_teacher(teacher_hidden[mask], self.teacher.lm_head.weight)
        targets = ids[:, 1:][mask] if self.config.ce_weight > 0 else None

        def head_loss(hidden, weight):  # inside the student's forward: a sharded student has its head at hand there
            return head_terms(hidden[:, :-1][mask], weight, teacher, targets, self.config.temperature,
                              self.config.loss_chunk)

        (kl, ce), student_io = self.forward(model, ids, positions, head_loss)
        hidden = kl.new_zeros(())
        if self.aligned:
            hidden = hidden_sum([student_io[i].output[:, :-1] for i in self.aligned],
                                [teacher_io[i].output[:, :-1] for i in self.aligned], mask)
        return [kl, hidden, ce]

    def forward(self, model, ids, positions, head_loss=None) -> tuple:
        """The head's loss (with `head_loss`) or the final hidden states at the positions that predict a next
        token, and the mixers' outputs at the aligned layers."""
        out = model(ids, positions, capture=self.aligned, apply_head=False, head_loss=head_loss)
        out, captured = out if self.aligned else (out, {})
        return (out if head_loss is not None else out[:, :-1]), captured

    def topk(self, teacher_hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's top-k logits at every position of the rows (n, T, k), for the cache."""
        n, t, h = teacher_hidden.shape
        values, indices = teacher_topk(teacher_hidden.reshape(-1, h), self.teacher.lm_head.weight, self.cache.k,
                                       self.config.loss_chunk)
        return values.view(n, t, -1), indices.view(n, t, -1)


def stage_losses(config: DistillConfig, student, teacher, accelerator: Accelerator, cache: TopkCache | None) -> dict:
    """{stage number: its loss} for the stages that train."""
    distillation = DistillationLoss(config, student, teacher, accelerator, cache)
    losses = {1: distillation, 2: distillation}
    if config.align_steps > 0:
        losses[0] = AlignmentLoss(student, teacher, accelerator)
    return losses
