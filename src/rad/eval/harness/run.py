"""`rad eval MODEL --lm-eval TASKS`: lm-evaluation-harness's tasks on a rad model, through the "rad" backend.

The tasks rad ships (tasks/: rad_math, rad_code, rad_smol, rad_ppl) and those in --include-path are found
without the harness's own catalogue (indexing its ~15,000 tasks takes seconds); the catalogue is read only when a
task is in neither. Its stock tasks download their data from a hub, so offline they run only where that data is
already in the local cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rad.errors import RadError
from rad.options import Options, option

if TYPE_CHECKING:  # the command line reads HarnessConfig without loading torch
    from rad.model.io import Placement

SHIPPED_TASKS = Path(__file__).parent / "tasks"
INSTALL_HINT = "lm-evaluation-harness is not installed: pip install 'rad[lm-eval]'"
BOOTSTRAP_ITERS = 1000  # for the standard errors; the harness's default, 100,000, takes minutes on perplexity


@dataclass(frozen=True)
class HarnessConfig(Options):
    lm_eval: list[str] | None = option(None, help="run these lm-evaluation-harness tasks instead of --task, e.g. "
                                                  "rad_math,rad_code (rad ships rad_math, rad_code, rad_smol, rad_ppl)")
    include_path: str | None = option(None, help="--lm-eval: a folder of the harness's task YAML files")
    limit: int | None = option(None, help="--lm-eval: at most this many documents per task", low=1)
    num_fewshot: int | None = option(None, help="--lm-eval: examples put before each document", low=0)
    chat_template: bool = option(False, help="--lm-eval: wrap each prompt in the model's chat template "
                                             "(rad_smol needs it)")


def import_task_manager():
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise RadError(INSTALL_HINT) from None
    return TaskManager


def task_manager(config: HarnessConfig):
    """The harness's task index over rad's tasks and --include-path; one line naming a task it cannot find."""
    TaskManager = import_task_manager()
    paths = [str(SHIPPED_TASKS)]
    if config.include_path is not None:
        if not Path(config.include_path).is_dir():
            raise RadError(f"--include-path {config.include_path} is not a folder")
        paths.append(config.include_path)
    manager = TaskManager(include_path=paths, include_defaults=False)
    if not all(name in manager.all_tasks for name in config.lm_eval):
        manager = TaskManager(include_path=paths)
    unknown = [name for name in config.lm_eval if name not in manager.all_tasks]
    if unknown:
        raise RadError(f"unknown lm-eval task {', '.join(unknown)}: not one of rad's ({', '.join(shipped_tasks())}), "
                       f"the harness's, or a YAML file in --include-path")
    return manager


def shipped_tasks() -> list[str]:
    return sorted(path.stem for path in SHIPPED_TASKS.glob("*.yaml"))


def run_harness(model: str, config: HarnessConfig, batch_size: int, placement: Placement) -> dict:
    """The harness's results ("results", "configs", ...), for `config.lm_eval` on `model` through the rad backend."""
    manager = task_manager(config)  # before the model loads: a wrong task name costs nothing
    from lm_eval import simple_evaluate

    from rad.eval.harness.backend import RadLM

    backend = RadLM(model, device=placement.device, dtype=placement.dtype, batch_size=batch_size,
                    compile=placement.compile)
    return simple_evaluate(model=backend, tasks=list(config.lm_eval), num_fewshot=config.num_fewshot,
                           limit=config.limit, apply_chat_template=config.chat_template, task_manager=manager,
                           bootstrap_iters=BOOTSTRAP_ITERS)
