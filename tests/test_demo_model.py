"""The demo model shipped in the package: small, Llama-shaped with GQA, loadable by transformers, and good at math."""

import json
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

import rad  # noqa: E402
from rad.data import math  # noqa: E402

DEMO = Path(rad.__file__).parent / "assets" / "demo"
FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]


@pytest.fixture(scope="module")
def loaded():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(DEMO), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(DEMO))


def test_checkpoint_files_exist_and_fit_the_size_limit():
    for name in FILES:
        assert (DEMO / name).is_file(), f"missing {name}: retrain with scripts/train_demo_model.py"
    assert sum(f.stat().st_size for f in DEMO.iterdir()) <= 16 * 2**20


def test_config_is_a_deep_llama_with_grouped_query_attention():
    config = json.loads((DEMO / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["num_hidden_layers"] >= 8
    assert config["num_key_value_heads"] < config["num_attention_heads"]


def test_tokenizer_has_special_tokens_and_single_digit_tokens(loaded):
    _, tokenizer = loaded
    assert None not in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    ids = tokenizer("12 + 345 = 357", add_special_tokens=False).input_ids
    assert [t for t in (tokenizer.decode([i]) for i in ids) if t.strip().isdigit()] == list("12345357")


def test_greedy_accuracy_on_held_out_math(loaded):
    import torch

    model, tokenizer = loaded
    problems = math.generate(20, seed=0, split="test")
    inputs = tokenizer([p.prompt for p in problems], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=96, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id)
    texts = tokenizer.batch_decode(out[:, inputs.input_ids.shape[1]:], skip_special_tokens=True)
    correct = sum(math.extract_answer(t) == p.answer for t, p in zip(texts, problems))
    assert correct >= 10, f"{correct}/20 correct"
