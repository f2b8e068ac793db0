"""What a distillation run is told: the models, the data, the losses and the stages (an optional
alignment stage, then stage 1 and an optional stage 2)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class StageConfig:
    """One training stage. `params` says which parameters train (rad.distill.params): stage 1 trains
    the SSM mixers only ("ssm"); stage 2 everything ("all") or a named subset (name globs)."""

    steps: int
    lr: float
    params: str
    warmup: int = 0  # linear warm-up steps, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.1
    on_policy: float = 0.0  # probability that a step trains on the student's own completions (rad.distill.on_policy)


@dataclass
class DistillConfig:
    student: str  # a hybrid folder written by `rad convert`
    teacher: str  # the model the hybrid came from, or another with the same tokenizer
    data: str  # task:math | task:code | task:math+code | jsonl:PATH
    out: str
    # Stage 0, optional: each SSM mixer alone learns to reproduce the teacher's attention output at its layer
    # from the teacher's own input to that layer (teacher-forced; no backward through the network).
    align: StageConfig = field(default_factory=lambda: StageConfig(steps=0, lr=3e-3, params="ssm", warmup=10))
    stage1: StageConfig = field(default_factory=lambda: StageConfig(steps=200, lr=1e-3, params="ssm", warmup=20))
    stage2: StageConfig = field(default_factory=lambda: StageConfig(steps=0, lr=1e-4, params="all", warmup=10))
    seq_len: int = 256
    pack: bool = True  # concatenate documents and cut rows of seq_len; False: one document per row, padded
    assistant_only: bool = False  # loss only on assistant turns (chat) / completions (tasks)
    batch_size: int = 16  # sequences per optimizer step, over all processes and micro-batches
    grad_accum: int = 1  # micro-batches per optimizer step (per process)
    temperature: float = 1.0
    kl_weight: float = 1.0
    hidden_weight: float = 0.0  # hidden-state alignment at the replaced layers
    ce_weight: float = 0.0  # cross-entropy on the data
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    on_policy_max_new_tokens: int = 128  # longest completion the student writes on an on-policy step
    topk_cache: str | None = None  # folder of cached top-k teacher logits (reused across runs)
    topk: int = 64
    save_every: int = 50  # checkpoint every N optimizer steps (and at the end of each stage)
    keep_checkpoints: int = 2
    resume: bool = False
    seed: int = 0
    device: str | None = None  # None: cuda if available else cpu
    mixed_precision: str | None = None  # None: bf16 on GPU, no on CPU
    threads: int = 0  # torch CPU threads per process (0: torch's default)
    compile: bool = False  # torch.compile the student's and teacher's layers: faster steps after a one-off compile
    tensorboard: bool = False
    progress: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

