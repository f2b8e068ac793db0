"""lm-evaluation-harness's model interface over rad's own model code and decoding, registered as "rad".

It follows the rules of the harness's own `hf` backend wherever they decide a number, so that the two backends
agree on the same checkpoint (tests/test_harness.py checks it): text is encoded with the tokenizer's own special
tokens (a leading BOS) unless it already starts with the BOS text; a continuation is what encoding the context and
the continuation together adds to the context alone, after the context's trailing spaces moved to the
continuation; an empty context is the prefix token (BOS, else EOS); at most `max_length` + 1 tokens are kept from
the right; rolling log-likelihoods use the harness's own disjoint windows; generation stops at EOS and is cut at
the first `until` string, with special tokens left out of the text.

What differs is how: sequences of similar length are scored in right-padded batches by rad's forward (padding
never reaches a real token: attention is causal, SSM layers skip it), and generation is rad's batched decoding,
plain or hybrid checkpoints alike, which ends a row once its text holds an `until` string.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from lm_eval import models as _builtin_models  # noqa: F401  the harness's own backends first (see below)
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from rad.decode.generate import generate
from rad.decode.sampling import SamplingConfig
from rad.errors import RadError
from rad.model.io import load_model, resolve_model_dir
from rad.model.tokenizer import load_tokenizer

# The harness looks its built-in backends ("hf", ...) up lazily, and only while its registry is empty: registering
# "rad" before they load would hide them. Hence the import of lm_eval.models above, before the decorator runs.
DEFAULT_MAX_GEN_TOKS = 256  # the harness's default when a task does not say
LOGIT_CHUNK = 512  # positions whose logits are made at once: 100 MB for a 49,152-token vocabulary in float32


@register_model("rad")
class RadLM(LM):
    def __init__(self, pretrained: str, device: str = "cpu", dtype: str = "float32", batch_size=16,
                 max_length: int | None = None, compile: bool | str = False, **_harness_extras):  # fmt: skip
        """`pretrained`: a model folder, `demo` or `smollm2`; `compile`: compiled decoding for generation tasks. The
        harness also passes `max_batch_size` and the like, which rad does not use."""
        super().__init__()
        folder = resolve_model_dir(str(pretrained))
        self.model = load_model(folder, device, dtype, compile=str(compile).lower() in ("true", "1"))
        self.tokenizer = load_tokenizer(folder)
        self.batch_size = 16 if batch_size is None or str(batch_size).startswith("auto") else int(batch_size)
        self.max_length = int(max_length) if max_length else self.model.config.max_position_embeddings
        self.name = str(pretrained)

    # --- encoding, as the hf backend does it ---

    @property
    def prefix_token_id(self) -> int:
        return self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id

    def encode(self, text: str) -> list[int]:
        bos = self.tokenizer.bos_token
        if bos and text.startswith(bos):
            return self.tokenizer.encode(text, add_special_tokens=False)
        return self.tokenizer.encode(text)

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if not context:
            tokens = self.tokenizer.encode(continuation, add_special_tokens=False)
            return ([self.prefix_token_id], tokens) if tokens[:1] != [self.prefix_token_id] else (tokens[:1], tokens[1:])
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole, context_ids = self.encode(context + continuation), self.encode(context)
        return context_ids, whole[len(context_ids):]

    # --- scoring ---

    @torch.inference_mode()
    def score(self, pairs: Sequence[tuple[list[int], list[int]]], desc: str) -> list[tuple[float, bool]]:
        """(log p(continuation | context), whether greedy decoding gives the continuation) per pair."""
        inputs = [(context + continuation)[-(self.max_length + 1):][:-1] for context, continuation in pairs]
        order = sorted(range(len(pairs)), key=lambda i: -len(inputs[i]))
        results = [None] * len(pairs)
        batches = range(0, len(order), self.batch_size)
        for start in tqdm(batches, desc=desc, unit="batch", disable=len(batches) < 2):
            rows = order[start : start + self.batch_size]
            width = len(inputs[rows[0]])
            ids = torch.zeros(len(rows), width, dtype=torch.long)
            valid = torch.zeros(len(rows), width, dtype=torch.bool)
            for r, i in enumerate(rows):
                ids[r, : len(inputs[i])], valid[r, : len(inputs[i])] = torch.tensor(inputs[i]), True
            positions = torch.arange(width).expand(len(rows), -1)
            device = self.model.device
            hidden = self.model(ids.to(device), positions.to(device), valid=valid.to(device), apply_head=False)
            for r, i in enumerate(rows):
                continuation = torch.tensor(pairs[i][1], device=device)
                end = len(inputs[i])
                results[i] = self.continuation_score(hidden[r, end - len(continuation) : end], continuation)
        return results

    def continuation_score(self, hidden: torch.Tensor, continuation: torch.Tensor) -> tuple[float, bool]:
        """Summed log-probability of `continuation` from the hidden states that predict it, and whether each token
        is the most likely one; the vocabulary-wide logits are made a slice of positions at a time."""
        total, greedy = 0.0, True
        for start in range(0, len(continuation), LOGIT_CHUNK):
            part = continuation[start : start + LOGIT_CHUNK]
            log_probs = F.log_softmax(self.model.lm_head(hidden[start : start + LOGIT_CHUNK]).float(), dim=-1)
            total += log_probs.gather(1, part[:, None]).sum().item()
            greedy = greedy and bool((log_probs.argmax(-1) == part).all())
        return total, greedy

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        return self.score([self.encode_pair(*request.args) for request in requests], "loglikelihood")

    def loglikelihood_rolling(self, requests) -> list[float]:
        windows, owners = [], []
        for n, request in enumerate(requests):
            tokens = self.encode(request.args[0])
            for window in get_rolling_token_windows(tokens, self.prefix_token_id, self.max_length, context_len=1):
                windows.append(make_disjoint_window(window))
                owners.append(n)
        totals = [0.0] * len(requests)
        for owner, (log_prob, _) in zip(owners, self.score(windows, "loglikelihood_rolling")):
            totals[owner] += log_prob
        return totals

    # --- generation ---

    def generate_until(self, requests) -> list[str]:
        outputs = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for n, request in enumerate(requests):  # requests with the same settings decode in batches
            groups.setdefault(repr(sorted(request.args[1].items())), []).append(n)
        for members in groups.values():
            settings = requests[members[0]].args[1]
            texts = self.generate_texts([requests[n].args[0] for n in members], settings)
            for n, text in zip(members, texts):
                outputs[n] = text
        return outputs

    def generate_texts(self, contexts: list[str], settings: dict) -> list[str]:
        until = settings.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        max_new = int(next((settings[k] for k in ("max_gen_toks", "max_new_tokens", "max_tokens") if k in settings),
                           DEFAULT_MAX_GEN_TOKS))
        sampling = SamplingConfig(temperature=float(settings.get("temperature", 0.0)) if settings.get("do_sample") else 0.0)
        prompts = [self.encode(c)[-(self.max_length - max_new):] for c in contexts]

        def holds_a_stop(tokens: list[int]) -> bool:
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            return any(stop and stop in text for stop in until)

        texts = []
        batches = range(0, len(prompts), self.batch_size)
        for start in tqdm(batches, desc="generate_until", unit="batch", disable=len(batches) < 2):
            result = generate(self.model, prompts[start : start + self.batch_size], max_new, sampling,
                              finished=holds_a_stop if until else None)
            texts += [cut_at_stops(self.tokenizer.decode(tokens, skip_special_tokens=True), until)
                      for tokens in result.tokens]
        return texts

    # --- chat ---

    @property
    def tokenizer_name(self) -> str:
        return self.name.replace("/", "__")

    def chat_template(self, chat_template=False) -> str | None:
        return self.tokenizer.chat_template

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
        if not self.tokenizer.chat_template:
            raise RadError(f"{self.name} has no chat template: run the tasks without --chat-template")
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False, add_generation_prompt=add_generation_prompt)


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """`text` up to the first of the stop strings."""
    for stop in stops:
        if stop:
            text = text.split(stop)[0]
    return text
