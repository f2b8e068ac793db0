"""`rad diagnose` end to end on tiny Llama models built so that the answer is known: layers whose
attention output is scaled to ~0 contribute nothing, so skipping exactly them is lossless and the
fastest draft. Also the CLI's bad-input errors and a run killed midway, then resumed."""

import json
import os
import sqlite3
import subprocess
import sys
import time

from pathlib import Path

import pytest
import torch
from fixed_costs import fixed_costs
from tiny_models import word_tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

from rad.app.cli import main
from rad.app.stage_commands import diagnose_and_plot
from rad.report.diagnosis_table import format_table
from rad.search.baselines import lowest_scores
from rad.search.config import DiagnoseConfig
from rad.search.diagnose import diagnose
from rad.search.schema import schema_errors

QUIET = (1, 4)  # the layers whose attention says nothing in the redundant model


def save_model(folder, layers: int, attention_scale: dict[int, float], seed: int = 0):
    """A random tiny Llama (word tokenizer) whose layer l's o_proj is multiplied by attention_scale[l]."""
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=None, eos_token_id=None,
                         pad_token_id=None)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():  # larger than the default init, so every layer matters
            p.normal_(0, 0.2) if p.dim() > 1 else p.uniform_(0.8, 1.2)
        for layer, scale in attention_scale.items():
            model.model.layers[layer].self_attn.o_proj.weight.mul_(scale)
    model.save_pretrained(str(folder))
    word_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def redundant_dir(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("redundant"), 6, {layer: 1e-6 for layer in QUIET})


@pytest.fixture(scope="module")
def prompt_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prompts")
    (folder / "a.txt").write_text("w1 w2 w3 w4 w5\nw9 w8 w7\n")
    (folder / "b.jsonl").write_text('{"prompt": "w20 w21 w22"}\n{"text": "w40 w41 w42 w43"}\n')
    return [f"text:{folder / 'a.txt'}", f"jsonl:{folder / 'b.jsonl'}"]


def config(model, out, **overrides) -> DiagnoseConfig:
    defaults = dict(ks=[2], trials=8, n_prompts=2, max_new_tokens=8, progress=False)
    return DiagnoseConfig(model=str(model), out=str(out), **(defaults | overrides))


