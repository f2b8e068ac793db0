"""Tiny random Llama-family checkpoints made with transformers, plus a small word-level tokenizer."""

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

VOCAB = 128
COMMON = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=160, num_hidden_layers=4,
    num_attention_heads=4, num_key_value_heads=2, bos_token_id=None, eos_token_id=None, pad_token_id=None,
)
LLAMA3_SCALING = {
    "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    # far below the 64-token prompts, so the tests run positions past it
    "original_max_position_embeddings": 16,
}
FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM, dict(rope_scaling=LLAMA3_SCALING, rope_theta=50000.0)),
    "llama_tied_bias": (LlamaConfig, LlamaForCausalLM, dict(tie_word_embeddings=True, attention_bias=True, mlp_bias=True)),
    "mistral": (MistralConfig, MistralForCausalLM, dict(sliding_window=24)),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, dict()),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM, dict(head_dim=24)),
}


def word_tokenizer(folder: Path):
    """A word-level tokenizer over VOCAB words ('w0'..), enough to run the CLI end to end."""
    words = {f"w{i}": i for i in range(VOCAB - 1)}
    words["<unk>"] = VOCAB - 1
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    fast.save_pretrained(str(folder))


def save_tiny_model(family: str, folder: Path, seed: int = 0):
    config_cls, model_cls, extra = FAMILIES[family]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**COMMON, **extra)).eval()
    with torch.no_grad():  # larger weights than the default init, so layers visibly matter
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.8, 1.2)
            elif p.dim() > 1:
                p.normal_(0, 0.15)
            else:  # biases
                p.normal_(0, 0.1)
    model.save_pretrained(str(folder))
    word_tokenizer(folder)
    return folder, model
