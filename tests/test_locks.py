"""Two runs, one folder: the second is refused, naming the first; the lock dies with its process (kill -9)."""

import os
import signal
import subprocess
import sys
import time

import pytest
from distill_helpers import config, make_hybrid, write_texts

from rad.distill.distill import distill
from rad.errors import RadError
from rad.files import LOCK_NAME, folder_lock


def test_a_second_holder_is_refused_and_told_who_holds_it(tmp_path):
    with folder_lock(tmp_path / "out", "rad distill"):
        with pytest.raises(RadError, match=rf"is in use by rad distill \(process {os.getpid()}, since"):
            with folder_lock(tmp_path / "out", "rad run"):
                pass
    with folder_lock(tmp_path / "out", "rad run"):  # released: free again
        assert (tmp_path / "out" / LOCK_NAME).is_file()
    assert not (tmp_path / "out" / LOCK_NAME).exists()  # gone with its holder, not left in a model folder


def test_a_killed_holder_leaves_no_lock(tmp_path):
    script = (f"from rad.files import folder_lock\nimport time\nwith folder_lock({str(tmp_path / 'out')!r}, 'rad run'):\n"
              "    print('locked', flush=True)\n    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RadError, match=f"process {holder.pid}"):
        with folder_lock(tmp_path / "out", "rad run"):
            pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with folder_lock(tmp_path / "out", "rad run"):  # the kernel released the dead process's lock
        pass


def test_two_distillations_on_one_folder(llama_dir, tmp_path):
    """The second `rad distill` on a folder in use stops before it trains (it once interleaved metrics.jsonl)."""
    hybrid = make_hybrid(llama_dir, tmp_path / "hybrid")
    data = write_texts(tmp_path / "texts.jsonl", 20)
    start = time.monotonic()
    with folder_lock(tmp_path / "out", "rad distill"):
        with pytest.raises(RadError, match="is in use by rad distill"):
            distill(config(hybrid, llama_dir, data, tmp_path / "out", steps1=2))
    assert time.monotonic() - start < 60 and not (tmp_path / "out" / "metrics.jsonl").exists()


def test_written_results_follow_the_umask(llama_dir, tmp_path):
    """Results are as readable as any file the user makes (mkstemp and mkdtemp would make them private)."""
    from rad.app.convert import convert_folder
    from rad.files import atomic_write_json

    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "result.json", {"a": 1})
        convert_folder(llama_dir, tmp_path / "hybrid", [1])
    finally:
        os.umask(old)
    assert (tmp_path / "result.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "hybrid").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "hybrid" / "config.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "hybrid" / "model.safetensors").stat().st_mode & 0o777 == 0o644
