"""Writing result files so that a crash never leaves a half-written one: write a temporary
file beside the target, then rename it over the target (atomic on POSIX)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from rad.errors import RadError


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise RadError(f"cannot write {path}: {err.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, data) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def atomic_write_jsonl(path: str | Path, records) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def read_jsonl(path: str | Path, what: str) -> list[tuple[int, object]]:
    """(line number, parsed JSON) for every non-empty line of a user's jsonl file; `what` names the file
    in errors ("gsm8k file", "data file", ...), which give the line number of a malformed line."""
    path = Path(path)
    if not path.is_file():
        raise RadError(f"{what} {path} does not exist")
    records = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                records.append((number, json.loads(line)))
            except json.JSONDecodeError as err:
                raise RadError(f"{path}:{number}: not valid JSON ({err})") from None
    if not records:
        raise RadError(f"{what} {path} holds no records")
    return records
