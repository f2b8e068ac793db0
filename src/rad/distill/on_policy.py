"""On-policy distillation (as in GKD, Agarwal et al. 2024): on some steps the student writes the
completions it is trained on, and the teacher grades every token of them.

Off-policy rows teach the student the teacher's next token after the teacher's own (here: the data's)
text; at generation time the student continues its own text, and a small early slip (a skipped
statement, a wrong sum) puts it where training never took it. On-policy rows are exactly those
places. A step is on-policy with the stage's probability, decided by (seed, step) alone, so every
process and a resumed run agree; the prompts and the sampling seeds depend on (seed, step, process).
"""

from __future__ import annotations

import itertools
import random
import zlib
from collections.abc import Iterator

import torch

from rad.decode.generate import generate
from rad.decode.sampling import SamplingConfig
from rad.distill.data import Rows, build_rows, prompt_source


class OnPolicy:
    def __init__(self, spec: str, tokenizer, seed: int, seq_len: int, pack: bool, pad_id: int,
                 assistant_only: bool, max_new_tokens: int):  # fmt: skip
        self.prompts = prompt_source(spec, tokenizer)  # a source without prompts fails now, not at an on-policy step
        self.seed, self.seq_len, self.pack, self.pad_id = seed, seq_len, pack, pad_id
        self.assistant_only, self.max_new_tokens = assistant_only, max_new_tokens

    def chosen(self, step: int, fraction: float) -> bool:
        return fraction > 0 and random.Random(f"on-policy:{self.seed}:{step}").random() < fraction

    @torch.no_grad()
    def rows(self, student, step: int, n_rows: int, process: int) -> Rows:
        """`n_rows` rows of the student's own completions (sampled at temperature 1) to fresh prompts."""
        seed = zlib.crc32(f"{self.seed}:{step}:{process}".encode())
        stream = self.prompts(seed)
        was_training = student.training
        student.eval()
        try:
            return build_rows(self._documents(student, stream, n_rows, seed), n_rows, self.seq_len, self.pack, self.pad_id)
        finally:
            student.train(was_training)

    def _documents(self, student, stream: Iterator[list[int]], n_rows: int, seed: int):
        # Packed rows hold several documents each; generating for 4 prompts per row at once usually fills
        # them in one batched call (the extra documents are dropped).
        chunk = 4 * n_rows if self.pack else n_rows
        for round_ in itertools.count():
            batch = list(itertools.islice(stream, chunk))
            sampling = SamplingConfig(temperature=1.0, seed=seed + round_ * chunk)
            completions = generate(student, batch, self.max_new_tokens, sampling).tokens
            for prompt, completion in zip(batch, completions):
                yield prompt + completion, [not self.assistant_only] * len(prompt) + [True] * len(completion)