def test_search_returns_exactly_the_silent_layers(redundant_dir, prompt_files, tmp_path):
    diagnosis = diagnose_and_plot(config(redundant_dir, tmp_path, prompts=prompt_files, trials=8))
    result = diagnosis["results"]["2"]
    assert result["best_layers"] == list(QUIET)
    assert result["acceptance_rate"] == pytest.approx(1.0)  # the draft is the full model
    assert result["baselines"]["exhaustive"]["skip"] == list(QUIET)
    assert result["baselines"]["exhaustive"]["regret"] == 0
    for scores in ("block_influence", "loo_kl"):  # the silent layers change neither the residual nor the output
        assert lowest_scores({int(l): v for l, v in diagnosis[scores].items()}, range(6), 2) == QUIET
    assert max(diagnosis["loo_kl"][str(l)] for l in QUIET) < 1e-6
    assert result["baselines"]["loo_kl"]["skip"] == list(QUIET)
    rows = {line.split()[1]: line.split() for line in format_table(diagnosis).splitlines()[1:] if "trials" not in line}
    assert rows["search"][-1] == rows["loo_kl"][-1] == "2/2"  # the same set as the search's
    for source in result["sources"]["best"].values():  # both prompt sources agree
        assert source["skip"] == list(QUIET)
    assert result["sources"]["overlap"]["common"] == list(QUIET)
    redundancy = result["redundancy"]
    assert set(sorted(redundancy, key=redundancy.get)[-2:]) == {"1", "4"}  # the two most redundant layers

    written = json.loads((tmp_path / "diagnosis.json").read_text())
    assert schema_errors(written) == []
    assert written["results"]["2"]["best_layers"] == list(QUIET)  # what `rad convert --diagnosis` reads
    assert (tmp_path / "diagnosis.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_several_k_excluded_layers_and_measured_objective(redundant_dir, tmp_path, capsys):
    code = main(["diagnose", str(redundant_dir), "--k", "1,2", "--trials", "4", "--n-prompts", "1",
                 "--max-new-tokens", "6", "--exclude-first", "--exclude-last", "--sampler", "tpe",
                 "--objective", "measured", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "block_influence" in out and "diagnosis.json" in out
    diagnosis = json.loads((tmp_path / "diagnosis.json").read_text())
    assert diagnosis["eligible_layers"] == [1, 2, 3, 4]
    assert set(diagnosis["results"]) == {"1", "2"}
    for k, result in diagnosis["results"].items():
        assert len(result["trials"]) == 4
        assert all(len(t["skip"]) == int(k) and set(t["skip"]) <= {1, 2, 3, 4} for t in result["trials"])
        assert all(t["value"] == t["details"]["speedup_measured"] for t in result["trials"])  # the wall clock
    assert schema_errors(diagnosis) == []


@pytest.mark.parametrize("args, message", [
    (["--k", "4", "--exclude-first", "--exclude-last"], "k=4 must be between 1 and 3"),
    (["--k", "2", "--prompts", "task:poetry"], "unknown prompt source 'task:poetry'"),
    (["--k", "2", "--prompts", "text:/no/such/file.txt"], "does not exist"),
    (["--k", "2", "--out", "{tmp}/a_file/out"], "cannot create the output folder"),
    (["--k", "two"], "argument --k: must be comma-separated integers"),
    (["--k", "2,2"], "--k repeats a value"),
    (["--k", "1", "--storage", "nosuchdb://somewhere/studies"], "cannot open the study storage"),
])
def test_bad_input_is_one_line_and_exit_code_2(redundant_dir, tmp_path, capsys, args, message):
    (tmp_path / "a_file").write_text("not a folder")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    argv = ["diagnose", str(redundant_dir), "--out", str(tmp_path / "out"), *args]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err


def complete_trials(db) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as connection:
            return connection.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:  # the tables are not there yet
        return 0


def test_a_killed_run_resumes_with_its_trials(redundant_dir, prompt_files, tmp_path):
    out = tmp_path / "run"
    argv = ["diagnose", str(redundant_dir), "--k", "2", "--trials", "7", "--n-prompts", "1", "--max-new-tokens", "6",
            "--prompts", prompt_files[0], "--sampler", "tpe", "--out", str(out)]
    process = subprocess.Popen([sys.executable, "-m", "rad.app.cli", *argv], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=os.environ | {"OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while complete_trials(out / "study.db") < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    process.kill()
    process.wait()
    done = complete_trials(out / "study.db")
    assert 3 <= done < 7 and not (out / "diagnosis.json").exists()

    import optuna

    before = {t.number: (t.user_attrs["skip"], t.value)
              for t in optuna.load_study(study_name="k2", storage=f"sqlite:///{out / 'study.db'}").trials
              if t.state.name == "COMPLETE"}
    assert main(argv) == 2  # the study is there: continuing it takes --resume
    assert main([*argv, "--resume"]) == 0
    trials = json.loads((out / "diagnosis.json").read_text())["results"]["2"]["trials"]
    assert len(trials) == 7
    assert {t["number"]: (t["skip"], t["value"]) for t in trials if t["number"] in before} == before
    skips = [tuple(t["skip"]) for t in trials]
    assert len(set(skips)) == 7  # nothing was evaluated twice across the two runs


# The killed process: the cost model's fixed costs (as in this process) and a death during the n-th evaluation.
FIXED_COSTS = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import rad.eval.profiling
from fixed_costs import fixed_costs
rad.eval.profiling.measure_costs = fixed_costs
"""
DIES_AT_EVALUATION = """
import os
import rad.search.speedup as speedup
evaluations, evaluate = [0], speedup.SpeedupObjective.__call__
def dies(self, skip, measure=False):
    evaluations[0] += 1
    if evaluations[0] == {n}:
        os._exit(9)  # as kill -9 would: the trial stays RUNNING in the study
    return evaluate(self, skip, measure)
speedup.SpeedupObjective.__call__ = dies
"""


def test_a_run_killed_during_a_trial_resumes_to_the_uninterrupted_search(redundant_dir, prompt_files, tmp_path,
                                                                          monkeypatch):
    """The default sampler, killed while evaluating its 4th set: the resumed search evaluates that set (a trial
    left RUNNING once hid it for good) and ends with the uninterrupted search's trials, in order, and best set."""
    argv = ["diagnose", str(redundant_dir), "--k", "2", "--trials", "8", "--n-prompts", "1", "--max-new-tokens", "6",
            "--prompts", prompt_files[0]]
    monkeypatch.setattr("rad.eval.profiling.measure_costs", fixed_costs)
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    script = FIXED_COSTS + DIES_AT_EVALUATION.replace("{n}", "4") + \
        f"from rad.app.cli import main\nmain({[*argv, '--out', str(tmp_path / 'killed')]!r})\n"
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert killed.returncode == 9, killed.stderr[-2000:]
    assert complete_trials(tmp_path / "killed" / "study.db") == 3
    assert main([*argv, "--out", str(tmp_path / "killed"), "--resume"]) == 0
    whole, resumed = (json.loads((tmp_path / name / "diagnosis.json").read_text())["results"]["2"]
                      for name in ("whole", "killed"))
    assert [t["skip"] for t in resumed["trials"]] == [t["skip"] for t in whole["trials"]]
    assert resumed["best_layers"] == whole["best_layers"] == list(QUIET)

