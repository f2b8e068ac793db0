"""Attention -> SSM conversion: `rad` init is exactly the skip-draft, `kqvo` maps q/k/v onto C/B/x
(checked against causal linear attention built here), and `rad convert` end to end, errors included."""

import json

import pytest
import torch
import torch.nn.functional as F

from rad.app.cli import main
from rad.decode.generate import generate
from rad.model.convert import convert
from rad.model.hybrid import MixerSize
from rad.model.io import load_model
from tiny_models import FAMILIES, VOCAB


def ids_and_positions(batch=2, length=40, seed=1):
    ids = torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))
    return ids, torch.arange(length).expand(batch, -1)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_rad_init_hybrid_is_exactly_the_skip_draft(tiny_dirs, family):
    source = load_model(tiny_dirs[family][0])
    layers = [0, 2]
    hybrid, notes = convert(source, layers, "rad", chunk_size=16)
    # What a mixer cannot take is said: Qwen2's q/k/v biases, Qwen3's q/k norms, Llama's attention_bias.
    assert bool(notes) == (family in ("qwen2", "qwen3", "llama_tied_bias"))
    ids, positions = ids_and_positions()
    with torch.no_grad():
        draft = source(ids, positions, skip=layers)
        assert (hybrid(ids, positions) - draft).abs().max() <= 1e-6
        assert (hybrid(ids, positions, hybrid.new_cache(2, 40)) - draft).abs().max() <= 1e-6
        h = torch.randn(2, 9, source.config.hidden_size)
        assert not hybrid.model.layers[2].mamba(h)[0].any()  # exactly zero, not merely small
        assert (source(ids, positions) - draft).abs().max() > 1e-2  # the replaced layers did matter
    prompts = [ids[0, :11].tolist(), ids[1, :5].tolist()]
    assert generate(hybrid, prompts, 12).tokens == generate(source, prompts, 12, skip=layers).tokens


def test_kqvo_core_is_causal_linear_attention(llama_dir):
    """With A -> 0 (no decay), dt = 1, identity conv and D = 0, the scan output before the gated norm is
    y_t = sum_{s<=t} (phi(q_t) . phi(k_s)) phi(v_s) per query head, phi = silu, k/v shared as in GQA."""
    source = load_model(llama_dir).double()
    hybrid, _ = convert(source, [1], "kqvo", chunk_size=4, size=MixerSize("full"))  # kv: test_mixer_sizes
    mixer, attn = hybrid.model.layers[1].mamba, source.model.layers[1].self_attn
    with torch.no_grad():
        mixer.A_log.fill_(-60.0)  # A = -exp(-60): no decay within float64 rounding
        mixer.in_proj.weight[-mixer.n_heads :].zero_()  # dt rows: dt = softplus(dt_bias)
        mixer.dt_bias.fill_(torch.log(torch.expm1(torch.tensor(1.0))).item())  # softplus^-1(1)
        mixer.D.zero_()
    captured = {}
    mixer.norm.register_forward_pre_hook(lambda module, args: captured.update(y=args[0]))
    h = torch.randn(2, 11, source.config.hidden_size, dtype=torch.float64)
    with torch.no_grad():
        mixer(h)
        heads, rep, dim = attn.num_heads, attn.num_heads // attn.num_kv_heads, attn.head_dim
        q = F.silu(h @ attn.q_proj.weight.T).unflatten(-1, (heads, dim))
        k = F.silu(h @ attn.k_proj.weight.T).unflatten(-1, (-1, dim)).repeat_interleave(rep, dim=2)
        v = F.silu(h @ attn.v_proj.weight.T).unflatten(-1, (-1, dim)).repeat_interleave(rep, dim=2)
        scores = torch.einsum("bthd,bshd->bhts", q, k).tril()  # causal, unnormalised
        expected = torch.einsum("bhts,bshd->bthd", scores, v).flatten(-2)
    assert (captured["y"] - expected).abs().max() <= 1e-8 * expected.abs().max()
    assert attn.num_heads != attn.num_kv_heads  # the GQA repetition is exercised


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def real_diagnosis(llama_dir, tmp_path_factory) -> dict:
    """A diagnosis.json that `rad diagnose` wrote for the tiny Llama, k = 1 and 2 (its layers are set by the tests)."""
    folder = tmp_path_factory.mktemp("diagnosis")
    (folder / "prompts.txt").write_text("w1 w2 w3\n")
    code = main(["diagnose", str(llama_dir), "--k", "1,2", "--trials", "2", "--n-prompts", "1", "--max-new-tokens", "4",
                 "--prompts", f"text:{folder / 'prompts.txt'}", "--out", str(folder / "out"), "--json"])
    assert code == 0
    return json.loads((folder / "out" / "diagnosis.json").read_text())


