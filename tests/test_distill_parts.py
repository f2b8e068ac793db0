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
from rad.distill.losses import full_teacher, head_terms, hidden_sum, teacher_topk, topk_teacher
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


def head_case(seed=0, n=13, hidden=6, vocab=11):
    g = torch.Generator().manual_seed(seed)
    h, w = torch.randn(n, hidden, generator=g), torch.randn(vocab, hidden, generator=g)
    th, tw = torch.randn(n, hidden, generator=g), torch.randn(vocab, hidden, generator=g)
    targets = torch.randint(0, vocab, (n,), generator=g)
    return h.requires_grad_(), w.requires_grad_(), th, tw, targets


def gradients(loss, *tensors):
    return torch.autograd.grad(loss, tensors, retain_graph=True)


@pytest.mark.parametrize("chunk", [1, 4, 13, 100])
def test_chunked_head_losses_equal_torch_on_the_whole_logits_values_and_gradients(chunk):
    h, w, th, tw, targets = head_case()
    s, t = h @ w.T, th @ tw.T
    ref_kl = F.kl_div(F.log_softmax(s / 2, -1), F.log_softmax(t / 2, -1), log_target=True, reduction="sum") * 4
    ref_ce = F.cross_entropy(s, targets, reduction="sum")
    kl, ce = head_terms(h, w, full_teacher(th, tw), targets, 2.0, chunk)
    assert torch.allclose(kl, ref_kl, rtol=1e-5) and torch.allclose(ce, ref_ce, rtol=1e-5)
    for got, want in zip(gradients(0.7 * kl + 0.3 * ce, h, w), gradients(0.7 * ref_kl + 0.3 * ref_ce, h, w)):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)
    kl_only, zero = head_terms(h, w, full_teacher(h.detach(), w.detach()), None, 1.0, chunk)
    assert kl_only.abs() < 1e-5 and zero == 0  # the student against itself; no targets, no cross-entropy
    frozen_kl, _ = head_terms(h, w.detach(), full_teacher(th, tw), None, 2.0, chunk)  # a frozen head: no weight gradient
    assert torch.allclose(gradients(frozen_kl, h)[0], gradients(ref_kl, h)[0], rtol=1e-4, atol=1e-6)


def test_topk_teacher_kl_is_the_full_kl_with_the_whole_vocabulary_and_a_renormalised_kl_with_less():
    h, w, th, tw, _ = head_case(1)
    t = th @ tw.T
    values, indices = t.topk(t.shape[-1], dim=-1)
    whole, _ = head_terms(h, w, topk_teacher(values, indices), None, 1.5, 5)
    full, _ = head_terms(h, w, full_teacher(th, tw), None, 1.5, 5)
    assert torch.allclose(whole, full, rtol=1e-5)
    values, indices = t.topk(3, dim=-1)
    q = F.softmax(values / 1.5, -1)
    reference = (q * (q.log() - F.log_softmax(h @ w.T / 1.5, -1).gather(-1, indices))).sum() * 1.5**2
    kl, _ = head_terms(h, w, topk_teacher(values, indices), None, 1.5, 4)
    assert torch.allclose(kl, reference, rtol=1e-5) and kl >= 0
    for got, want in zip(gradients(kl, h, w), gradients(reference, h, w)):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)
    top_values, top_ids = teacher_topk(th, tw, 3, chunk=4)
    assert torch.equal(top_ids, indices) and torch.allclose(top_values, values)


def test_hidden_sum_matches_torch():
    s, t, mask = random_case(2)
    ref = sum(F.mse_loss(a[mask], b[mask], reduction="none").mean(-1).sum() for a, b in [(s, t), (t, s * 0)]) / 2
    assert torch.allclose(hidden_sum([s, t], [t, s * 0], mask), ref)


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
