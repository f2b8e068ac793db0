"""Layer-by-layer comparison of the student's SSM mixers with the teacher's attention they replace.

Two uses: hidden-state alignment, a loss term next to the KL (each mixer, run on the student's own
hidden states, against the teacher's attention output), and the alignment stage (each mixer run on the
teacher's own input to its layer, so the layers learn independently, with no backward through the rest
of the network; MOHAWK's hidden-state alignment, Bick et al. 2024, arXiv 2408.10189).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rad.errors import RadError
from rad.model.ssm import Mamba2Mixer


class Capture:
    """Forward hooks that keep each module's latest output (a mixer returns (output, state): keep output)."""

    def __init__(self, modules: list[nn.Module]):
        self.outputs: list[torch.Tensor | None] = [None] * len(modules)
        self.handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(modules)]

    def _hook(self, i: int):
        def hook(module, args, output):
            self.outputs[i] = output[0] if isinstance(output, tuple) else output
        return hook


@dataclass
class Aligned:
    """Hidden-state alignment pairs: the student's mixer and the teacher's attention at each replaced layer."""

    student: Capture
    teacher: Capture


@dataclass
class TeacherForced:
    """The alignment stage's pieces at each replaced layer: the student's mixer, the teacher's input to
    its attention sub-layer (after the input norm, which the student shares) and that sub-layer's output."""

    mixers: list[nn.Module]
    inputs: Capture
    targets: Capture


def replaced_layers(student, teacher, what: str) -> tuple[list[int], list[Mamba2Mixer]]:
    """The student's SSM layers and their mixers, after checking that the teacher has attention at each
    (`what` names the feature that needs them, in errors)."""
    layers = [i for i, layer in enumerate(student.model.layers) if any(isinstance(m, Mamba2Mixer) for m in layer.modules())]
    if not layers:
        raise RadError(f"{what} needs SSM layers in the student")
    if len(teacher.model.layers) != len(student.model.layers) or teacher.config.hidden_size != student.config.hidden_size:
        raise RadError(f"{what} needs a teacher with the student's layer count and hidden size (the source model)")
    if any(teacher.config.layer_types[i] != "attention" for i in layers):
        raise RadError(f"{what} needs attention in the teacher at every replaced layer")
    return layers, [next(m for m in student.model.layers[i].modules() if isinstance(m, Mamba2Mixer)) for i in layers]


def hidden_alignment(student, teacher) -> Aligned:
    """Pairs (student mixer, teacher attention) at every SSM layer of the student."""
    layers, mixers = replaced_layers(student, teacher, "hidden-state alignment")
    return Aligned(Capture(mixers), Capture([teacher.model.layers[i].self_attn for i in layers]))


def teacher_forcing(student, teacher) -> TeacherForced:
    """The alignment stage's mixers and the teacher's attention inputs and outputs at their layers."""
    layers, mixers = replaced_layers(student, teacher, "the alignment stage (--align-steps)")
    teacher_layers = [teacher.model.layers[i] for i in layers]
    return TeacherForced(mixers, Capture([layer.input_layernorm for layer in teacher_layers]),
                         Capture([layer.self_attn for layer in teacher_layers]))