def write_diagnosis(path, diagnosis: dict, layers: dict[str, list[int]]):
    """`diagnosis` with best_layers set to `layers` (k -> layers), written to `path`."""
    for k, best in layers.items():
        diagnosis["results"][k]["best_layers"] = best
    path.write_text(json.dumps(diagnosis))
    return path


def test_rad_convert_then_info_and_generate(capsys, llama_dir, real_diagnosis, tmp_path):
    source = llama_dir
    diagnosis = write_diagnosis(tmp_path / "diagnosis.json", real_diagnosis, {"1": [3], "2": [1, 3]})
    code, out, _ = run_cli(capsys, "convert", source, "--diagnosis", diagnosis, "--k", 2, "--out", tmp_path / "h", "--json")
    result = json.loads(out)
    # The default size, kv: one SSM head per key/value head (2 here), narrower than hidden_size, so rad's own format.
    assert code == 0 and result["model_type"] == "rad_hybrid" and result["layers"] == [1, 3]
    assert len(result["notes"]) == 1 and "transformers cannot load" in result["notes"][0]  # and why, and what would
    code, out, _ = run_cli(capsys, "info", tmp_path / "h", "--json")
    info = json.loads(out)
    assert info["layer_types"] == ["attention", "ssm", "attention", "ssm"] and info["ssm"]["n_heads"] == 2
    args = ["--prompt", "w1 w2 w3", "--max-new-tokens", 6, "--json"]
    hybrid_tokens = json.loads(run_cli(capsys, "generate", tmp_path / "h", *args)[1])["tokens"]
    draft_tokens = json.loads(run_cli(capsys, "generate", source, *args, "--skip", "1,3")[1])["tokens"]
    assert hybrid_tokens == draft_tokens
    speculative = json.loads(run_cli(capsys, "generate", tmp_path / "h", *args, "--speculative", "--skip", "0")[1])
    assert speculative["tokens"] == hybrid_tokens


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--layers", "1,4"], "layer 4 is out of range"),
        (["--layers", "1,1"], "repeats a layer"),
        (["--diagnosis", "DIAG", "--k", "3"], "no result for k=3; it has k = 1, 2"),
        (["--diagnosis", "DIAG"], "needs --k"),
        ([], "either --layers"),
        (["--diagnosis", "missing.json", "--k", "1"], "does not exist"),
        (["--diagnosis", "BROKEN", "--k", "1"], "is not a valid diagnosis: $.results.2: missing 'value'"),
        (["--diagnosis", "NOT_JSON", "--k", "1"], "is not a JSON file"),
    ],
)
def test_rad_convert_bad_input(capsys, llama_dir, real_diagnosis, tmp_path, argv, message):
    diagnosis = write_diagnosis(tmp_path / "diagnosis.json", real_diagnosis, {"1": [3], "2": [1, 3]})
    broken = json.loads(diagnosis.read_text())
    del broken["results"]["2"]["value"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    (tmp_path / "not.json").write_text("{'results': ")
    files = {"DIAG": diagnosis, "BROKEN": tmp_path / "broken.json", "NOT_JSON": tmp_path / "not.json"}
    argv = [files.get(a, a) for a in argv]
    code, out, err = run_cli(capsys, "convert", llama_dir, *argv, "--out", tmp_path / "h")
    assert code == 2 and message in err and err.count("\n") == 1 and not out
    assert not (tmp_path / "h").exists()
