"""Run an untrusted Python program in a separate, limited, isolated process.

Layers, outermost first. The OS layers are detected once per process; a missing one is announced with a
RuntimeWarning (and named by `Isolation.describe()`), never skipped silently.

1. OS isolation, the best the machine allows:
   - "bwrap" (Debian package `bubblewrap`): the whole filesystem is mounted read-only except the program's temporary
     directory, /tmp is an empty tmpfs, and the program has its own user, network, IPC and PID namespaces, no
     capabilities, and dies with its parent.
   - "unshare" (util-linux): own network, IPC and PID namespaces only; when we are root the program also switches to
     `nobody`, if `nobody` can still load the interpreter's standard library (a pyenv under /root, say, is unreadable).
   - "none": no namespaces.
2. Resource limits (always): address space, CPU seconds, file size, no new processes (for a non-root uid), no core.
3. Python guard (always): an audit hook installed just before the program runs refuses file writes outside the
   temporary directory, sockets, new processes, signals, ctypes and rlimit changes. Unlike monkey-patches, an audit
   hook cannot be removed from Python and also sees the low-level modules (_socket, posix) behind the public ones.
Around all of it the parent keeps a wall-clock limit by killing the program's whole process group.

This file is also the child's bootstrap, run as `python -I -S -B sandbox.py SPEC` with the program on stdin. -S keeps
site-packages out, so the child has only the standard library, and everything imported at module level here ends up
inside the child: that is why `subprocess` (whose _posixsubprocess forks without an audit event) is imported lazily.
"""

from __future__ import annotations

import functools
import json
import math
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

NOBODY = (65534, 65534)  # uid and gid of `nobody`/`nogroup` on Debian and most Linux distributions
_SETUP_FAILED = 70  # child exit status when the sandbox, not the program, failed (sysexits EX_SOFTWARE)
_MAX_FILE_BYTES = 16 * 2**20  # also bounds the captured stdout/stderr, which are regular files


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


@dataclass(frozen=True)
class Isolation:
    backend: str  # "bwrap" | "unshare" | "none", see the module docstring
    drop_to: tuple[int, int] | None = None  # (uid, gid) the child switches to before the program runs
    python_guard: bool = True  # False only to test the OS layers on their own

    def describe(self) -> str:
        layers = {"bwrap": ["read-only filesystem", "namespaces (user, net, ipc, pid)"],
                  "unshare": ["namespaces (net, ipc, pid)"], "none": []}[self.backend]
        if self.drop_to:
            layers.append(f"uid {self.drop_to[0]}")
        layers.append("rlimits")
        if self.python_guard:
            layers.append("Python guard")
        return f"{self.backend}: " + ", ".join(layers)


def run_program(code: str, timeout_s: float = 5.0, memory_mb: int = 1024, *, isolation: Isolation | None = None,
                max_output_chars: int = 4000) -> SandboxResult:
    """Run `code` as a script in the sandbox; "passed" means it ran to its end without an exception or exit."""
    import subprocess  # lazily: see the module docstring

    isolation = isolation or detect_isolation()
    root = tempfile.mkdtemp(prefix="rad-sandbox-")
    try:
        if isolation.drop_to:
            os.chown(root, *isolation.drop_to)
        spec = {"root": root, "memory_mb": memory_mb, "cpu_s": math.ceil(timeout_s) + 1,
                "drop_to": isolation.drop_to, "python_guard": isolation.python_guard}
        command = [*_os_prefix(isolation.backend, root), sys.executable, "-I", "-S", "-B", __file__, json.dumps(spec)]
        env = {"PATH": os.defpath, "HOME": root, "TMPDIR": root, "LANG": "C.UTF-8"}
        # Output goes to unnamed files, not pipes: RLIMIT_FSIZE then bounds it, and nothing can fill our memory.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            start = time.monotonic()
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=root, env=env,
                                    start_new_session=True)  # its own process group, so that one kill reaches all
            timed_out = False
            try:
                proc.communicate(code.encode(), timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:  # also on normal exit: processes the program left behind die with the group
                _kill_group(proc.pid)
                proc.wait()
            elapsed = time.monotonic() - start
            status, note = _status(proc.returncode, timed_out, timeout_s)
            return SandboxResult(status, proc.returncode, elapsed, _tail(out, max_output_chars),
                                 _tail(err, max_output_chars - len(note)) + note)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_many(programs: Iterable[str], workers: int | None = None, timeout_s: float = 5.0, memory_mb: int = 1024, *,
             isolation: Isolation | None = None, max_output_chars: int = 4000) -> Iterator[SandboxResult]:
    """Run programs in parallel (threads that wait on child processes); yields results in input order."""
    isolation = isolation or detect_isolation()  # detect (and warn) once, not in every thread

    def run(code: str) -> SandboxResult:
        return run_program(code, timeout_s, memory_mb, isolation=isolation, max_output_chars=max_output_chars)

    pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1)
    try:
        yield from pool.map(run, programs)
    finally:  # a consumer that stops early must not wait for every queued program
        pool.shutdown(cancel_futures=True)


