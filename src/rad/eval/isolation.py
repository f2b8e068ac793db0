"""The OS isolation a sandboxed program runs under: which the machine has (probed once), and the command prefix
that applies it (see rad.eval.sandbox for the layers)."""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass

from rad.errors import RadError

NOBODY = (65534, 65534)  # uid and gid of `nobody`/`nogroup` on Debian and most Linux distributions
CHILD = os.path.join(os.path.dirname(os.path.realpath(__file__)), "sandbox_child.py")


@dataclass(frozen=True)
class Isolation:
    backend: str  # "bwrap" | "unshare" | "none", see the module docstring
    drop_to: tuple[int, int] | None = None  # (uid, gid) the child switches to before the program runs
    python_guard: bool = True  # False only to test the OS layers on their own

    def describe(self) -> str:
        layers = {"bwrap": ["only the system and the interpreter, read-only", "namespaces (user, net, ipc, pid)"],
                  "unshare": ["namespaces (net, ipc, pid)"], "none": []}[self.backend]
        if self.drop_to:
            layers.append(f"uid {self.drop_to[0]}")
        layers.append("rlimits")
        if self.python_guard:
            layers.append("Python guard")
        return f"{self.backend}: " + ", ".join(layers)


UNSANDBOXED = ("code evaluation runs generated programs and needs OS isolation, which this machine lacks: install "
               "bubblewrap (apt-get install bubblewrap) where unprivileged user namespaces are allowed, or pass "
               "--allow-unsandboxed to run them as this user with only resource limits, namespaces where available "
               "and a Python guard that a hostile program can switch off")


def require_isolation(allow_unsandboxed: bool = False) -> Isolation:
    """The isolation code evaluation runs under: bwrap's, else a RadError unless the user allowed less."""
    detected = detect_isolation()
    if detected.backend != "bwrap" and not allow_unsandboxed:
        raise RadError(UNSANDBOXED)
    return detected


@functools.cache
def detect_isolation() -> Isolation:
    """The strongest isolation this machine supports, probed once by actually starting a sandboxed interpreter."""
    probe = [os.path.realpath(sys.executable), "-I", "-S", "-c", "import json"]  # json is not preloaded: the stdlib is readable
    with tempfile.TemporaryDirectory() as root:
        if _works([*os_prefix("bwrap", root), *probe]):
            return Isolation("bwrap")
        backend = "unshare" if _works([*os_prefix("unshare", root), *probe]) else "none"
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


def os_prefix(backend: str, root: str) -> list[str]:
    if backend == "bwrap":
        # No --new-session: the program must stay in our process group; it has no terminal to abuse anyway.
        return ["bwrap", "--unshare-all", "--die-with-parent", "--uid", str(NOBODY[0]), "--gid", str(NOBODY[1]),
                *_system_binds(), "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
                *(arg for path in _interpreter_paths() for arg in ("--ro-bind", path, path)),
                "--bind", root, root, "--chdir", root]
    if backend == "unshare":
        user = [] if os.geteuid() == 0 else ["--user"]  # without root, new namespaces need a user namespace
        return ["unshare", *user, "--net", "--ipc", "--pid", "--fork", "--kill-child"]
    return []


def _system_binds() -> list[str]:
    """Read-only binds of the system's programs and libraries (a merged-/usr system's /bin is a link into /usr)."""
    binds = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            binds += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            binds += ["--ro-bind", top, top]
    return binds


def _interpreter_paths() -> list[str]:
    """What the child interpreter needs beyond the system: its installation (the standard library) and this file.
    Bound after the empty /tmp, so they are there even when they live under /tmp (a venv made there, as CI may)."""
    paths = {os.path.realpath(sys.base_prefix), CHILD}
    executable = os.path.realpath(sys.executable)
    if not executable.startswith(os.path.realpath(sys.base_prefix) + os.sep):
        paths.add(os.path.dirname(executable))
    return sorted(p for p in paths if not p.startswith("/usr/"))


def _works(command: list[str]) -> bool:
    import subprocess

    try:
        return subprocess.run(command, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
