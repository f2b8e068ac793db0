"""Self-distillation data (`--data teacher:SOURCE`): the teacher's own completions to a prompt source's prompts, as
in the paper, for a user who has a model but no dataset.

SOURCE is `task:math` / `task:code` (rad's generators, training split), `task:smol` / `task:smol:NAME` (the chat
suite's training split, as user turns), `text:python-docs` (openings of the text set's distillation pages) or
`jsonl:PATH` (chat records: the messages before each record's last assistant turn). The prompts form a pool that the
stream cycles through; batch b holds prompts b*batch.. of it and is sampled with a seed made from (seed, b), so the
stream is a pure function of the settings: a run killed while the teacher writes continues where the file ends, and
a second run reads what the first wrote. The file (one per source, in the cache folder) starts with the settings
that made it; a file made with other settings is refused.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm import tqdm

from rad.data import chat_tasks
from rad.decode.generate import generate
from rad.decode.sampling import SamplingConfig
from rad.distill.data import read_records, record_document, task_problems
from rad.errors import RadError
from rad.files import atomic_write_text
from rad.model.gguf import cache_dir
from rad.search.prompts import chat_prompts, page_openings

POOL = 2048  # prompts drawn from a generator before the stream cycles (with new sampling seeds)
SMOL_POOL = 64  # per chat task: the small tasks have only a few hundred training messages


def prompt_pool(source: str, seed: int) -> list[str | list[dict]]:
    """The source's prompts: plain texts to continue, or chat messages for the template."""
    kind, _, rest = source.partition(":")
    if kind == "task" and (rest == "smol" or rest.startswith("smol:")):
        name = rest[len("smol:"):] if rest.startswith("smol:") else None
        n = SMOL_POOL * (1 if name else len(chat_tasks.SUITE))
        return [[{"role": "user", "content": text}] for text in chat_prompts(name, n, seed)]
    if kind == "task":
        return [p.prompt for p in itertools.islice(task_problems(rest.split("+"), POOL, seed), POOL)]
    if kind == "text":
        return page_openings(POOL, seed)
    chats = [r["messages"] for r in read_records(Path(rest)) if "messages" in r]
    pool = [m[:max(i for i, t in enumerate(m) if t.get("role") == "assistant")] for m in chats
            if any(t.get("role") == "assistant" for t in m[1:])]
    if not pool:
        raise RadError(f"teacher:{source}: {rest} has no chat record with an assistant turn after another message")
    return pool


class TeacherWriter:
    """Writes and reads the teacher's completions; `documents(source, assistant_only)` is the endless stream."""

    def __init__(self, teacher, tokenizer, settings: dict, folder: str | None, progress: bool):
        """`settings`: teacher, seed, temperature, max_new_tokens, batch (what decides the completions); `folder`:
        where the files go (default: rad's cache folder, under a name made from the settings)."""
        self.teacher, self.tokenizer, self.settings, self.progress = teacher, tokenizer, settings, progress
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        self.folder = Path(folder) if folder else cache_dir() / "teacher-data" / digest

    def path(self, source: str) -> Path:
        return self.folder / (source.replace(":", "-").replace("/", "_").replace("+", "-") + ".jsonl")

    def documents(self, source: str, assistant_only: bool) -> Iterator[tuple[list[int], list[bool]]]:
        for record in self.records(source):
            yield record_document(record, self.tokenizer, assistant_only)

    def records(self, source: str) -> Iterator[dict]:
        """What the file holds, then what the teacher writes next (appended to the file batch by batch)."""
        header = {**self.settings, "source": source}
        path = self.path(source)
        written = self._read(path, header)
        yield from written
        pool = prompt_pool(source, self.settings["seed"])
        batch = self.settings["batch"]
        bar = tqdm(desc=f"teacher writes {source}", unit="completion", initial=len(written), disable=not self.progress)
        with path.open("a", encoding="utf-8") as out:
            for b in itertools.count(len(written) // batch):
                # The file may end inside a batch (a kill): the batch is written again and its first records skipped.
                for record in self._write_batch(pool, b)[max(0, len(written) - b * batch):]:
                    out.write(json.dumps(record) + "\n")
                    out.flush()
                    bar.update(1)
                    yield record

    def _read(self, path: Path, header: dict) -> list[dict]:
        if not path.is_file():
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(header) + "\n")
            return []
        text = path.read_text(encoding="utf-8")
        lines = text.split("\n")
        stored = json.loads(lines[0])
        if stored != header:
            changed = sorted(k for k in stored.keys() | header.keys() if stored.get(k) != header.get(k))
            raise RadError(f"the teacher data {path} was written with other settings ({', '.join(changed)} differ); "
                           "use another --teacher-data-cache folder")
        complete = lines[1:-1]  # what follows the last newline is a line a kill cut short
        if lines[-1]:
            with path.open("r+", encoding="utf-8") as f:
                f.truncate(len(text.encode("utf-8")) - len(lines[-1].encode("utf-8")))
                os.fsync(f.fileno())
        return [json.loads(line) for line in complete]

    @torch.no_grad()
    def _write_batch(self, pool: list, b: int) -> list[dict]:
        batch, seed = self.settings["batch"], self.settings["seed"]
        prompts = [pool[(b * batch + i) % len(pool)] for i in range(batch)]
        ids = [self._encode(p) for p in prompts]
        sampling = SamplingConfig(temperature=self.settings["temperature"], seed=zlib.crc32(f"{seed}:{b}".encode()))
        tokens = generate(self.teacher, ids, self.settings["max_new_tokens"], sampling).tokens
        texts = [self.tokenizer.decode(t, skip_special_tokens=True) for t in tokens]
        return [{"messages": p + [{"role": "assistant", "content": text}]} if isinstance(p, list) else {"text": p + text}
                for p, text in zip(prompts, texts)]

    def _encode(self, prompt: str | list[dict]) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer(prompt)["input_ids"]
        if not self.tokenizer.chat_template:
            raise RadError("the prompts are chat messages but the tokenizer has no chat template")
        text = self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]
