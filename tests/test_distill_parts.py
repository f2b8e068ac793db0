"""Distillation parts against independent references: the losses (torch's kl_div / mse / cross_entropy),
row building (packing, padding, loss masks), chat assistant masks, and the tokenizer check."""

import itertools
import json

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from rad.distill.config import StageConfig
from rad.distill.data import build_rows, chat_document, documents
from rad.distill.losses import ce_sum, hidden_sum, kl_sum, topk_kl_sum
from rad.distill.metrics import MetricsLog
from rad.distill.teacher import check_same_tokenizer
from rad.distill.trainer import cosine_with_warmup
from rad.errors import RadError
from rad.model.io import resolve_model_dir
from rad.model.tokenizer import load_tokenizer

WORDS = ["<unk>", "<eos>", "user", "assistant", "system"] + [f"w{i}" for i in range(20)]


def word_tokenizer(template: str | None = None, words=WORDS) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")
    fast.chat_template = template
    return fast


def random_case(seed=0, shape=(3, 7, 11)):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(*shape, generator=g) * 3, torch.randn(*shape, generator=g) * 3
    mask = torch.rand(shape[:2], generator=g) > 0.3
    return s, t, mask


def test_kl_sum_matches_torch_kl_div_with_temperature():
    s, t, mask = random_case()
    ref = F.kl_div(F.log_softmax(s / 2, -1), F.log_softmax(t / 2, -1), log_target=True, reduction="none").sum(-1)
    assert torch.allclose(kl_sum(s, t, mask, temperature=2.0), ref[mask].sum() * 4, rtol=1e-6)
    assert kl_sum(s, s, mask) == 0  # exactly: same model, same logits


def test_topk_kl_with_the_whole_vocabulary_is_the_full_kl():
    s, t, mask = random_case(1)
    values, indices = t.topk(t.shape[-1], dim=-1)
    assert torch.allclose(topk_kl_sum(s, values, indices, mask, 1.5), kl_sum(s, t, mask, 1.5), rtol=1e-5)
    values, indices = t.topk(3, dim=-1)  # truncated: still a divergence, ≥ 0
    assert topk_kl_sum(s, values, indices, mask) >= 0


def test_hidden_and_ce_sums_match_torch():
    s, t, mask = random_case(2)
    ref = sum(F.mse_loss(a[mask], b[mask], reduction="none").mean(-1).sum() for a, b in [(s, t), (t, s * 0)]) / 2
    assert torch.allclose(hidden_sum([s, t], [t, s * 0], mask), ref)
    targets = torch.randint(0, 11, mask.shape)
    assert torch.allclose(ce_sum(s, targets, mask), F.cross_entropy(s[mask], targets[mask], reduction="sum"))


def test_packed_rows_are_the_document_stream_cut_every_seq_len():
    docs = [(list(range(1, n + 1)), [True] * n) for n in (5, 9, 3, 7)]
    rows = build_rows(iter(docs), 2, 8, pack=True, pad_id=0)
    stream = [tok for ids, _ in docs for tok in ids]
    assert rows.ids.flatten().tolist() == stream[:16] and rows.valid.all()
    # The first token of each document (positions 0, 5, 14 of the stream) is never a loss target.
    assert [i for i, m in enumerate(rows.loss.flatten().tolist()) if not m] == [0, 5, 14]


def test_unpacked_rows_are_one_padded_document_each():
    docs = [([4, 5, 6], [False, True, True]), (list(range(1, 12)), [True] * 11)]
    rows = build_rows(iter(docs), 2, 6, pack=False, pad_id=9)
    assert rows.ids.tolist() == [[4, 5, 6, 9, 9, 9], [1, 2, 3, 4, 5, 6]]
    assert rows.valid.tolist() == [[True] * 3 + [False] * 3, [True] * 6]
    assert rows.loss.tolist() == [[False, True, True, False, False, False], [False] + [True] * 5]
    with pytest.raises(RadError, match="ran out"):
        build_rows(iter(docs), 3, 6, pack=False, pad_id=9)


def test_chat_loss_covers_exactly_the_assistant_turns():
    template = "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
    tok = word_tokenizer(template)
    messages = [{"role": "system", "content": "w1"}, {"role": "user", "content": "w2 w3"},
                {"role": "assistant", "content": "w4 w5"}, {"role": "user", "content": "w6"},
                {"role": "assistant", "content": "w7"}]
    ids, loss = chat_document(messages, tok, assistant_only=True)
    assert tok.convert_ids_to_tokens(ids) == "system w1 user w2 w3 assistant w4 w5 user w6 assistant w7".split()
    assert [t for t, m in zip(tok.convert_ids_to_tokens(ids), loss) if m] == "assistant w4 w5 assistant w7".split()
    assert all(chat_document(messages, tok, assistant_only=False)[1])
    with pytest.raises(RadError, match="no chat template"):
        chat_document(messages, word_tokenizer(None), True)


def test_task_documents_are_prompt_completion_eos(tmp_path):
    tok = word_tokenizer()
    ids, loss = next(documents("task:math", tok, seed=0, assistant_only=True))
    assert ids[-1] == tok.eos_token_id and not loss[0] and loss[-1]
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": "w1"}) + "\n" + json.dumps({"prompt": "w2"}) + "\n")
    with pytest.raises(RadError, match="bad.jsonl:2"):
        next(documents(f"jsonl:{path}", tok, 0, False))
    for spec, message in [("task:", "unknown task"), ("jsonl:/no/such.jsonl", "does not exist"), ("web:x", "not understood")]:
        with pytest.raises(RadError, match=message):
            documents(spec, tok, 0, False)


def test_a_task_named_twice_gets_twice_the_share_of_distinct_problems():
    tok = load_tokenizer(resolve_model_dir("demo"))

    def texts(spec, n):
        return [tok.decode(ids) for ids, _ in itertools.islice(documents(spec, tok, seed=0, assistant_only=True), n)]

    def is_code(text):
        return "Predict the output." in text

    once, twice = texts("task:math+code", 20), texts("task:math+code+code", 30)
    assert [is_code(t) for t in twice].count(True) == 20
    code = [t for t in twice if is_code(t)]
    assert len(set(code)) == 20  # the second share is other problems, not the first one again
    # The first occurrence's stream (and math's) is the one task:math+code gives.
    assert [t for t in twice if not is_code(t)] == [t for t in once if not is_code(t)]
    assert set(t for t in once if is_code(t)) < set(code)


def test_tokenizer_check():
    tok = word_tokenizer()
    check_same_tokenizer(tok, word_tokenizer(), 25, 25)
    with pytest.raises(RadError, match="vocabulary has 30 entries and the student's 25"):
        check_same_tokenizer(tok, tok, 25, 30)
    swapped = WORDS[:5] + ["w1", "w0"] + WORDS[7:]
    with pytest.raises(RadError, match="maps 2 tokens differently"):
        check_same_tokenizer(tok, word_tokenizer(words=swapped), 25, 25)


def test_cosine_schedule_with_warmup():
    factor = cosine_with_warmup(StageConfig(steps=10, lr=1.0, params="all", warmup=2, min_lr_ratio=0.1))
    assert [factor(s) for s in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert factor(6) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the decay
    assert factor(10) == pytest.approx(0.1)


def test_tensorboard_without_the_package_says_how_to_install(tmp_path):
    try:
        import tensorboard  # noqa: F401
        pytest.skip("tensorboard is installed")
    except ImportError:
        pass
    with pytest.raises(RadError, match=r"pip install 'rad\[tensorboard\]'"):
        MetricsLog(tmp_path / "metrics.jsonl", 0, tensorboard=True)
