"""Teacher-written data (`--data teacher:SOURCE`): the completions are the teacher's (checked against transformers'
greedy decoding), the same for a seed and other for another, a writer killed mid-batch (a torn last line) continues
to the uninterrupted stream, a file written with other settings is refused, and parts take turns."""

import itertools
import json

import pytest
import torch
from test_distill_on_policy import TEMPLATE, chat, write_chats
from test_distill_parts import word_tokenizer
from transformers import LlamaForCausalLM

from rad.distill.data import check_data_spec, documents
from rad.distill.teacher_data import TeacherWriter
from rad.errors import RadError
from rad.model.io import load_model

SOURCE_CHATS = [chat("w3 w4 w5", "w6"), chat("w7", "w8 w9"), chat("w10 w11", "w12"), chat("w13", "w14")]


def settings(**changes) -> dict:
    return {"teacher": "tiny", "seed": 0, "temperature": 1.0, "max_new_tokens": 5, "batch": 3} | changes


@pytest.fixture()
def source(tmp_path):
    return f"jsonl:{write_chats(tmp_path / 'chats.jsonl', SOURCE_CHATS)}"


def records(model, folder, source, n, **changes) -> list[dict]:
    writer = TeacherWriter(model, word_tokenizer(TEMPLATE), settings(**changes), str(folder), progress=False)
    return list(itertools.islice(writer.records(source), n))


def test_greedy_records_are_the_teachers_completions(llama_dir, tmp_path, source):
    tok = word_tokenizer(TEMPLATE)
    written = records(load_model(llama_dir), tmp_path / "cache", source, 5, temperature=0.0)
    reference = LlamaForCausalLM.from_pretrained(llama_dir).eval()
    for i, record in enumerate(written):
        prompt_messages = SOURCE_CHATS[i % len(SOURCE_CHATS)][:1]  # the pool cycles through the records' prompts
        assert record["messages"][:1] == prompt_messages and record["messages"][1]["role"] == "assistant"
        prompt = tok(tok.apply_chat_template(prompt_messages, tokenize=False, add_generation_prompt=True),
                     add_special_tokens=False)["input_ids"]
        expected = reference.generate(torch.tensor([prompt]), max_new_tokens=5, do_sample=False, pad_token_id=0)
        assert record["messages"][1]["content"] == tok.decode(expected[0, len(prompt):], skip_special_tokens=True)


def test_the_stream_is_a_function_of_the_settings_and_a_second_run_reads_the_file(llama_dir, tmp_path, source):
    model = load_model(llama_dir)
    first = records(model, tmp_path / "a", source, 7)
    assert records(model, tmp_path / "b", source, 7) == first
    assert records(model, tmp_path / "c", source, 7, seed=1) != first
    lines = (tmp_path / "a").glob("*.jsonl").__next__().read_text().splitlines()
    assert json.loads(lines[0]) == settings() | {"source": source} and len(lines) == 1 + 7  # as many as were read
    with torch.no_grad():
        model.lm_head.weight.zero_()  # a second run must read, not write: this model would write other text
    assert records(model, tmp_path / "a", source, 9) == first + records(load_model(llama_dir), tmp_path / "d", source, 9)[7:]


def test_a_writer_killed_inside_a_batch_continues_to_the_uninterrupted_stream(llama_dir, tmp_path, source):
    model = load_model(llama_dir)
    whole = records(model, tmp_path / "whole", source, 8)
    records(model, tmp_path / "killed", source, 3)
    path = next((tmp_path / "killed").glob("*.jsonl"))
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:3]) + lines[3][:10])  # two records of the first batch, then a torn line
    assert records(model, tmp_path / "killed", source, 8) == whole
    assert len(path.read_text().splitlines()) == 1 + 8 and all(json.loads(x) for x in path.read_text().splitlines())


def test_a_file_written_with_other_settings_is_refused(llama_dir, tmp_path, source):
    model = load_model(llama_dir)
    records(model, tmp_path, source, 2)
    with pytest.raises(RadError, match="other settings.*temperature"):
        records(model, tmp_path, source, 2, temperature=0.5)


def test_parts_take_turns_and_unknown_sources_are_refused(llama_dir, tmp_path, source):
    tok = word_tokenizer(TEMPLATE)
    texts = tmp_path / "texts.jsonl"
    texts.write_text(json.dumps({"text": "w1 w2"}) + "\n")
    writer = TeacherWriter(load_model(llama_dir), tok, settings(), str(tmp_path / "cache"), progress=False)
    docs = list(itertools.islice(documents(f"{source.replace('jsonl:', 'teacher:jsonl:')}+jsonl:{texts}", tok, 0,
                                           True, writer), 4))
    assert [tok.decode(ids).startswith("user") for ids, _ in docs] == [True, False, True, False]
    assert all(all(loss) for _, loss in docs[1::2]) and all(0 < sum(loss) < len(loss) for _, loss in docs[::2])
    for spec, message in [("teacher:web:x", "prompts of"), ("teacher:task:nope", "unknown task"),
                          ("teacher:task:smol:nope", "unknown chat task 'nope'"),
                          ("task:math+web:x", "not understood")]:
        with pytest.raises(RadError, match=message):
            check_data_spec(spec)
    with pytest.raises(RadError, match="needs the teacher"):
        next(documents(source.replace("jsonl:", "teacher:jsonl:"), tok, 0, False))
