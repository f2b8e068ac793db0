"""The sandbox's child: the bootstrap the sandboxed interpreter runs, as `python -I -S -B sandbox_child.py SPEC`
with a completion token and the program on stdin (rad.eval.sandbox starts it).

-S keeps site-packages out, so the child has only the standard library, and everything imported at module level
here ends up inside the child: this file imports nothing but the standard library, and nothing of rad.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import traceback

SETUP_FAILED = 70  # exit status when the sandbox, not the program, failed (sysexits EX_SOFTWARE)
MAX_FILE_BYTES = 16 * 2**20  # also bounds the captured stdout/stderr, which are regular files

_PROCESS_EVENTS = frozenset({"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                             "os.kill", "os.killpg", "signal.pthread_kill", "subprocess.Popen"})
_PATH_EVENTS = frozenset({"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.link", "os.symlink", "os.chmod",
                          "os.chown", "os.truncate", "os.utime", "os.setxattr", "os.removexattr", "shutil.rmtree"})
_DENIED_PREFIXES = ("socket.", "ctypes.", "resource.")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _child_main(spec: dict) -> None:
    try:
        token, _, code = sys.stdin.buffer.read().decode("utf-8").partition("\n")
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
        os._exit(SETUP_FAILED)
    main = type(sys)("__main__")  # a fresh __main__ for the program, so it does not share this module's globals
    sys.modules["__main__"] = main
    try:
        exec(compile(code, "<program>", "exec"), main.__dict__)
        status = 0
        if token:
            print(token, flush=True)
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
              resource.RLIMIT_FSIZE: MAX_FILE_BYTES, resource.RLIMIT_NPROC: 0, resource.RLIMIT_CORE: 0}
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