@functools.cache
def detect_isolation() -> Isolation:
    """The strongest isolation this machine supports, probed once by actually starting a sandboxed interpreter."""
    probe = [sys.executable, "-I", "-S", "-c", "import json"]  # json is not preloaded: proves the stdlib is readable
    with tempfile.TemporaryDirectory() as root:
        if _works([*_os_prefix("bwrap", root), *probe]):
            return Isolation("bwrap")
        backend = "unshare" if _works([*_os_prefix("unshare", root), *probe]) else "none"
    drop = "import os; os.setgroups([]); os.setgid({1}); os.setuid({0}); ".format(*NOBODY)
    drop_to = NOBODY if os.geteuid() == 0 and _works([*probe[:-1], drop + probe[-1]]) else None
    missing = ["`bwrap` (Debian package bubblewrap) is missing or not permitted, so the filesystem is not read-only: "
               + ("only world-writable directories are open to the program as uid nobody" if drop_to else
                  "writes outside the temporary directory are refused by the Python guard alone")]
    if backend == "none":
        missing.append("`unshare` failed too, so network access and stray processes are stopped only by the Python "
                       "guard and the process-group kill")
    warnings.warn("sandbox isolation is reduced: " + "; ".join(missing), RuntimeWarning, stacklevel=2)
    return Isolation(backend, drop_to)


def _os_prefix(backend: str, root: str) -> list[str]:
    if backend == "bwrap":
        # No --new-session: the program must stay in our process group; it has no terminal to abuse anyway.
        return ["bwrap", "--unshare-all", "--die-with-parent", "--uid", str(NOBODY[0]), "--gid", str(NOBODY[1]),
                "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
                *_reexposed_under_tmp(), "--bind", root, root, "--chdir", root]
    if backend == "unshare":
        user = [] if os.geteuid() == 0 else ["--user"]  # without root, new namespaces need a user namespace
        return ["unshare", *user, "--net", "--ipc", "--pid", "--fork", "--kill-child"]
    return []


def _reexposed_under_tmp() -> list[str]:
    """Read-only binds for what the child needs that the empty /tmp would hide: the interpreter, its
    environment and this file, when they live under /tmp (a checkout or venv made there, as CI may)."""
    needed = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, os.path.dirname(sys.executable),
                                            os.path.dirname(os.path.realpath(sys.executable)), os.path.dirname(__file__))}
    under_tmp = sorted(p for p in needed if p == "/tmp" or p.startswith("/tmp/"))
    return [arg for p in under_tmp for arg in ("--ro-bind", p, p)]


def _works(command: list[str]) -> bool:
    import subprocess

    try:
        return subprocess.run(command, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


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
    if returncode == _SETUP_FAILED:
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


# ---- the child: everything below runs inside the sandboxed interpreter ----

_PROCESS_EVENTS = frozenset({"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                             "os.kill", "os.killpg", "signal.pthread_kill", "subprocess.Popen"})
_PATH_EVENTS = frozenset({"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.link", "os.symlink", "os.chmod",
                          "os.chown", "os.truncate", "os.utime", "os.setxattr", "os.removexattr", "shutil.rmtree"})
_DENIED_PREFIXES = ("socket.", "ctypes.", "resource.")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _child_main(spec: dict) -> None:
    try:
        code = sys.stdin.buffer.read().decode("utf-8")
        _limit_resources(spec["memory_mb"], spec["cpu_s"])
        if spec["drop_to"]:
            uid, gid = spec["drop_to"]
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        _register_source(code)
        if spec["python_guard"]:
            sys.addaudithook(_make_guard(os.path.realpath(spec["root"])))
    except BaseException as err:
        print(f"[sandbox] setup failed: {err!r}", file=sys.stderr, flush=True)
        os._exit(_SETUP_FAILED)
    main = type(sys)("__main__")  # a fresh __main__ for the program, so it does not share this module's globals
    sys.modules["__main__"] = main
    try:
        exec(compile(code, "<program>", "exec"), main.__dict__)
        status = 0
    except BaseException:  # SystemExit too: as in HumanEval's own harness, leaving early skips the tests
        status = 1
        try:
            traceback.print_exc()
        except BaseException:  # a MemoryError can strike again while printing
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            status = status or 1
    os._exit(status)  # skips atexit handlers and thread joins the program may have registered


def _limit_resources(memory_mb: int, cpu_s: int) -> None:
    limits = {resource.RLIMIT_AS: memory_mb * 2**20, resource.RLIMIT_CPU: cpu_s,
              resource.RLIMIT_FSIZE: _MAX_FILE_BYTES, resource.RLIMIT_NPROC: 0, resource.RLIMIT_CORE: 0}
    for kind, value in limits.items():
        resource.setrlimit(kind, (value, value))


def _register_source(code: str) -> None:
    """Let tracebacks show the program's lines, which helps when reading why a completion failed."""
    import linecache

    linecache.cache["<program>"] = (len(code), None, code.splitlines(keepends=True), "<program>")


def _make_guard(root: str):
    def inside(path) -> bool:
        if isinstance(path, int):  # an open descriptor: its path was checked when it was opened
            return True
        real = os.path.realpath(os.fsdecode(path))
        return real == root or real.startswith(root + os.sep)

    # dir_fd-relative calls and os.mkfifo carry no checkable path in their audit events; the OS layers cover those.
    def guard(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & _WRITE_FLAGS)
            denied = writes and not inside(path)
        elif event in _PATH_EVENTS:
            denied = not all(inside(a) for a in args if isinstance(a, (str, bytes, os.PathLike)))
        elif event == "import":
            denied = args[0] == "_posixsubprocess"
        else:
            denied = event in _PROCESS_EVENTS or event.startswith(_DENIED_PREFIXES)
        if denied:
            raise PermissionError(f"sandbox: {event} {args[0] if args else ''!r} is not allowed")

    return guard


if __name__ == "__main__":
    _child_main(json.loads(sys.argv[1]))
