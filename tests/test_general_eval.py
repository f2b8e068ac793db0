"""Evaluation for a general model: perplexity with a sliding window and KL/top-1 agreement with a teacher (checked
against transformers' own loss and distributions), the chat task suite's generators and checkers, the text set."""

import json
import math
import os
import re
import shutil

import pytest
import torch
import torch.nn.functional as F

from rad.app.cli import main
from rad.data import chat_tasks, text_set
from rad.errors import RadError
from rad.eval.perplexity import score_texts, windows
from rad.model.io import load_model
from rad.model.tokenizer import load_tokenizer
from rad.search.prompts import is_chat, load_prompts

TEXTS = [("a", " ".join(f"w{(i * 7) % 120}" for i in range(70))), ("b", " ".join(f"w{(i * 3) % 50}" for i in range(25)))]


@pytest.mark.parametrize("length, window, stride", [(70, 16, 8), (70, 16, 16), (25, 100, 50), (2, 4, 1), (33, 8, 3)])
def test_windows_score_every_position_once_with_enough_context(length, window, stride):
    scored = []
    for start, end, first in windows(length, window, stride):
        assert end - start <= window and start < first <= end
        assert first - start >= min(max(window - stride, 1), first)  # the context a scored token sees at least
        scored += range(first, end)
    assert scored == list(range(1, length))


def reference_nll(model, ids: list[int], window: int, stride: int, teacher=None):
    """Token by token, with transformers: each scored token's negative log-likelihood given the window that scores it."""
    nll, kl, agree = [], [], []
    for start, end, first in windows(len(ids), window, stride):
        chunk = torch.tensor([ids[start:end]])
        with torch.no_grad():
            logits = model(chunk).logits[0].float()
            other = teacher(chunk).logits[0].float() if teacher is not None else None
        for t in range(first, end):
            nll.append(-F.log_softmax(logits[t - start - 1], -1)[ids[t]].item())
            if other is not None:
                p, q = F.log_softmax(other[t - start - 1], -1), F.log_softmax(logits[t - start - 1], -1)
                kl.append((p.exp() * (p - q)).sum().item())
                agree.append(int(other[t - start - 1].argmax() == logits[t - start - 1].argmax()))
    return nll, kl, agree


def test_perplexity_and_teacher_agreement_match_transformers(tiny_dirs):
    folder, reference = tiny_dirs["llama"]
    other_folder, other = tiny_dirs["qwen2"]  # another model on the same tokenizer, as the teacher
    model, teacher, tokenizer = load_model(folder), load_model(other_folder), load_tokenizer(folder)
    result = score_texts(model, tokenizer, TEXTS, window=16, stride=8, teacher=teacher)
    nll, kl, agree = [], [], []
    for _, text in TEXTS:
        parts = reference_nll(reference, tokenizer(text)["input_ids"], 16, 8, teacher=other)
        nll, kl, agree = nll + parts[0], kl + parts[1], agree + parts[2]
    assert result["tokens"] == len(nll) == 69 + 24
    assert result["perplexity"] == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-5)
    assert result["kl"] == pytest.approx(sum(kl) / len(kl), rel=1e-4) and result["kl"] > 0
    assert result["top1_agreement"] == sum(agree) / len(agree)
    alone = score_texts(model, tokenizer, TEXTS, window=16, stride=8, teacher=model)
    assert alone["kl"] == pytest.approx(0.0, abs=1e-6) and alone["top1_agreement"] == 1.0
    with torch.no_grad():  # one window over a whole document is transformers' own loss
        ids = torch.tensor([tokenizer(TEXTS[1][1])["input_ids"]])
        loss = reference(ids, labels=ids).loss.item()
    assert score_texts(model, tokenizer, TEXTS[1:], window=64, stride=32)["nll"] == pytest.approx(loss, rel=1e-5)


