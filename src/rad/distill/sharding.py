"""Sharded training (`--fsdp`): each process keeps 1/W of the student's weights, gradients and optimizer state, and
gathers a decoder layer's weights only while it runs (torch's FSDP2, `fully_shard`, per decoder layer and for the
rest of the model). For a student that does not fit one device beside its teacher; the teacher stays whole in every
process (in bf16 where the run is).

accelerate does not shard on a CPU (its FSDP is for GPU back-ends: on CPU processes it wraps the model in DDP), so
rad applies torch's FSDP2 itself, on any back-end (gloo or NCCL), and keeps accelerate for the rest. Gradients are
averaged over the processes as DDP does, so a step's gradient is the same as in one process. Checkpoints and the
final model hold whole tensors, gathered from every process, so a sharded run resumes into any process count.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor


def shard(student: nn.Module) -> None:
    for layer in student.model.layers:
        fully_shard(layer)
    fully_shard(student)


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor from its shards (every process must ask, in the same order), or the tensor itself."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def whole_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights as whole tensors, on the CPU (every process must call it)."""
    return {name: whole(value).detach().cpu() for name, value in model.state_dict().items()}


def whole_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state_dict with whole tensors (every process must call it)."""
    state = optimizer.state_dict()
    return {**state, "state": {i: {key: whole(value).cpu() for key, value in entries.items()}
                               for i, entries in state["state"].items()}}


def place_like(parameter: torch.Tensor):
    """A function that cuts a whole tensor of `parameter`'s shape to this process's shard of it."""
    def place(value: torch.Tensor) -> torch.Tensor:
        if isinstance(parameter, DTensor) and value.shape == parameter.shape:
            return distribute_tensor(value.to(parameter.device), parameter.device_mesh, parameter.placements)
        return value  # a scalar entry (Adam's step)
    return place
