"""Which parameters a stage trains, from a spec: comma-separated items, each `ssm` (every parameter
of the SSM mixers, i.e. the replaced layers), `all`, or a glob over parameter names
(`model.layers.*.mlp.*`). Everything else is frozen (requires_grad False, not in the optimizer)."""

from __future__ import annotations

from fnmatch import fnmatchcase

from torch import nn

from rad.errors import RadError
from rad.model.ssm import Mamba2Mixer


def ssm_parameter_names(model: nn.Module) -> set[str]:
    names = set()
    for prefix, module in model.named_modules():
        if isinstance(module, Mamba2Mixer):
            names.update(f"{prefix}.{name}" for name, _ in module.named_parameters())
    return names


def select_parameters(model: nn.Module, spec: str) -> list[str]:
    """Names of the parameters `spec` selects (in the model's order); a spec that selects nothing is an error."""
    items = [item.strip() for item in spec.split(",") if item.strip()]
    ssm = ssm_parameter_names(model) if "ssm" in items else set()
    if "ssm" in items and not ssm:
        raise RadError("the student has no SSM mixers to train; give a hybrid folder made by `rad convert`")
    globs = [item for item in items if item not in ("ssm", "all")]
    names = [name for name, _ in model.named_parameters()]
    unmatched = [g for g in globs if not any(fnmatchcase(n, g) for n in names)]
    if unmatched:
        raise RadError(f"no parameter matches {', '.join(unmatched)}; names look like {names[0]}")
    chosen = [n for n in names if "all" in items or n in ssm or any(fnmatchcase(n, g) for g in globs)]
    if not chosen:
        raise RadError(f"parameter spec '{spec}' selects nothing; use ssm, all or name globs")
    return chosen


def freeze_all_but(model: nn.Module, names: list[str]) -> list[nn.Parameter]:
    """Set requires_grad on exactly `names`; returns those parameters."""
    chosen = set(names)
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(name in chosen)
        if name in chosen:
            params.append(p)
    return params
