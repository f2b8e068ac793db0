"""The `rad info` and `rad generate` commands, and every bad-input case through the CLI."""

import json
import re
import shutil
import subprocess
import sys

import pytest
from safetensors.torch import load_file, save_file

from rad.app.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_json(capsys, tiny_dirs):
    folder, reference = tiny_dirs["qwen3"]
    code, out, _ = run_cli(capsys, "info", str(folder), "--json")
    info = json.loads(out)
    assert code == 0
    assert info["parameters"] == reference.num_parameters()
    assert (info["layers"], info["heads"], info["kv_heads"], info["head_dim"]) == (4, 4, 2, 24)
    assert info["model_type"] == "qwen3" and info["architecture"] == "Qwen3ForCausalLM"


def test_generate_json(capsys, llama_dir):
    code, out, _ = run_cli(capsys, "generate", str(llama_dir), "--prompt", "w1 w2 w3", "--max-new-tokens", "6", "--json")
    result = json.loads(out)
    assert code == 0
    assert len(result["tokens"]) == 6 and result["tokens_per_s"] > 0
    assert result["text"] == " ".join(f"w{t}" for t in result["tokens"])


def test_generate_with_skip_and_sampling(capsys, llama_dir):
    args = ["generate", str(llama_dir), "--prompt", "w1 w2", "--max-new-tokens", "8", "--json", "--temperature", "0.9", "--seed"]
    first = json.loads(run_cli(capsys, *args, "4", "--skip", "1,3")[1])
    second = json.loads(run_cli(capsys, *args, "4", "--skip", "1,3")[1])
    assert first["tokens"] == second["tokens"] and first["skip"] == [1, 3]


def corrupt(tiny_dirs, tmp_path, edit):
    """A copy of the tiny Llama folder, changed by `edit(folder)`."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_dirs["llama"][0], folder)
    edit(folder)
    return folder


def set_model_type(folder, value):
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = value
    (folder / "config.json").write_text(json.dumps(config))


def drop_weight(folder):
    state = load_file(folder / "model.safetensors")
    del state["model.layers.2.mlp.up_proj.weight"]
    save_file(state, folder / "model.safetensors")


def shrink_weight(folder):
    state = load_file(folder / "model.safetensors")
    state["model.norm.weight"] = state["model.norm.weight"][:10].clone()
    save_file(state, folder / "model.safetensors")


def pickled_only(folder):
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")


BAD_INPUTS = {
    "missing folder": (lambda f: shutil.rmtree(f), "does not exist"),
    "no config.json": (lambda f: (f / "config.json").unlink(), "no config.json"),
    "unsupported model_type": (lambda f: set_model_type(f, "gpt2"), "supported: llama, mistral, qwen2, qwen3"),
    "missing weights": (drop_weight, "missing weights: model.layers.2.mlp.up_proj.weight"),
    "mismatched weights": (shrink_weight, "model.norm.weight is \\(10,\\)"),
    "pickle only": (pickled_only, "never loads"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
@pytest.mark.parametrize("command", ["info", "generate"])
def test_bad_model_folder(capsys, tiny_dirs, tmp_path, case, command):
    edit, message = BAD_INPUTS[case]
    folder = corrupt(tiny_dirs, tmp_path, edit)
    extra = ["--prompt", "w1"] if command == "generate" else []
    code, out, err = run_cli(capsys, command, str(folder), *extra)
    assert code == 2 and out == ""
    assert err.startswith("rad: error:") and err.count("\n") == 1
    assert re.search(message, err)


@pytest.mark.parametrize("skip, message", [("4", "out of range"), ("1,1", "repeats"), ("1,x", "comma-separated")])
def test_bad_skip(capsys, llama_dir, skip, message):
    code, _, err = run_cli(capsys, "generate", str(llama_dir), "--prompt", "w1", "--skip", skip)
    assert code == 2 and message in err


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "rad.app.cli", "generate", str(tmp_path / "nowhere"), "--prompt", "hi"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "does not exist" in proc.stderr
