"""The training engine (Hugging Face accelerate): one process on CPU or GPU, or many through
`accelerate launch` / torchrun (DDP), with gradient accumulation, clipping, a cosine schedule with
warm-up, checkpoints, resume and NaN guarding.

Batches: `batch_size` rows per optimizer step over all processes; process r of W takes its contiguous
share of the step's rows and cuts it into `grad_accum` micro-batches. Every loss is a sum divided by
the loss-token count of the whole step (known to every process, since all build the same rows), times W
because DDP averages gradients over processes. So a step's gradient is the same for any W and
grad_accum, up to floating-point summation order.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import nn
from tqdm import tqdm

from rad.distill import checkpoint as ckpt
from rad.distill import sharding
from rad.distill.budget import StageBudget
from rad.distill.config import DistillConfig, StageConfig
from rad.distill.data import Rows
from rad.distill.metrics import MetricsLog
from rad.distill.on_policy import OnPolicy
from rad.distill.params import freeze_all_but, select_parameters
from rad.distill.stage_losses import stage_losses
from rad.distill.teacher import TopkCache
from rad.errors import RadError


def cosine_with_warmup(stage: StageConfig):
    """lr factor for step s: linear warm-up to 1, then cosine down to min_lr_ratio at the last step."""
    def factor(s: int) -> float:
        if s < stage.warmup:
            return (s + 1) / stage.warmup
        progress = (s - stage.warmup) / max(1, stage.steps - stage.warmup)
        return stage.min_lr_ratio + (1 - stage.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


class Trainer:
    def __init__(self, config: DistillConfig, student: nn.Module, teacher: nn.Module, rows: Rows,
                 accelerator: Accelerator, settings: dict, cache: TopkCache | None = None,
                 on_policy: OnPolicy | None = None, budget: StageBudget | None = None):  # fmt: skip
        """`budget`: size the last stage to end by its deadline (rad.distill.budget)."""
        self.config, self.student, self.teacher, self.rows = config, student, teacher, rows
        self.acc, self.settings, self.on_policy = accelerator, settings, on_policy
        self.losses = stage_losses(config, student, teacher, accelerator, cache)
        self.stages = config.stages()
        for stage in self.stages.values():  # a stage with nothing to train fails now, not after the stages before it
            if stage.steps:
                select_parameters(student, stage.params)
        self.budgeted = max(number for number, stage in self.stages.items() if stage.steps) if budget else None
        self.budget = budget
        self.sized: int | None = None  # the budgeted stage's length, once known
        self.out = Path(config.out)
        self.checkpoints = self.out / "checkpoints"
        world, per_step = accelerator.num_processes, config.batch_size
        if per_step % (world * config.grad_accum):
            raise RadError(f"--batch-size {per_step} must be a multiple of processes ({world}) x --grad-accum ({config.grad_accum})")
        self.per_process = per_step // world
        self.micro = self.per_process // config.grad_accum
        if config.fsdp and world == 1:
            raise RadError("--fsdp shards the student over several processes; start them with accelerate launch or torchrun")
        self.sharded = False  # the student is sharded at the first stage (after a resume has restored its weights)

    def run(self) -> list[dict]:
        """Train the stages in turn (resuming from the latest checkpoint when asked); returns this run's metrics."""
        resume, raw = self._resume_point()
        if resume is not None:
            ckpt.restore_model(self.checkpoints / f"step-{resume.step:06d}", self.student)
            self.sized = resume.sized
        log = MetricsLog(self.out / "metrics.jsonl", resume.metrics_lines if resume else 0, self.config.tensorboard) \
            if self.acc.is_main_process else None
        done, records = resume.step if resume else 0, []
        first = 0
        for number, stage in self.stages.items():
            last = first + stage.steps
            if done < last:
                carried = raw if resume is not None and resume.stage == number and resume.step > first else None
                records += self._stage(number, stage, first, done, carried, log)
                done = last
            first = last
        if log is not None:
            log.close()
        return records

    def _resume_point(self) -> tuple[ckpt.TrainState | None, dict | None]:
        path = ckpt.latest_checkpoint(self.checkpoints) if self.config.resume else None
        if path is None:
            return None, None
        state, raw = ckpt.read_state(path)
        changed = sorted(k for k in state.settings.keys() | self.settings.keys() if state.settings.get(k) != self.settings.get(k))
        if changed:
            raise RadError(f"cannot resume from {path}: these settings differ from the checkpoint's: {', '.join(changed)}")
        return state, raw

    def _stage(self, number: int, stage: StageConfig, first: int, start: int, carried: dict | None, log) -> list[dict]:
        if self.config.fsdp and not self.sharded:
            sharding.shard(self.student)
            self.sharded = True
        names = select_parameters(self.student, stage.params)
        params = freeze_all_but(self.student, names)
        optimizer = torch.optim.AdamW(params, lr=stage.lr, weight_decay=self.config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(stage))
        if carried is not None:
            place = [sharding.place_like(p) for p in params] if self.sharded else None
            ckpt.restore_optimizer(self.checkpoints / f"step-{start:06d}", carried, optimizer, names, scheduler, place)
        self.acc.free_memory()  # drop the previous stage's DDP wrapper: its gradient hooks must not linger
        # A sharded student syncs its own gradients: accelerate would wrap it in DDP as well
        model, optimizer = (self.student, optimizer) if self.sharded else self.acc.prepare(self.student, optimizer)
        records = []
        budgeted = number == self.budgeted
        if budgeted and self.sized is not None:
            stage = self._resize(stage, self.sized, scheduler)
        bar = tqdm(total=stage.steps, initial=start - first, desc=f"distill stage {number}", unit="step",
                   disable=not (self.config.progress and self.acc.is_main_process))
        step = start
        while step < first + stage.steps:
            if budgeted:
                self.budget.step_started()
            record = self.train_step(model, optimizer, scheduler, params, step, number)
            if budgeted and self.sized is None:
                self.sized = self.budget.step_ended(step + 1 - first, stage.steps, self._agree)
                if self.sized is not None:
                    stage = self._resize(stage, self.sized, scheduler)
                    bar.total = stage.steps
            records.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            if log is not None:
                log.write(record)
            step += 1
            if step % self.config.save_every == 0 or step == first + stage.steps:
                state = ckpt.TrainState(step, number, log.lines if log else 0, self.settings, self.sized)
                self._save(optimizer, names, scheduler, state)
        bar.close()
        return records

    @staticmethod
    def _resize(stage: StageConfig, steps: int, scheduler) -> StageConfig:
        """The stage cut to `steps` by the time budget, its schedule's decay fitted to the new length."""
        stage = replace(stage, steps=steps, warmup=min(stage.warmup, steps))
        scheduler.lr_lambdas[0] = cosine_with_warmup(stage)
        return stage

    def _agree(self, seconds: float) -> float:
        """The slowest process's step time, known to every process."""
        return float(self.acc.reduce(torch.tensor([seconds], device=self.acc.device), reduction="max").item())

    def _save(self, optimizer, names, scheduler, state: ckpt.TrainState) -> None:
        inner = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer  # accelerate's wrapper
        # A sharded run's processes gather the whole tensors together; the main process writes them.
        weights = sharding.whole_state_dict(self.student) if self.sharded else None
        optim = sharding.whole_optimizer_state(inner) if self.sharded else inner.state_dict()
        if self.acc.is_main_process:
            ckpt.save_checkpoint(self.checkpoints, self.student, optim, names, scheduler, state,
                                 self.config.keep_checkpoints, weights)
        self.acc.wait_for_everyone()

    def step_rows(self, step: int, on_policy_fraction: float) -> tuple[Rows, int | None, int, bool]:
        """This process's rows for `step`, the global index of its first row in the data (None for rows
        the student wrote), the loss-token count of the whole step over all processes, and whether the
        step is on-policy."""
        if self.on_policy is not None and self.on_policy.chosen(step, on_policy_fraction):
            rows = self.on_policy.rows(self.student, step, self.per_process, self.acc.process_index)
            mine = torch.tensor([int(rows.loss[:, 1:].sum())], device=self.acc.device)
            return rows, None, int(self.acc.reduce(mine, reduction="sum").item()), True
        step_rows = self.rows.slice(step * self.config.batch_size, (step + 1) * self.config.batch_size)
        first = self.acc.process_index * self.per_process
        # Every process built the same rows, so each knows the whole step's count without communicating.
        tokens = int(step_rows.loss[:, 1:].sum())
        return step_rows.slice(first, first + self.per_process), step * self.config.batch_size + first, tokens, False

    def train_step(self, model, optimizer, scheduler, params, step: int, stage: int) -> dict:
        started = time.perf_counter()
        rows, first_row, tokens, on_policy = self.step_rows(step, self.stages[stage].on_policy)
        if tokens == 0:
            raise RadError(f"step {step + 1} has no loss tokens; use longer rows or turn --assistant-only off")
        scale = self.acc.num_processes / tokens
        loss_of_stage = self.losses[stage]
        weights = loss_of_stage.weights
        sums = torch.zeros(3, dtype=torch.float64)
        for m in range(self.config.grad_accum):
            a = m * self.micro
            part = rows.slice(a, a + self.micro)
            sync = m == self.config.grad_accum - 1 or self.sharded  # a sharded student syncs every micro-batch
            # accelerate's autocast comes with its prepare(), which a sharded student skips
            with self.acc.no_sync(model) if not sync else nullcontext(), \
                    self.acc.autocast() if self.sharded else nullcontext():
                terms = loss_of_stage.terms(model, part, None if first_row is None else first_row + a)
                self.acc.backward(sum(w * t for w, t in zip(weights, terms)) * scale)
            sums += torch.stack([t.detach().double().cpu() for t in terms])
        if loss_of_stage.outside_model and self.acc.num_processes > 1:
            for p in params:  # the prepared model's DDP did not see these gradients: average them here
                p.grad = self.acc.reduce(p.grad, reduction="mean")
        sums = self.acc.reduce(sums.to(self.acc.device), reduction="sum").cpu() / tokens
        kl, hidden, ce = sums.tolist()
        loss = sum(w * value for w, value in zip(weights, (kl, hidden, ce)))
        max_norm = self.config.max_grad_norm if self.config.max_grad_norm > 0 else math.inf
        if self.sharded:
            grad_norm = float(sharding.whole(torch.nn.utils.clip_grad_norm_(params, max_norm)))
        else:
            grad_norm = float(self.acc.clip_grad_norm_(params, max_norm))
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            self._stop(step, stage, loss, grad_norm)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - started
        return {"step": step + 1, "stage": stage, "loss": loss, "kl": kl, "hidden": hidden, "ce": ce, "lr": lr,
                "grad_norm": grad_norm, "loss_tokens": tokens, "on_policy": on_policy,
                "tokens_per_s": int(rows.valid.sum()) * self.acc.num_processes / seconds}

    def _stop(self, step: int, stage: int, loss: float, grad_norm: float) -> None:
        latest = ckpt.latest_checkpoint(self.checkpoints)
        kept = f"the last good checkpoint is {latest} (continue from it with --resume, e.g. with a lower --lr)" \
            if latest else "no checkpoint was written before it"
        what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {grad_norm}"
        raise RadError(f"training stopped at step {step + 1} (stage {stage}): the {what} is not finite; {kept}")

