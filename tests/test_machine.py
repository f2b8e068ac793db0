"""Machine-aware defaults: the training precision from the CPU's capability (injected here), the thread count from
the load, and the calibration that names the machine."""

import threading
import warnings

import pytest
import torch

from rad.app.cli import parse
from rad.distill.distill import report_precision
from rad.machine import CpuFacts, busy_elsewhere, calibration, choose_precision, describe, free_cores, resolve_threads

AVX2 = CpuFacts("AMD EPYC", "AVX2", native_bf16=False, cores=2)
AMX = CpuFacts("Intel Xeon", "AVX512", native_bf16=True, cores=2)


def test_auto_precision_follows_native_bf16():
    assert choose_precision("auto", "cpu", AVX2).name == "no"
    assert choose_precision("auto", "cpu", AMX).name == "bf16"
    assert "no native bfloat16" in choose_precision("auto", "cpu", AVX2).reason
    assert choose_precision("no", "cpu", AMX).name == "no"  # what the user asks for stands


def test_forced_bf16_without_native_support_warns_with_the_measured_cost():
    forced = choose_precision("bf16", "cpu", AVX2)
    assert forced.name == "bf16" and "20x slower" in forced.warning
    assert choose_precision("bf16", "cpu", AMX).warning is None
    with pytest.warns(UserWarning, match="20x slower"):
        report_precision(forced, quiet=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report_precision(choose_precision("auto", "cpu", AVX2), quiet=True)  # auto never warns


@pytest.mark.parametrize("busy, cores, free", [(0.0, 2, 2), (1.2, 2, 1), (1.6, 2, 1), (7.5, 2, 1), (0.4, 8, 8), (2.6, 8, 5)])
def test_free_cores_stay_within_one_and_all(busy, cores, free):
    assert free_cores(busy, cores) == free


def test_this_process_own_work_is_not_counted_as_busy():
    """A thread of ours spinning while the machine is measured must not take a core from "auto" (the load average
    would count it: a demo's own decoding left its distillation one thread of two)."""
    quiet = busy_elsewhere(0.5)
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [None for _ in iter(stop.is_set, True)])
    spinner.start()
    try:
        spinning = busy_elsewhere(0.5)
    finally:
        stop.set()
        spinner.join()
    assert spinning - quiet < 0.5  # counted, our spinner would add about one core


def test_threads_auto_is_a_flag_value_and_a_count_within_the_cores():
    _, config = parse(["distill", "h", "--teacher", "t", "--data", "task:math", "--out", "o", "--threads", "auto"])
    assert config.settings.threads == "auto"
    assert 1 <= resolve_threads("auto") <= (torch.multiprocessing.cpu_count())
    assert resolve_threads(3) == 3 and resolve_threads(0) == 0


def test_calibration_names_the_machine():
    info = calibration()
    assert info["threads"] == torch.get_num_threads() and info["float32_gflops"] > 0 and info["bfloat16_gflops"] > 0
    assert info["model"] in describe(info) and "GFLOP/s" in describe(info)
