"""Perplexity on held-out text, and how closely a model follows a teacher there (KL per token, top-1 agreement).

Task specs: `ppl:PATH` (a text file: documents separated by blank lines; or a jsonl file of {"text": ...}) and
`ppl:python-docs` (the evaluation part of rad's text set, rad.data.text_set). Each document is scored on its own
with a sliding window: windows of `window` tokens that move by `stride`, each token scored once, by the first
window that reaches it with at least window - stride tokens of context (at least one; or all of the document
before it).
Token-weighted: perplexity = exp(total negative log-likelihood / scored tokens), over all documents together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from rad.data import text_set
from rad.errors import RadError
from rad.files import read_jsonl, read_text_lines
from rad.model.llama import CausalLM


def load_texts(spec: str, n: int) -> list[tuple[str, str]]:
    """(name, text) of the first `n` documents of a `ppl:` task."""
    source = spec.removeprefix("ppl:")
    if source == text_set.NAME:
        return text_set.documents("eval")[:n]
    path = Path(source)
    if path.suffix == ".jsonl":
        texts = []
        for number, record in read_jsonl(path, "text file"):
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise RadError(f"{path}:{number}: not a JSON object with a 'text' string")
            texts.append((f"{path.name}:{number}", record["text"]))
    else:
        blocks = "\n".join(read_text_lines(path, "text file")).split("\n\n")
        texts = [(f"{path.name}#{i}", block.strip()) for i, block in enumerate(blocks) if block.strip()]
    if not texts:
        raise RadError(f"text file {path} holds no text")
    return texts[:n]


def windows(length: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first scored position) of the windows over a document of `length` tokens: every position but the
    first is scored exactly once."""
    spans, scored = [], 1
    start = 0
    while scored < length:
        end = min(start + window, length)
        spans.append((start, end, scored))
        scored = end
        start = max(0, end - max(window - stride, 1))  # at least the token before the first one scored
    return spans


@torch.no_grad()
def score_texts(model: CausalLM, tokenizer, texts: Sequence[tuple[str, str]], window: int, stride: int,
                teacher: CausalLM | None = None) -> dict:
    """Perplexity (and, with a teacher, mean KL(teacher || model) per token and top-1 agreement) over the texts."""
    if not 1 <= stride <= window:
        raise RadError(f"--stride must be between 1 and --window ({window}), got {stride}")
    nll, kl, agree, tokens = 0.0, 0.0, 0, 0
    for _, text in texts:
        ids = tokenizer(text)["input_ids"]
        for start, end, first in windows(len(ids), window, stride):
            chunk = torch.tensor([ids[start:end]], device=model.device)
            positions = torch.arange(end - start, device=model.device)[None]
            logits = model(chunk, positions)[0, first - start - 1 : end - start - 1].float()
            targets = chunk[0, first - start : end - start]
            nll += F.cross_entropy(logits, targets, reduction="sum").item()
            tokens += len(targets)
            if teacher is not None:
                reference = teacher(chunk, positions)[0, first - start - 1 : end - start - 1].float()
                p = F.log_softmax(reference, -1)
                kl += (p.exp() * (p - F.log_softmax(logits, -1))).sum().item()
                agree += int((reference.argmax(-1) == logits.argmax(-1)).sum())
    if tokens == 0:
        raise RadError("the texts hold no token to score (each document needs at least two)")
    result = {"n": len(texts), "tokens": tokens, "nll": nll / tokens, "perplexity": math.exp(nll / tokens)}
    if teacher is not None:
        result |= {"kl": kl / tokens, "top1_agreement": agree / tokens}
    return result
