"""Training checkpoints: everything a resumed run needs to continue exactly where it stopped.

`OUT/checkpoints/step-NNNNNN/` holds
    model.safetensors      the student's weights (all of them: stage 2 may change any)
    optimizer.safetensors  the optimizer's per-parameter tensors, keyed `parameter name::key`
    rng.safetensors        torch's CPU (and CUDA) generator states
    state.json             step, stage, optimizer hyper-parameters, scheduler state, Python's RNG state,
                           number of metric lines written, and the settings the run must keep
No pickle anywhere. A checkpoint is written to a hidden temporary folder and renamed into place, so a
run killed mid-write leaves the previous checkpoint as the latest one. The data position is the step:
the row stream is deterministic (rad.distill.data), so step s always trains rows s·B .. (s+1)·B-1.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from rad.errors import RadError

STEP_DIR = re.compile(r"step-(\d+)$")


@dataclass
class TrainState:
    step: int  # optimizer steps done, over all stages
    stage: int  # the stage those steps are in (0: alignment, 1 or 2)
    metrics_lines: int  # lines of metrics.jsonl that belong to steps <= step
    settings: dict  # what must not change on resume (data, batch, losses, stages)
    sized: int | None = None  # the steps a time budget gave the last stage, once measured (rad.distill.budget)


def save_checkpoint(folder: Path, model: nn.Module, optim: dict, param_names: list[str], scheduler, state: TrainState,
                    keep: int, weights: dict[str, torch.Tensor] | None = None) -> Path:
    """`optim`: the optimizer's state_dict; `weights`: the model's (whole) tensors, when they are not the model's own
    (a sharded run gathers them)."""
    final = folder / f"step-{state.step:06d}"
    tmp = folder / f".tmp-step-{state.step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if weights is None:
        save_model(model, str(tmp / "model.safetensors"))
    else:
        save_file({name: value.contiguous() for name, value in weights.items()}, str(tmp / "model.safetensors"))
    tensors = {f"{param_names[i]}::{key}": value.contiguous()
               for i, entries in optim["state"].items() for key, value in entries.items()}
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(rng, str(tmp / "rng.safetensors"))
    groups = [{key: value for key, value in group.items() if key != "params"} for group in optim["param_groups"]]
    (tmp / "state.json").write_text(json.dumps({
        "step": state.step, "stage": state.stage, "metrics_lines": state.metrics_lines, "settings": state.settings,
        "sized": state.sized,
        "param_groups": groups, "scheduler": scheduler.state_dict(), "python_random": random.getstate(),
    }))
    shutil.rmtree(final, ignore_errors=True)  # only a resumed run that re-reached this step has one
    tmp.rename(final)
    for old in sorted(checkpoints(folder))[:-keep]:
        shutil.rmtree(old[1])
    return final


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint in `folder`."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_DIR.match(p.name)) and (p / "state.json").is_file()]
    return sorted(found)


def latest_checkpoint(folder: Path) -> Path | None:
    found = checkpoints(folder)
    return found[-1][1] if found else None


def read_state(path: Path) -> tuple[TrainState, dict]:
    raw = json.loads((path / "state.json").read_text())
    return TrainState(raw["step"], raw["stage"], raw["metrics_lines"], raw["settings"], raw.get("sized")), raw


def restore_model(path: Path, model: nn.Module) -> None:
    missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
    if missing or unexpected:
        raise RadError(f"checkpoint {path} does not fit the student (missing {missing[:3]}, unexpected {unexpected[:3]})")


def restore_optimizer(path: Path, raw: dict, optimizer: torch.optim.Optimizer, param_names: list[str], scheduler,
                      place: list | None = None) -> None:
    """Load the optimizer, scheduler and RNG states saved beside the weights (after restore_model). `place`: per
    parameter, a function that cuts a whole tensor to this process's shard (a sharded run)."""
    tensors = load_file(str(path / "optimizer.safetensors"))
    state: dict[int, dict] = {}
    index = {name: i for i, name in enumerate(param_names)}
    for key, value in tensors.items():
        name, _, entry = key.rpartition("::")
        if name not in index:
            raise RadError(f"checkpoint {path} trains {name}, which this stage does not; resume with the same settings")
        state.setdefault(index[name], {})[entry] = place[index[name]](value) if place else value
    groups = [{**group, "params": list(range(len(param_names)))} for group in raw["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    scheduler.load_state_dict(raw["scheduler"])
    rng = load_file(str(path / "rng.safetensors"))
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available() and "cuda0" in rng:
        torch.cuda.set_rng_state_all([rng[f"cuda{i}"] for i in range(torch.cuda.device_count())])
    version, internal, gauss = raw["python_random"]
    random.setstate((version, tuple(internal), gauss))
