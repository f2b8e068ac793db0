"""Evaluation tasks: GSM8K files from disk, held-out generated problems, and bad task specs."""

import json

import pytest

from rad.app.cli import main
from rad.errors import RadError
from rad.eval.humaneval import truncate_completion
from rad.eval.tasks import load_task

FIXTURE = "tests/fixtures/gsm8k_small.jsonl"


def test_gsm8k_file_is_read_with_answers_normalised():
    task = load_task(f"gsm8k:{FIXTURE}", n=10)
    assert [item.answer for item in task.items] == ["72", "2400", "-2"]
    assert task.items[0].prompt.startswith("Question: Natalia sold clips")
    assert task.extract_answer("48/2 = 24\n#### 1,024\n") == "1024"
    assert len(load_task(f"gsm8k:{FIXTURE}", n=2).items) == 2


def test_generated_tasks_use_the_test_split():
    from rad.data import math
    from rad.data.problem import split_of

    task = load_task("math", n=30, seed=5)
    assert len(task.items) == 30
    assert all(split_of(item.prompt) == "test" for item in task.items)
    assert [i.answer for i in task.items] == [p.answer for p in math.generate(30, seed=5, split="test")]


@pytest.mark.parametrize("content, message", [
    ('{"question": "q", "answer": "#### 3"}\nnot json\n', ":2: not valid JSON"),
    ('{"question": "q"}\n', ":1: not a GSM8K record"),
    ('{"question": "q", "answer": "no mark"}\n', ":1: the answer has no"),
    ("\n", "holds no records"),
])
def test_malformed_gsm8k_names_the_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(RadError, match=message):
        load_task(f"gsm8k:{path}", n=5)


@pytest.mark.parametrize("task, message", [
    ("chess", "unknown task 'chess'; choose one of: math, code, humaneval"),
    ("gsm8k:/nowhere/x.jsonl", "does not exist"),
])
def test_cli_rejects_bad_tasks(capsys, llama_dir, task, message):
    assert main(["eval", str(llama_dir), "--task", task]) == 2
    assert message in capsys.readouterr().err


def test_cli_eval_json_and_records(capsys, llama_dir, tmp_path):
    records = tmp_path / "records.jsonl"
    code = main(["eval", str(llama_dir), "--task", f"gsm8k:{FIXTURE}", "--n", "3", "--max-new-tokens", "4",
                 "--json", "--records", str(records)])
    result = json.loads(capsys.readouterr().out)
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    assert code == 0 and result["n"] == 3 and result["task"] == "gsm8k"
    assert [r["answer"] for r in lines] == ["72", "2400", "-2"]
    assert result["correct"] == sum(r["prediction"] == r["answer"] for r in lines)


def test_humaneval_completion_stops_at_the_next_top_level_block():
    body = "    return a + b\n"
    assert truncate_completion(body + "\ndef other():\n    pass\n") == body
    assert truncate_completion(body + "\nprint(add(1, 2))") == body
    assert truncate_completion(body) == body
