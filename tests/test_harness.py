"""rad models in lm-evaluation-harness: the "rad" backend against the harness's own `hf` backend on the same
checkpoints (a tiny random Llama with the demo's tokenizer, and its converted hybrid, which `hf` loads as Bamba),
rad's shipped tasks against `rad eval --task`, and bad input through the CLI."""

import math
import shutil
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

lm_eval = pytest.importorskip("lm_eval")

from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from rad.app.cli import main  # noqa: E402
from rad.app.convert import ConvertConfig, convert_folder  # noqa: E402
from rad.eval.accuracy import EvalConfig, evaluate  # noqa: E402
from rad.eval.harness.backend import RadLM  # noqa: E402
from rad.eval.harness.run import HarnessConfig, run_harness  # noqa: E402
from rad.model.io import Placement  # noqa: E402
from rad.model.io import DEMO_MODEL_DIR, load_model  # noqa: E402
from rad.model.tokenizer import load_tokenizer  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "harness"
TASKS = ["test_choice", "test_rolling", "test_generate"]
MAX_LENGTH = 48  # short enough that the rolling task's longer documents take several windows


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{"llama": folder, "hybrid": folder}: a random Llama over the demo's tokenizer, and it with layer 1 an SSM."""
    root = tmp_path_factory.mktemp("harness")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=640, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=0, eos_token_id=1, pad_token_id=2)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.normal_(0, 0.1)
    model.save_pretrained(root / "llama")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(DEMO_MODEL_DIR / name, root / "llama" / name)
    convert_folder(str(root / "llama"), str(root / "hybrid"), [1], ConvertConfig(mixer="full"))  # Bamba, for hf
    return {"llama": root / "llama", "hybrid": root / "hybrid"}


def samples(model, manager) -> dict:
    """{task: [each document's responses, in document order]}."""
    result = lm_eval.simple_evaluate(model=model, model_args=None, tasks=TASKS, task_manager=manager,
                                     log_samples=True, bootstrap_iters=0)
    return {task: [s["resps"] for s in sorted(rows, key=lambda s: s["doc_id"])] for task, rows in result["samples"].items()}


@pytest.mark.parametrize("kind", ["llama", "hybrid"])
def test_the_rad_backend_gives_the_hf_backends_numbers(checkpoints, kind):
    manager = TaskManager(include_path=str(FIXTURES), include_defaults=False)
    hf = HFLM(pretrained=str(checkpoints[kind]), device="cpu", dtype="float32", batch_size=1,
                                         max_length=MAX_LENGTH)
    reference = samples(hf, manager)
    ours = samples(RadLM(str(checkpoints[kind]), batch_size=4, max_length=MAX_LENGTH), manager)
    assert sum(len(r) for r in reference["test_rolling"]) == 3
    for task in ("test_choice", "test_rolling"):
        for expected, got in zip(reference[task], ours[task], strict=True):
            for (want,), (have,) in zip(expected, got, strict=True):
                want, have = (want, have) if task == "test_choice" else ((want, None), (have, None))
                assert math.isclose(have[0], want[0], rel_tol=1e-4), (task, have, want)
                assert have[1] == want[1]
    assert ours["test_generate"] == reference["test_generate"]
    assert any(r[0][0].strip() for r in ours["test_generate"])  # the comparison is not between empty strings


def test_a_hybrid_scores_unlike_its_teacher(checkpoints):
    """The hybrid comparison above means something only if the hybrid's numbers are its own."""
    manager = TaskManager(include_path=str(FIXTURES), include_defaults=False)
    plain, hybrid = (samples(RadLM(str(checkpoints[k]), max_length=MAX_LENGTH), manager) for k in ("llama", "hybrid"))
    assert plain["test_rolling"] != hybrid["test_rolling"]


@pytest.mark.parametrize("task", ["math", "code"])
def test_a_shipped_task_scores_as_rad_eval_does(task):
    n = 24
    harness = run_harness("demo", HarnessConfig(lm_eval=[f"rad_{task}"], limit=n), 8, Placement())
    accuracy = harness["results"][f"rad_{task}"]["acc,none"]
    model = load_model(DEMO_MODEL_DIR)
    ours = evaluate(model, load_tokenizer(DEMO_MODEL_DIR), EvalConfig(task=task, n=n, batch_size=8))
    assert accuracy == pytest.approx(ours["accuracy"])
    assert 0 < ours["correct"] < n  # a mix of right and wrong answers, so agreement is not trivial


@pytest.mark.parametrize("argv, message", [
    (["demo", "--lm-eval", "no_such_task"], "unknown lm-eval task no_such_task"),
    (["demo", "--lm-eval", "rad_math", "--include-path", "/nowhere"], "--include-path /nowhere is not a folder"),
    (["/nowhere", "--lm-eval", "rad_math"], "does not exist"),
    (["demo", "--lm-eval", "rad_math", "--records", "r.jsonl"], "--records and --teacher belong to --task"),
])
def test_bad_harness_input_is_one_line_and_exit_2(capsys, argv, message):
    code = main(["eval", *argv])
    _, err = capsys.readouterr()
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_without_the_harness_one_line_says_how_to_install_it(capsys, monkeypatch):
    for name in ("lm_eval", "lm_eval.tasks"):  # as if never installed (an import of either fails)
        monkeypatch.setitem(sys.modules, name, None)
    code = main(["eval", "demo", "--lm-eval", "rad_math"])
    assert code == 2 and "pip install 'rad[lm-eval]'" in capsys.readouterr().err
