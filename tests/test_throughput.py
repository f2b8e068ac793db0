"""rad bench: the measured points, the memory accounting and the CLI (no timing assertions)."""

import json

import pytest

from rad.app.cli import main
from rad.eval.throughput import BenchConfig, bench_models
from rad.errors import RadError


def test_points_and_kv_memory(llama_dir):
    config = BenchConfig(contexts=(16, 32), batch_sizes=(1, 3), new_tokens=4, reps=1, warmup=0)
    result = bench_models([str(llama_dir), str(llama_dir)], config)
    points = result["models"][0]["points"]
    assert [(p["context"], p["batch"]) for p in points] == [(16, 1), (16, 3), (32, 1), (32, 3)]
    for p in points:
        # K and V, 4 layers, 2 KV heads of 16 dims, float32, for every row and every position
        assert p["state_bytes"] == 2 * 4 * p["batch"] * 2 * (p["context"] + 4) * 16 * 4
        assert p["decode_tokens_per_s"] > 0 and p["ttft_s"] > 0
    assert [r["memory_ratio"] for r in result["models"][1]["vs_first"]] == [1.0] * 4


def test_cli_json_and_out_file(capsys, llama_dir, tmp_path):
    out = tmp_path / "bench.json"
    code = main(["bench", str(llama_dir), "--contexts", "8", "--batch-sizes", "2", "--new-tokens", "3",
                 "--reps", "1", "--json", "--out", str(out)])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed == json.loads(out.read_text())
    assert printed["models"][0]["points"][0]["batch"] == 2


def test_bad_settings():
    with pytest.raises(RadError, match="at least 2"):
        BenchConfig(new_tokens=1)
    with pytest.raises(RadError, match="--contexts must be at least 1"):
        BenchConfig(contexts=[0])
