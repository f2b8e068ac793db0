"""Training rows for distillation: documents from a task generator or a local jsonl, tokenised with a
loss mask, then packed (or padded) to a sequence length.

A spec is one part or several joined by `+`, whose documents take turns: `task:math`, `task:code`,
`task:math+code` (one part: its tasks take turns), `text:python-docs` (the text set's distillation pages),
`jsonl:PATH` where each line is {"text": "..."} or {"messages": [{"role": ..., "content": ...}, ...]}
(rendered by the tokenizer's chat template), and `teacher:SOURCE` (completions the teacher writes to a prompt
source's prompts: rad.distill.teacher_data). With `assistant_only`, only assistant turns (and task completions)
carry loss; the rest is context. The row stream is a pure function of (spec, seed, seq_len, pack), so row i is the same in every
process and after a resume: the data position is just a row index.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from rad.data import chat_tasks, code, math, text_set
from rad.data.problem import Problem
from rad.errors import RadError
from rad.files import read_jsonl

TASKS = {"math": math, "code": code}
TASK_CHUNK = 2000  # problems generated per round; a new round uses a new seed
PROMPT_CHUNK = 64  # prompts per round for on-policy distillation, which draws a fresh stream every step


@dataclass
class Rows:
    """N rows of seq_len tokens. `loss` marks tokens whose prediction is trained (real, not a document's
    first token, inside the loss region); `valid` marks real tokens (padding is on the right)."""

    ids: torch.Tensor  # (N, L) int64
    loss: torch.Tensor  # (N, L) bool
    valid: torch.Tensor  # (N, L) bool

    def __len__(self) -> int:
        return self.ids.shape[0]

    def slice(self, start: int, stop: int) -> Rows:
        return Rows(self.ids[start:stop], self.loss[start:stop], self.valid[start:stop])


PART_FORMS = f"task:math, task:code, task:math+code, text:{text_set.NAME}, jsonl:PATH or teacher:SOURCE"
PROMPT_FORMS = f"task:math, task:code, task:smol, task:smol:NAME, text:{text_set.NAME} or jsonl:PATH"


def data_parts(spec: str) -> list[str]:
    """The parts of a spec joined by `+`; a bare name after a task continues its task list (task:math+code is one
    part, as is teacher:task:math+code)."""
    parts = []
    for piece in spec.split("+"):
        if ":" not in piece and parts and "task:" in parts[-1]:
            parts[-1] += "+" + piece
        else:
            parts.append(piece)
    return parts


def check_data_spec(spec: str) -> None:
    """Fail early (before any model loads) on an unknown part, task or a missing file."""
    for part in data_parts(spec):
        kind, _, rest = part.partition(":")
        if kind == "teacher":
            check_prompt_source(rest)
        elif kind == "text" and rest == text_set.NAME:
            text_set.source_dir()  # the Debian package must be there
        elif kind in ("task", "jsonl"):
            check_task_or_file(part)
        else:
            raise RadError(f"data spec part '{part}' is not understood; use {PART_FORMS}, joined by +")


def check_task_or_file(spec: str) -> None:
    kind, _, rest = spec.partition(":")
    if kind == "task":
        unknown = [name for name in rest.split("+") if name not in TASKS]
        if unknown or not rest:
            raise RadError(f"unknown task in '{spec}'; use task:math, task:code or task:math+code")
    elif not Path(rest).is_file():
        raise RadError(f"data file {rest} does not exist")


def check_prompt_source(source: str) -> None:
    """A source the teacher writes completions for."""
    kind, _, rest = source.partition(":")
    if kind == "task" and (rest == "smol" or rest.startswith("smol:")):
        if rest != "smol":
            chat_tasks.check_name(rest[len("smol:"):])
        return
    if kind in ("task", "jsonl"):
        return check_task_or_file(source)
    if source != f"text:{text_set.NAME}":
        raise RadError(f"teacher:{source}: the teacher writes completions to prompts of {PROMPT_FORMS}")


def task_problems(names: list[str], chunk: int, seed: int) -> Iterator[Problem]:
    """Endless problems of the named tasks, taking turns. Each round draws `chunk` problems per name with a
    new seed; a task named twice (task:math+code+code) draws twice as many and takes two turns, each with
    problems of its own (the first `chunk` are the ones it draws when named once)."""
    for round_ in itertools.count():
        drawn = {name: TASKS[name].generate(chunk * names.count(name), seed=seed * 1_000_003 + round_, split="train")
                 for name in dict.fromkeys(names)}
        starts = [names[:i].count(name) * chunk for i, name in enumerate(names)]
        turns = [drawn[name][start:start + chunk] for name, start in zip(names, starts)]
        for problems in zip(*turns):
            yield from problems


def task_documents(names: list[str], tokenizer, seed: int, assistant_only: bool) -> Iterator[tuple[list[int], list[bool]]]:
    """Endless prompt + completion + EOS documents (the demo model's training format), tasks interleaved."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for p in task_problems(names, TASK_CHUNK, seed):
        prompt = tokenizer(p.prompt)["input_ids"]
        completion = tokenizer(p.completion, add_special_tokens=False)["input_ids"] + eos
        yield prompt + completion, [not assistant_only] * len(prompt) + [True] * len(completion)


def read_records(path: Path) -> list[dict]:
    records = []
    for number, record in read_jsonl(path, "data file"):
        if not (isinstance(record, dict) and (isinstance(record.get("text"), str) or isinstance(record.get("messages"), list))):
            raise RadError(f"{path}:{number}: expected {{\"text\": ...}} or {{\"messages\": [...]}}")
        records.append(record)
    return records


def chat_document(messages: list[dict], tokenizer, assistant_only: bool) -> tuple[list[int], list[bool]]:
    """Render with the chat template; a token is in the loss region if its characters lie inside an
    assistant message's span. Spans come from rendering growing prefixes of the conversation, which
    works for any template that renders a prefix of the conversation as a prefix of the text."""
    if not tokenizer.chat_template:
        raise RadError("the data has chat messages but the tokenizer has no chat template")
    spans, previous = [], ""
    for i, message in enumerate(messages):
        text = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not text.startswith(previous):
            raise RadError("the chat template does not render a conversation's prefix as a prefix; cannot find assistant turns")
        if message.get("role") == "assistant":
            spans.append((len(previous), len(text)))
        previous = text
    encoded = tokenizer(previous, add_special_tokens=False, return_offsets_mapping=True)
    in_assistant = [any(a <= start and end <= b for a, b in spans) for start, end in encoded["offset_mapping"]]
    return encoded["input_ids"], [m or not assistant_only for m in in_assistant]


def record_document(record: dict, tokenizer, assistant_only: bool) -> tuple[list[int], list[bool]]:
    """A {"text"} record (all of it in the loss region, EOS appended) or a {"messages"} one (chat_document)."""
    if "messages" in record:
        return chat_document(record["messages"], tokenizer, assistant_only)
    ids = tokenizer(record["text"])["input_ids"] + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
    return ids, [True] * len(ids)


def shuffled_documents(records: list[dict], tokenizer, seed: int, assistant_only: bool) -> Iterator[tuple[list[int], list[bool]]]:
    """The records' documents, reshuffled each epoch (order depends only on seed and epoch)."""
    docs = [record_document(record, tokenizer, assistant_only) for record in records]
    for epoch in itertools.count():
        order = list(range(len(docs)))
        random.Random(f"{seed}:{epoch}").shuffle(order)
        yield from (docs[i] for i in order)


def prompt_source(spec: str, tokenizer) -> Callable[[int], Iterator[list[int]]]:
    """Prompts for on-policy distillation (the student writes the answers), read once: a function from a seed to an
    endless stream taking turns between the spec's parts that have prompts: a task's questions, or each chat
    record's messages before its last assistant turn, rendered with the template's generation prompt (the
    teacher's parts give their own sources' prompts). Text has no prompt to answer: a spec with no prompts is an
    error, raised here."""
    check_data_spec(spec)
    sources = [part.removeprefix("teacher:") for part in data_parts(spec)]
    streams = [part_prompts(source, tokenizer) for source in sources if has_prompts(source)]
    if not streams:
        raise RadError(f"on-policy distillation needs prompts to answer; '{spec}' has none (use a task or chat records)")
    return lambda seed: take_turns([stream(seed) for stream in streams])


def has_prompts(source: str) -> bool:
    kind, _, rest = source.partition(":")
    return kind == "jsonl" or (kind == "task" and all(name in TASKS for name in rest.split("+")))


def part_prompts(source: str, tokenizer) -> Callable[[int], Iterator[list[int]]]:
    kind, _, rest = source.partition(":")
    if kind == "task":
        return functools.partial(task_prompts, rest.split("+"), tokenizer)
    path = Path(rest)
    # A record answers a prompt if some assistant turn follows at least one other message.
    chats = [r["messages"] for r in read_records(path)
             if "messages" in r and any(m.get("role") == "assistant" for m in r["messages"][1:])]
    if not chats:
        raise RadError(f"on-policy distillation needs prompts to answer, but {path} has no chat record with an assistant turn")
    if not tokenizer.chat_template:
        raise RadError("the data has chat messages but the tokenizer has no chat template")
    return functools.partial(chat_prompts, chats, tokenizer)


def task_prompts(names: list[str], tokenizer, seed: int) -> Iterator[list[int]]:
    return (tokenizer(p.prompt)["input_ids"] for p in task_problems(names, PROMPT_CHUNK, seed))


def chat_prompts(chats: list[list[dict]], tokenizer, seed: int) -> Iterator[list[int]]:
    rng = random.Random(seed)
    while True:
        messages = rng.choice(chats)
        last = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
        text = tokenizer.apply_chat_template(messages[:last], tokenize=False, add_generation_prompt=True)
        yield tokenizer(text, add_special_tokens=False)["input_ids"]


def take_turns(streams: list[Iterator]) -> Iterator:
    """One item of each endless stream in turn."""
    return itertools.chain.from_iterable(zip(*streams)) if len(streams) > 1 else streams[0]


def documents(spec: str, tokenizer, seed: int, assistant_only: bool, teacher_writer=None) -> Iterator[tuple[list[int], list[bool]]]:
    """The spec's documents, its parts taking turns. `teacher_writer` (rad.distill.teacher_data.TeacherWriter)
    writes the teacher: parts."""
    check_data_spec(spec)
    return take_turns([part_documents(part, tokenizer, seed, assistant_only, teacher_writer) for part in data_parts(spec)])


def part_documents(part: str, tokenizer, seed: int, assistant_only: bool, teacher_writer) -> Iterator[tuple[list[int], list[bool]]]:
    kind, _, rest = part.partition(":")
    if kind == "task":
        return task_documents(rest.split("+"), tokenizer, seed, assistant_only)
    if kind == "teacher":
        if teacher_writer is None:
            raise RadError(f"'{part}' needs the teacher to write its completions (rad distill does)")
        return teacher_writer.documents(rest, assistant_only)
    records = [{"text": text} for _, text in text_set.documents("distill")] if kind == "text" else read_records(Path(rest))
    return shuffled_documents(records, tokenizer, seed, assistant_only)


def build_rows(docs: Iterator[tuple[list[int], list[bool]]], n_rows: int, seq_len: int, pack: bool, pad_id: int) -> Rows:
    """The first `n_rows` rows. Packed: documents concatenated and cut every seq_len tokens (a document
    may continue on the next row). Unpacked: one document per row, cut at seq_len, padded on the right."""
    ids = torch.full((n_rows, seq_len), pad_id, dtype=torch.long)
    loss = torch.zeros(n_rows, seq_len, dtype=torch.bool)
    valid = torch.zeros(n_rows, seq_len, dtype=torch.bool)
    row, col = 0, 0
    for doc_ids, doc_loss in docs:
        doc_loss = [False] + list(doc_loss[1:])  # nothing predicts a document's first token
        while doc_ids and row < n_rows:
            take = min(len(doc_ids), seq_len - col)
            ids[row, col : col + take] = torch.tensor(doc_ids[:take])
            loss[row, col : col + take] = torch.tensor(doc_loss[:take])
            valid[row, col : col + take] = True
            doc_ids, doc_loss, col = doc_ids[take:], doc_loss[take:], col + take
            if col == seq_len or not pack:
                row, col = row + 1, 0
                if not pack:
                    break
        if row >= n_rows:
            return Rows(ids, loss, valid)
    raise RadError(f"the data ran out after {row} of {n_rows} rows")  # only a finite iterator gets here
