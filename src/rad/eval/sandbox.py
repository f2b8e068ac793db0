"""Run an untrusted Python program in a separate, limited, isolated process.

Layers, outermost first. The OS layers are detected once per process; a missing one is announced with a
RuntimeWarning (and named by `Isolation.describe()`), never skipped silently.

1. OS isolation, the best the machine allows:
   - "bwrap" (Debian package `bubblewrap`): the program sees only the system's programs and libraries (/usr, /lib,
     /bin, read-only), the interpreter's own installation and this file (read-only), and its temporary directory
     (writable); no home directory, no /root, /work or /etc, nothing else of the host. /tmp is an empty tmpfs, and
     the program has its own user, network, IPC and PID namespaces, no capabilities, and dies with its parent.
   - "unshare" (util-linux): own network, IPC and PID namespaces only; when we are root the program also switches to
     `nobody`, if `nobody` can still load the interpreter's standard library (a pyenv under /root, say, is unreadable).
   - "none": no namespaces.
   Only "bwrap" isolates the filesystem, so code evaluation (`require_isolation`) refuses the others unless the
   user opts out explicitly (`rad eval --allow-unsandboxed`).
2. Resource limits (always): address space, CPU seconds, file size, no new processes (for a non-root uid), no core.
3. Python guard (always): an audit hook installed just before the program runs refuses file writes outside the
   temporary directory, sockets, new processes, signals, ctypes and rlimit changes. It catches honest mistakes, not
   a determined program: an audit hook cannot be removed, but the program can reach its state through `gc` or skip
   it with dir_fd calls, so nothing relies on it alone; the OS layers enforce.
Around all of it the parent keeps a wall-clock limit by killing the program's whole process group.

The child's side is rad.eval.sandbox_child (standard library only); the isolation, rad.eval.isolation.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rad.eval.isolation import CHILD, Isolation, detect_isolation, os_prefix, require_isolation  # noqa: F401
from rad.eval.sandbox_child import SETUP_FAILED


@dataclass(frozen=True)
class SandboxResult:
    status: str  # "passed" | "failed" (exception or exit) | "timeout" | "error" (killed by a signal, or sandbox failure)
    returncode: int | None
    elapsed_s: float
    stdout: str  # both truncated to their last max_output_chars characters
    stderr: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def run_program(code: str, timeout_s: float = 5.0, memory_mb: int = 1024, *, isolation: Isolation | None = None,
                max_output_chars: int = 4000, must_finish: bool = False) -> SandboxResult:
    """Run `code` as a script in the sandbox; "passed" means it ran to its end without an exception or exit.
    `must_finish`: also require a random token, which the sandbox prints once the program returns, as the last line
    of its output (an `os._exit(0)` midway exits with 0 but prints no token)."""
    isolation = isolation or detect_isolation()
    token = secrets.token_hex(16) if must_finish else ""
    root = tempfile.mkdtemp(prefix="rad-sandbox-")
    try:
        if isolation.drop_to:
            os.chown(root, *isolation.drop_to)
        spec = {"root": root, "memory_mb": memory_mb, "cpu_s": math.ceil(timeout_s) + 1,
                "drop_to": isolation.drop_to, "python_guard": isolation.python_guard}
        command = [*os_prefix(isolation.backend, root), os.path.realpath(sys.executable), "-I", "-S", "-B", CHILD,
                   json.dumps(spec)]
        env = {"PATH": os.defpath, "HOME": root, "TMPDIR": root, "LANG": "C.UTF-8"}
        # Output goes to unnamed files, not pipes: RLIMIT_FSIZE then bounds it, and nothing can fill our memory.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            start = time.monotonic()
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=root, env=env,
                                    start_new_session=True)  # its own process group, so that one kill reaches all
            timed_out = False
            try:
                proc.communicate(f"{token}\n{code}".encode(), timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:  # also on normal exit: processes the program left behind die with the group
                _kill_group(proc.pid)
                proc.wait()
            elapsed = time.monotonic() - start
            status, note = _status(proc.returncode, timed_out, timeout_s)
            stdout = _tail(out, max_output_chars + len(token) + 1)
            if token:
                finished = stdout.endswith(f"{token}\n")
                stdout = stdout.removesuffix(f"{token}\n")
                if status == "passed" and not finished:
                    status, note = "failed", "\n[sandbox] the program exited before its end (no completion token)"
            return SandboxResult(status, proc.returncode, elapsed, stdout[-max_output_chars:] if max_output_chars else "",
                                 _tail(err, max_output_chars - len(note)) + note)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_many(programs: Iterable[str], workers: int | None = None, timeout_s: float = 5.0, memory_mb: int = 1024, *,
             isolation: Isolation | None = None, max_output_chars: int = 4000,
             must_finish: bool = False) -> Iterator[SandboxResult]:
    """Run programs in parallel (threads that wait on child processes); yields results in input order."""
    isolation = isolation or detect_isolation()  # detect (and warn) once, not in every thread

    def run(code: str) -> SandboxResult:
        return run_program(code, timeout_s, memory_mb, isolation=isolation, max_output_chars=max_output_chars,
                           must_finish=must_finish)

    pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1)
    try:
        yield from pool.map(run, programs)
    finally:  # a consumer that stops early must not wait for every queued program
        pool.shutdown(cancel_futures=True)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _status(returncode: int, timed_out: bool, timeout_s: float) -> tuple[str, str]:
    if timed_out:
        return "timeout", f"\n[sandbox] killed after the {timeout_s:g} s time limit"
    if returncode == 0:
        return "passed", ""
    if returncode == SETUP_FAILED:
        return "error", ""
    if returncode < 0:  # bwrap and unshare pass a signal on as our returncode or as 128 + signal
        return "error", f"\n[sandbox] killed by {signal.Signals(-returncode).name}"
    if returncode > 128 and returncode - 128 in signal.valid_signals():
        return "error", f"\n[sandbox] killed by {signal.Signals(returncode - 128).name}"
    return "failed", ""


def _tail(file, max_chars: int) -> str:
    file.seek(0, os.SEEK_END)
    file.seek(max(0, file.tell() - 4 * max_chars))  # 4 bytes per character at most in UTF-8
    text = file.read().decode("utf-8", errors="replace")
    return text[-max_chars:] if max_chars > 0 else ""


