"""On-policy distillation: the rows hold the student's own continuations of the data's prompts (checked
against transformers' greedy decoding of a model whose sampling is made greedy), steps are chosen by
the fraction, a killed on-policy run resumes bit-exactly, and data without prompts is refused."""

import json

import pytest
import torch
from distill_helpers import config, killed_at_step, make_hybrid, write_texts
from test_distill import metrics_without_timing, weights
from test_distill_parts import word_tokenizer
from transformers import LlamaForCausalLM

from rad.app.cli import main
from rad.distill.data import prompt_source
from rad.distill.distill import distill
from rad.distill.metrics import read_metrics
from rad.distill.on_policy import OnPolicy
from rad.errors import RadError
from rad.model.io import load_model

TEMPLATE = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
            "{% if add_generation_prompt %}assistant {% endif %}")


def write_chats(path, chats):
    path.write_text("".join(json.dumps({"messages": messages}) + "\n" for messages in chats))
    return path


def chat(user: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def test_chat_prompts_are_the_conversation_before_the_last_answer(tmp_path):
    tok = word_tokenizer(TEMPLATE)
    two_turns = chat("w1", "w2") + chat("w3 w4", "w5")
    path = write_chats(tmp_path / "chats.jsonl", [two_turns])
    prompt = next(prompt_source(f"jsonl:{path}", tok)(0))
    assert tok.convert_ids_to_tokens(prompt) == "user w1 assistant w2 user w3 w4 assistant".split()
    texts = write_texts(tmp_path / "texts.jsonl", 3)
    with pytest.raises(RadError, match="no chat record with an assistant turn"):
        prompt_source(f"jsonl:{texts}", tok)
    with pytest.raises(RadError, match="no chat template"):
        prompt_source(f"jsonl:{path}", word_tokenizer(None))


def test_on_policy_rows_are_the_students_continuations_of_the_prompts(llama_dir, tmp_path):
    """The final norm scaled 1000x makes sampling at temperature 1 pick the argmax, so transformers'
    greedy decoding of the unscaled checkpoint is an independent reference for every completion."""
    tok = word_tokenizer(TEMPLATE)
    chats = [chat("w3 w4 w5", "w6"), chat("w7", "w8 w9"), chat("w10 w11", "w12")]
    spec = f"jsonl:{write_chats(tmp_path / 'chats.jsonl', chats)}"
    student = load_model(llama_dir)
    with torch.no_grad():
        student.model.norm.weight.mul_(1000)
    on_policy = OnPolicy(spec, tok, seed=0, seq_len=24, pack=False, pad_id=0, assistant_only=True, max_new_tokens=5)
    rows = on_policy.rows(student, step=0, n_rows=4, process=0)
    reference = LlamaForCausalLM.from_pretrained(llama_dir).eval()
    for r in range(4):
        ids, loss = rows.ids[r][rows.valid[r]].tolist(), rows.loss[r][rows.valid[r]].tolist()
        prompt_len = loss.index(True)
        prompt = ids[:prompt_len]
        assert tok.decode(prompt).startswith("user") and tok.decode(prompt).endswith("assistant")
        assert all(loss[prompt_len:]) and len(ids) - prompt_len == 5  # the tiny model has no stop token
        expected = reference.generate(torch.tensor([prompt]), max_new_tokens=5, do_sample=False, pad_token_id=0)
        assert ids == expected[0].tolist()
    again = on_policy.rows(student, step=0, n_rows=4, process=0)
    other_step = on_policy.rows(student, step=1, n_rows=4, process=0)
    assert torch.equal(again.ids, rows.ids) and not torch.equal(other_step.ids, rows.ids)


@pytest.fixture(scope="module")
def hybrid(llama_dir, tmp_path_factory):
    return make_hybrid(llama_dir, tmp_path_factory.mktemp("on_policy") / "hybrid")


def on_policy_config(hybrid, teacher, out, data="task:math", **overrides):
    settings = dict(steps1=3, steps2=3, save_every=2, on_policy_max_new_tokens=6, stage1_on_policy=0.5,
                    stage2_on_policy=0.5)
    cfg = config(hybrid, teacher, None, out, **(settings | overrides))
    cfg.data = data
    return cfg


def test_killed_on_policy_run_resumes_to_the_same_weights_and_metrics(llama_dir, hybrid, tmp_path):
    distill(on_policy_config(hybrid, llama_dir, tmp_path / "whole"))
    chosen = [r["on_policy"] for r in read_metrics(tmp_path / "whole" / "metrics.jsonl")]
    assert True in chosen and False in chosen, chosen  # the seed draws both kinds of step

    with killed_at_step(6):
        distill(on_policy_config(hybrid, llama_dir, tmp_path / "killed"))
    distill(on_policy_config(hybrid, llama_dir, tmp_path / "killed", resume=True))
    assert all(torch.equal(weights(tmp_path / "killed")[n], w) for n, w in weights(tmp_path / "whole").items())
    assert metrics_without_timing(tmp_path / "killed") == metrics_without_timing(tmp_path / "whole")


def test_on_policy_needs_prompts_and_a_fraction_between_0_and_1(llama_dir, hybrid, tmp_path):
    texts = write_texts(tmp_path / "texts.jsonl", 5)
    with pytest.raises(RadError, match="needs prompts"):
        distill(on_policy_config(hybrid, llama_dir, tmp_path / "a", data=f"jsonl:{texts}"))
    with pytest.raises(RadError, match="--stage2-on-policy must be at most 1"):
        on_policy_config(hybrid, llama_dir, tmp_path / "b", stage2_on_policy=1.5)


def test_cli_options_reach_the_stages(llama_dir, hybrid, tmp_path, capsys):
    out = tmp_path / "out"
    main(["distill", str(hybrid), "--teacher", str(llama_dir), "--data", "task:math", "--stage1-steps", "1",
          "--stage2-steps", "1", "--stage2-on-policy", "1", "--on-policy-max-new-tokens", "4", "--seq-len", "32",
          "--batch-size", "2", "--out", str(out), "--json"])
    config = json.loads(capsys.readouterr().out)["config"]
    assert config["stage1_on_policy"] == 0.0 and config["stage2_on_policy"] == 1.0
    assert config["on_policy_max_new_tokens"] == 4
    assert [r["on_policy"] for r in read_metrics(out / "metrics.jsonl")] == [False, True]