def test_rad_eval_ppl_from_a_file_with_a_teacher(tiny_dirs, tmp_path, capsys):
    (tmp_path / "held-out.txt").write_text(TEXTS[0][1] + "\n\n" + TEXTS[1][1] + "\n")
    llama, mistral = (str(tiny_dirs[name][0]) for name in ("llama", "mistral"))
    argv = ["eval", llama, "--task", f"ppl:{tmp_path / 'held-out.txt'}", "--window", "16", "--stride", "8"]
    assert main([*argv, "--teacher", mistral, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 2 and result["tokens"] == 93 and result["perplexity"] > 1 and 0 <= result["top1_agreement"] <= 1
    assert main(argv) == 0 and re.search(r"perplexity [\d.]+ over 93 tokens", capsys.readouterr().out)


@pytest.mark.parametrize("name", list(chat_tasks.CANDIDATES))
def test_chat_task_answers_are_right_and_the_splits_apart(name):
    test = chat_tasks.generate(name, 200, seed=0, split="test")
    train = chat_tasks.generate(name, 200, seed=0, split="train")
    assert len({p.prompt for p in test}) == 200 and not {p.prompt for p in test} & {p.prompt for p in train}
    assert chat_tasks.generate(name, 200, seed=0) == test  # seeded
    task = chat_tasks.CANDIDATES[name]
    for problem in test[:50]:
        numbers = [int(n) for n in re.findall(r"\d+", problem.prompt)]
        quoted = re.findall(r"'(\w+)'", problem.prompt) or re.findall(r": (\w+)$", problem.prompt)
        expected = {"add": lambda: sum(numbers), "add_small": lambda: sum(numbers), "subtract": lambda: numbers[0] - numbers[1],
                    "larger": lambda: max(numbers), "larger_small": lambda: max(numbers),
                    "successor": lambda: numbers[0] + 1, "successor_small": lambda: numbers[0] + 1,
                    "first_in_list": lambda: numbers[0], "last_in_list": lambda: numbers[-1],
                    "count_list": lambda: len(numbers), "count": lambda: problem.prompt.split(": ")[1].count(quoted[0]),
                    "copy": lambda: ", ".join(map(str, numbers)), "reverse": lambda: ", ".join(map(str, numbers[::-1])),
                    "sort": lambda: ", ".join(map(str, sorted(numbers))), "uppercase": lambda: quoted[0].upper(),
                    "first_letter": lambda: quoted[0][0], "repeat": lambda: quoted[0],
                    "units": lambda: numbers[0] * dict(hours=60, minutes=60, days=24, weeks=7, meters=100,
                                                       kilograms=1000)[problem.prompt.split()[-6].rstrip("?")]}[name]()
        assert problem.answer == str(expected), problem.prompt
        assert task.extract(problem.answer) == problem.answer  # a reply that is the answer is graded right


def test_answer_extraction_reads_what_small_models_write():
    assert chat_tasks.answer_number("99 + 58 = 157") == "157"
    assert chat_tasks.answer_number("To solve it:\n\nThe larger number is 29.") == "29"
    assert chat_tasks.answer_number("I cannot say.") is None
    assert chat_tasks.number_list("The list is 4, 9, 2.") == "4, 9, 2"


def test_the_suite_reports_each_task(tiny_dirs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(chat_tasks, "SUITE", ("copy", "first_in_list"))
    folder = tmp_path / "chat-model"  # the tiny model, its tokenizer given a chat template
    shutil.copytree(tiny_dirs["llama"][0], folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    assert main(["eval", str(folder), "--task", "smol", "--n", "3", "--max-new-tokens", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["tasks"]) == {"smol:copy", "smol:first_in_list"} and result["n"] == 6
    assert result["correct"] == sum(r["correct"] for r in result["tasks"].values())


@pytest.fixture(scope="module")
def text_pages():
    """(evaluation pages, distillation pages) of the text set."""
    try:
        return text_set.documents("eval"), text_set.documents("distill")
    except RadError as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI installs Debian's {text_set.PACKAGE} (.ci/run): {err}")
        pytest.skip(str(err))


def test_the_text_set_splits_by_page_and_keeps_prose(text_pages):
    evaluation, distillation = text_pages
    assert evaluation and distillation and not {p for p, _ in evaluation} & {p for p, _ in distillation}
    assert 0.05 < len(evaluation) / (len(evaluation) + len(distillation)) < 0.2
    text = " ".join(t for _, t in evaluation)
    paragraphs = [p for _, t in evaluation for p in t.split("\n\n")]
    assert not any(p.startswith(".. ") for p in paragraphs)  # no directive is left
    assert not re.search(r":\w+:`", text) and " the " in text  # roles are their text; prose remains


def test_diagnosis_prompts_from_the_chat_suite_take_each_task_in_turn_from_the_training_split():
    messages = load_prompts("task:smol", 2 * len(chat_tasks.SUITE), seed=3)
    assert is_chat("task:smol") and is_chat("task:smol:copy") and not is_chat("task:math")
    assert all(chat_tasks.split_of(m) == "train" for m in messages)  # the held-out problems stay untouched
    firsts = {name: [p.prompt for p in chat_tasks.generate(name, 2, 3, split="train")] for name in chat_tasks.SUITE}
    assert messages == [firsts[name][i] for i in range(2) for name in chat_tasks.SUITE]
    with pytest.raises(RadError, match="unknown chat task"):
        load_prompts("task:smol:nope", 1)


def test_diagnosis_prompts_from_the_text_set_open_distillation_pages(text_pages):
    evaluation, distillation = text_pages
    openings = load_prompts(f"text:{text_set.NAME}", 5, seed=1)
    assert len(set(openings)) == 5 and all(0 < len(o) <= 300 for o in openings)
    assert all(any(t.startswith(o) for _, t in distillation) for o in openings)
    assert not any(t.startswith(o) for _, t in evaluation for o in openings)
