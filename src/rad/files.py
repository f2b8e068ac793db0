"""Files rad writes and reads for a user: results written so that a crash never leaves a half-written one (a
temporary file beside the target, renamed over it: atomic on POSIX), a user's text files read with one-line
errors, and the lock that keeps two runs out of one output folder."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from pathlib import Path

from rad.errors import RadError

LOCK_NAME = ".rad.lock"


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def follow_umask(folder: Path) -> None:
    """Give a folder made private (mkdtemp) and the files in it (some writers make theirs private too) the modes
    the user's umask gives new folders and files, before it is renamed into place."""
    mask = current_umask()
    os.chmod(folder, 0o777 & ~mask)
    for path in folder.iterdir():
        if path.is_file():
            os.chmod(path, 0o666 & ~mask)


def temporary_folder_beside(out: Path) -> Path:
    """A new empty folder next to `out` (its parent created), to fill and then rename to `out`: a folder that
    appears whole or not at all."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as err:
        raise RadError(f"cannot create {out}: {err.strerror}") from None


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise RadError(f"cannot write {path}: {err.strerror}") from None
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp's file is private; results follow the umask as open()'s do
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise RadError(f"cannot write {path}: {err.strerror}") from None
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
    records = []
    for number, line in enumerate(read_text_lines(path, what), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            raise RadError(f"{path}:{number}: not valid JSON ({err})") from None
    if not records:
        raise RadError(f"{what} {path} holds no records")
    return records


def read_text_lines(path: str | Path, what: str) -> list[str]:
    """The lines of a user's UTF-8 text file; a missing, unreadable or binary file is a one-line RadError."""
    path = Path(path)
    if not path.is_file():
        raise RadError(f"{what} {path} does not exist")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise RadError(f"{what} {path} is not UTF-8 text (byte {err.start}: {err.reason})") from None
    except OSError as err:
        raise RadError(f"cannot read {what} {path}: {err.strerror}") from None


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str):
    """Hold FOLDER/.rad.lock for the span of a `with`, so that two runs never write one folder: a second one gets a
    RadError naming the holder. The lock goes with the process (kill -9 included); the file is removed on release."""
    folder = Path(folder)
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = _locked(path)
    except OSError as err:
        raise RadError(f"cannot use the output folder {folder}: {err.strerror}") from None
    if handle is None:
        try:
            holder = path.read_text(encoding="utf-8").strip()
        except OSError:
            holder = ""
        raise RadError(f"{folder} is in use by {holder or 'another process'}; wait for it to finish or choose another --out")
    with handle:
        handle.write(f"{what} (process {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')})")
        handle.flush()
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # while still holding it: a newcomer then locks a fresh file


def _locked(path: Path):
    """`path` opened and exclusively locked, or None if another process holds it. A lock taken on a file that its
    holder removed meanwhile is no lock: then try again on the new one."""
    while True:
        handle = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        try:
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                handle.seek(0)
                handle.truncate()
                return handle
        except FileNotFoundError:
            pass
        handle.close()
