"""Which layers hidden-state alignment compares: the student's SSM layers, where the teacher (the model the
student was converted from) still has the attention the mixers replace (rad.distill.stage_losses uses them)."""

from __future__ import annotations

from rad.errors import RadError
from rad.model.ssm import Mamba2Mixer


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
