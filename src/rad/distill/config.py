"""What a distillation run is told: the models, the data, the losses and the stages (an optional
alignment stage, then stage 1 and an optional stage 2)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rad.errors import RadError
from rad.machine import THREADS_HELP
from rad.options import Options, internal, option, seed_option

DATA_HELP = ("parts joined by + that take turns: task:math | task:code | task:math+code (a task named twice gets twice "
             "its share) | text:python-docs (the text set) | jsonl:PATH (texts or chat messages) | teacher:SOURCE "
             "(the teacher's completions to SOURCE's prompts: task:math|code|smol|smol:NAME, text:python-docs, "
             "jsonl:PATH of chats)")
PRECISIONS = ("auto", "no", "bf16", "fp16")


@dataclass(frozen=True)
class StageConfig:
    """One training stage as the trainer runs it. `params` says which parameters train (rad.distill.params):
    the alignment stage and stage 1 train the SSM mixers only ("ssm"); stage 2 everything ("all") or a named
    subset (name globs)."""

    steps: int
    lr: float
    params: str
    warmup: int = 0  # linear warm-up steps, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.1
    on_policy: float = 0.0  # probability that a step trains on the student's own completions (rad.distill.on_policy)


@dataclass
class DistillConfig(Options):
    student: str | None = option(None, help="hybrid folder from `rad convert` (the student)", positional=True,
                                 required=True, metavar="hybrid")
    teacher: str | None = option(None, help="the source model, or another with the same tokenizer", required=True)
    data: str | None = option(None, help=DATA_HELP, required=True)
    out: str | None = option(None, help="folder for the distilled hybrid, metrics.jsonl and checkpoints", required=True)
    # Stage 0, optional: each SSM mixer alone learns to reproduce the teacher's attention output at its layer
    # from the teacher's own input to that layer (teacher-forced; no backward through the network).
    align_steps: int = option(0, help="first, steps in which each SSM mixer alone learns to reproduce the teacher's "
                                      "attention output from the teacher's input to its layer (0: none)", low=0)
    align_lr: float = option(3e-3, help="alignment stage peak learning rate", above=0)
    align_warmup: int = option(10, help="alignment stage warm-up steps (at most its steps; then cosine decay)", low=0)
    stage1_steps: int = option(200, help="steps training only the SSM mixers", low=0)
    # 1e-4: on SmolLM2 (135M) 1e-3 drove the KL up once the warm-up passed 4e-4 and ended further from the teacher
    # (docs/results.md, "Stage-1 learning rate"); the shipped demo model (6.5M) takes 5e-3, as rad demo sets.
    stage1_lr: float = option(1e-4, help="stage 1 peak learning rate", above=0, aliases=("--lr",))
    stage1_warmup: int = option(20, help="stage 1 warm-up steps (at most its steps; then cosine decay)", low=0,
                                aliases=("--warmup",))
    stage1_on_policy: float = option(0.0, help="stage 1: share of steps trained on the student's own sampled "
                                               "completions", low=0, high=1, aliases=("--on-policy",))
    stage2_steps: int = option(0, help="steps of stage 2, end to end (0: no stage 2)", low=0)
    stage2_lr: float = option(1e-4, help="stage 2 peak learning rate", above=0)
    stage2_warmup: int = option(10, help="stage 2 warm-up steps (at most its steps; then cosine decay)", low=0)
    stage2_params: str = option("all", help="what stage 2 trains: all | ssm | name globs, e.g. 'ssm,model.layers.*.mlp.*'")
    stage2_on_policy: float = option(0.0, help="stage 2: share of on-policy steps", low=0, high=1)
    time_budget: float | None = option(None, help="seconds the distillation may take: its last stage's steps (at most "
                                                   "the configured ones) are sized from its measured step time", above=0)
    min_lr_ratio: float = option(0.1, help="every stage's cosine decay ends at this share of its peak rate", low=0, high=1)
    teacher_temperature: float = option(1.0, help="teacher:SOURCE data: sampling temperature of the "
                                                  "teacher's completions (0: greedy)", low=0)
    teacher_max_new_tokens: int = option(256, help="teacher:SOURCE data: longest completion", low=1)
    teacher_batch: int = option(16, help="teacher:SOURCE data: prompts answered at once", low=1)
    teacher_data_cache: str | None = option(None, help="teacher:SOURCE data: folder of the completions, reused by "
                                                       "later runs (default: rad's cache folder, by settings)")
    on_policy_max_new_tokens: int = option(128, help="longest completion on an on-policy step", low=1)
    seq_len: int = option(256, help="tokens per row", low=2)
    pack: bool = option(True, help="one document per row (padded) instead of packed rows", flag="--no-pack")
    assistant_only: bool = option(False, help="loss only on assistant turns / task completions")
    batch_size: int = option(16, help="rows per optimizer step, over all processes", low=1)
    grad_accum: int = option(1, help="micro-batches per optimizer step (per process)", low=1)
    temperature: float = option(1.0, help="temperature of the distillation KL", above=0)
    loss_chunk: int = option(512, help="positions whose full-vocabulary logits the KL holds at once (memory)", low=1)
    gradient_checkpointing: bool = option(False, help="recompute the student's layers in the backward pass instead "
                                                      "of keeping their activations (less memory, slower steps)")
    kl_weight: float = option(1.0, help="weight of the KL to the teacher", low=0)
    hidden_weight: float = option(0.0, help="weight of hidden-state alignment at the replaced layers", low=0)
    ce_weight: float = option(0.0, help="weight of cross-entropy on the data", low=0)
    weight_decay: float = option(0.0, help="AdamW weight decay", low=0)
    max_grad_norm: float = option(1.0, help="gradient clipping (0: off)", low=0)
    topk_cache: str | None = option(None, help="folder of cached top-k teacher logits, reused across runs")
    topk: int = option(64, help="logits kept per token in the top-k cache", low=1)
    save_every: int = option(50, help="checkpoint every N steps (and at the end of each stage)", low=1)
    keep_checkpoints: int = option(2, help="checkpoints kept in OUT/checkpoints", low=1)
    resume: bool = option(False, help="continue from the latest checkpoint in --out")
    seed: int = seed_option("seed of the data and the fresh parameters")
    device: str | None = option(None, help="cpu | cuda (default: cuda if available)")
    mixed_precision: str = option("auto", help="auto: bf16 where the device runs it natively (a GPU with bf16, a CPU "
                                               "with AMX or AVX512-BF16), else no (float32)", choices=PRECISIONS)
    threads: int | str = option(0, help=f"{THREADS_HELP}, per process", low=0, words=("auto",))
    compile: bool = option(False, help="torch.compile the models' layers: faster steps after a one-off compile "
                                       "(minutes on a small CPU)")
    fsdp: bool = option(False, help="shard the student's weights, gradients and optimizer state over the processes "
                                    "(torch FSDP2; under accelerate launch or torchrun)")
    tensorboard: bool = option(False, help="also log to OUT/tensorboard (pip install 'rad[tensorboard]')")
    progress: bool = internal(True, "the command turns the progress bar off with --json")

    def __post_init__(self):
        super().__post_init__()
        if self.align_steps + self.stage1_steps + self.stage2_steps == 0:
            raise RadError("nothing to train: give --align-steps, --stage1-steps and/or --stage2-steps")
        if self.fsdp:
            # The alignment stage runs mixers outside the model and on-policy steps decode a different number of
            # steps in each process: both would use a sharded layer outside the forward all processes run together.
            unsupported = [flag for flag, on in (("--align-steps", self.align_steps), ("--compile", self.compile),
                                                 ("--stage1-on-policy", self.stage1_on_policy),
                                                 ("--stage2-on-policy", self.stage2_on_policy)) if on]
            if unsupported:
                raise RadError(f"--fsdp does not go with {', '.join(unsupported)}")

    def stages(self) -> dict[int, StageConfig]:
        """The stages in order: 0 (alignment), 1 and 2; a warm-up never outlasts its stage."""
        return {
            0: StageConfig(self.align_steps, self.align_lr, "ssm", min(self.align_warmup, self.align_steps),
                           self.min_lr_ratio),
            1: StageConfig(self.stage1_steps, self.stage1_lr, "ssm", min(self.stage1_warmup, self.stage1_steps),
                           self.min_lr_ratio, self.stage1_on_policy),
            2: StageConfig(self.stage2_steps, self.stage2_lr, self.stage2_params, min(self.stage2_warmup, self.stage2_steps),
                           self.min_lr_ratio, self.stage2_on_policy),
        }

    @property
    def total_steps(self) -> int:
        return self.align_steps + self.stage1_steps + self.stage2_steps

    def to_dict(self) -> dict:
        return asdict(self)
