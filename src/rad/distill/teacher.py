"""The teacher side: the same-tokenizer check, and an on-disk cache of the teacher's top-k logits.

The cache holds, per training row, the k largest logits and their token ids (k·(2+4) bytes per token
instead of vocab·4), so runs that share teacher, data and sequence length skip the teacher's forward.
It is keyed by a fingerprint of those settings; a cache made for other settings is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rad.errors import RadError
from rad.files import atomic_write_json


def check_same_tokenizer(student_tok, teacher_tok, student_vocab: int, teacher_vocab: int) -> None:
    """Distillation compares distributions token by token: both sides must mean the same thing by every id."""
    if student_vocab != teacher_vocab:
        raise RadError(f"the teacher's vocabulary has {teacher_vocab} entries and the student's {student_vocab}; "
                       "a teacher must have the same tokenizer")
    s, t = student_tok.get_vocab(), teacher_tok.get_vocab()
    differ = sorted(tok for tok in s.keys() | t.keys() if s.get(tok) != t.get(tok))
    if differ:
        example = differ[0]
        raise RadError(f"the teacher's tokenizer maps {len(differ)} tokens differently from the student's "
                       f"(e.g. {example!r}: teacher {t.get(example)}, student {s.get(example)}); "
                       "a teacher must have the same tokenizer")
    specials = ("bos_token_id", "eos_token_id", "pad_token_id")
    wrong = [name for name in specials if getattr(student_tok, name) != getattr(teacher_tok, name)]
    if wrong:
        raise RadError(f"the teacher's tokenizer has different special tokens ({', '.join(wrong)}); "
                       "a teacher must have the same tokenizer")


class TopkCache:
    """Files `rows-{first}-{n}.safetensors` under `folder`, one per (first row, row count) slice."""

    def __init__(self, folder: str | Path, fingerprint: dict, k: int):
        self.folder, self.k = Path(folder), k
        meta = self.folder / "meta.json"
        fingerprint = {**fingerprint, "k": k}
        if meta.is_file():
            stored = json.loads(meta.read_text())
            if stored != fingerprint:
                changed = sorted(key for key in stored.keys() | fingerprint.keys() if stored.get(key) != fingerprint.get(key))
                raise RadError(f"the top-k cache {self.folder} was made for other settings ({', '.join(changed)} differ); "
                               "use another --topk-cache folder")
        else:
            atomic_write_json(meta, fingerprint)

    def _path(self, first: int, n: int) -> Path:
        return self.folder / f"rows-{first}-{n}.safetensors"

    def get(self, first: int, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        path = self._path(first, n)
        if not path.is_file():
            return None
        tensors = load_file(str(path))
        return tensors["values"], tensors["indices"]

    def put(self, first: int, values: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the top-k logits `values` and their `indices` (n, T, k) for rows first.. and return them as stored."""
        values, indices = values.to(torch.bfloat16).contiguous().cpu(), indices.to(torch.int32).contiguous().cpu()
        path = self._path(first, values.shape[0])
        tmp = path.with_name(f".{path.name}.tmp")
        save_file({"values": values, "indices": indices}, str(tmp))
        tmp.replace(path)
        return values, indices
