"""Shared pieces of the distillation tests: a tiny hybrid converted from the tiny Llama, word data, configs."""

import json
import random
from contextlib import contextmanager
from pathlib import Path

import pytest

import rad.distill.trainer as trainer_module

from rad.distill.config import DistillConfig
from rad.app.convert import ConvertConfig, convert_folder

REPLACED = [1, 2]


def make_hybrid(source: Path, out: Path, init: str = "rad") -> Path:
    convert_folder(source, out, REPLACED, ConvertConfig(init=init))
    return out


def write_texts(path: Path, n: int, seed: int = 0, lengths=(5, 40)) -> Path:
    """Documents of the tiny tokenizer's words ('w0'.. 'w126')."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            f.write(json.dumps({"text": " ".join(f"w{rng.randrange(127)}" for _ in range(rng.randrange(*lengths)))}) + "\n")
    return path


def config(student, teacher, data, out, steps1=4, steps2=0, **overrides) -> DistillConfig:
    settings = dict(student=str(student), teacher=str(teacher), data=f"jsonl:{data}", out=str(out),
                    stage1_steps=steps1, stage1_lr=1e-2, stage1_warmup=1, stage2_steps=steps2, stage2_lr=1e-3,
                    stage2_warmup=1,
                    seq_len=32, batch_size=4, save_every=100, progress=False,
                    mixed_precision="no")  # not "auto": the same arithmetic on every host, AMX or not
    settings.update(overrides)
    return DistillConfig(**settings)


@contextmanager
def killed_at_step(number: int):
    """Inside, a distillation dies (KeyboardInterrupt) as it starts step `number` (1-based)."""
    original = trainer_module.Trainer.train_step

    def dies(self, model, optimizer, scheduler, params, step, stage):
        if step == number - 1:
            raise KeyboardInterrupt
        return original(self, model, optimizer, scheduler, params, step, stage)

    with pytest.MonkeyPatch.context() as mp, pytest.raises(KeyboardInterrupt):
        mp.setattr(trainer_module.Trainer, "train_step", dies)
        yield
