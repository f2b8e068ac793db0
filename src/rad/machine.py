"""What machine rad runs on, and the defaults that depend on it: the training precision, the thread count,
and a short calibration that names the machine beside every figure measured on it.

Machines of one kind differ: a Xeon with AMX runs bfloat16 matrix products natively (distillation steps ran
~1.8x float32's speed there), an AMD EPYC with AVX2 only emulates them (steps ran 15-20x slower than in float32,
docs/results.md). So `--mixed-precision auto` picks bf16 only where the hardware has it.
"""

from __future__ import annotations

import functools
import os
import platform
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from rad.errors import RadError

BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of native bfloat16 arithmetic
THREADS_HELP = "torch CPU threads: a number, 0 (torch's default) or auto (the cores other processes leave free now)"
# The cost of bf16 without native support, measured (docs/results.md, machine-aware defaults).
EMULATED_BF16_COST = ("about 20x slower than float32 (a demo distillation step took 61.4 s against 3.1 s on an AMD "
                      "EPYC with AVX2 only)")


@dataclass(frozen=True)
class CpuFacts:
    model: str  # the CPU's model name
    capability: str  # torch's vector instruction level: AVX2, AVX512, ...
    native_bf16: bool  # AMX or AVX512-BF16: bfloat16 arithmetic in hardware
    cores: int


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def cpu_facts() -> CpuFacts:
    flags = cpu_flags()
    native = any(flag in flags for flag in BF16_FLAGS) if flags else torch.cpu._is_avx512_bf16_supported()
    return CpuFacts(cpu_model(), torch.backends.cpu.get_cpu_capability(), native, os.cpu_count() or 1)


@dataclass(frozen=True)
class Precision:
    name: str  # accelerate's mixed precision: "no", "bf16" or "fp16"
    reason: str  # why, in a sentence
    warning: str | None = None  # set when the user forced a precision this machine runs slowly


def choose_precision(requested: str, device: str, facts: CpuFacts | None = None) -> Precision:
    """The training precision for `requested` ("auto", "no", "bf16", "fp16") on `device`."""
    cuda = device.startswith("cuda")
    if cuda:
        native, where = torch.cuda.is_bf16_supported(), f"GPU {torch.cuda.get_device_name(device)}"
    else:
        facts = facts or cpu_facts()
        native, where = facts.native_bf16, f"CPU {facts.model} ({facts.capability})"
    support = "runs bfloat16 natively" if native else "has no native bfloat16 (no AMX or AVX512-BF16)"
    if requested == "auto":
        return Precision("bf16" if native else "no", f"auto: the {where} {support}")
    warning = None
    if requested == "bf16" and not native and not cuda:
        warning = f"--mixed-precision bf16 on the {where}, which {support}: expect it {EMULATED_BF16_COST}"
    return Precision(requested, f"asked for ({where})", warning)


def free_cores(busy: float | None = None, cores: int | None = None) -> int:
    """The cores no other work is using now (`busy`: cores' worth of it, measured if not given), at least 1."""
    cores = cores or os.cpu_count() or 1
    busy = busy_elsewhere() if busy is None else busy
    return max(1, min(cores, round(cores - busy)))


def busy_elsewhere(seconds: float = 0.5) -> float:
    """Cores' worth of CPU time that other processes used over the next `seconds` (from /proc: the machine's busy
    time less this process's own; the load average would count this process too). Falls back to the 1-minute load
    average where /proc is missing."""
    def ticks() -> tuple[int, int]:
        machine = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        busy = sum(machine) - machine[3] - machine[4]  # all but idle and iowait
        return busy, int(own[11]) + int(own[12])  # utime + stime of every thread of this process

    try:
        (busy0, own0) = ticks()
        time.sleep(seconds)
        busy1, own1 = ticks()
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0]
    return max(0.0, (busy1 - busy0) - (own1 - own0)) / os.sysconf("SC_CLK_TCK") / seconds


def resolve_threads(value: int | str) -> int:
    """A threads option as torch takes it: "auto" -> the free cores; 0 -> torch's default (left as 0)."""
    return free_cores() if value == "auto" else int(value)


def set_threads(value: int | str) -> int:
    """Apply a threads option (0 leaves torch's default); returns the count torch now uses."""
    threads = resolve_threads(value)
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def available_memory() -> int | None:
    """Bytes this process can still allocate: the machine's available memory (MemAvailable), and under an
    address-space limit (ulimit -v) what is left of it; None where /proc is missing."""
    def field(path: str, name: str) -> int | None:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(name):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        return None

    free = field("/proc/meminfo", "MemAvailable:")
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    used = field("/proc/self/status", "VmSize:")
    if limit != resource.RLIM_INFINITY and used is not None:
        free = min(free if free is not None else limit, limit - used)
    return free


def check_memory(needed: int, what: str, device: str = "cpu") -> None:
    """A RadError, before anything is allocated, when `what` needs more memory than the machine has free."""
    if device.startswith("cuda"):
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = available_memory()
    if free is not None and needed > free:
        raise RadError(f"{what} needs {needed / 2**30:,.1f} GiB of memory; this machine has {free / 2**30:,.1f} GiB "
                       "available. Use a shorter context, fewer new tokens or a smaller batch")


def matmul_gflops(dtype: torch.dtype, size: int = 512, seconds: float = 0.2) -> float:
    """Measured GFLOP/s of square matrix products in `dtype` on the current threads: the calibration's step."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        a @ b
        count += 1
    return 2 * size**3 * count / elapsed / 1e9


def calibration(device: str = "cpu", dtype: str = "float32") -> dict:
    """The machine a figure came from: CPU (or GPU), threads, dtype, and measured matrix-product speeds."""
    facts = cpu_facts()
    info = {**asdict(facts), "threads": torch.get_num_threads(), "device": device, "dtype": dtype,
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["float32_gflops"] = matmul_gflops(torch.float32)
        info["bfloat16_gflops"] = matmul_gflops(torch.bfloat16)
    return info


def describe(info: dict) -> str:
    """One line naming the machine of a calibration."""
    where = info.get("gpu") or f"{info['model']} ({info['capability']}, {'native' if info['native_bf16'] else 'no'} bf16)"
    line = f"{where}, {info['threads']} threads, {info['dtype']}, torch {info['torch']}, {info['date']}"
    if "float32_gflops" in info:
        line += f"; matmul {info['float32_gflops']:.0f} GFLOP/s float32, {info['bfloat16_gflops']:.0f} bfloat16"
    return line
