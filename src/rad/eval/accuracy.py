"""Generation-based accuracy: greedy decoding, then exact match of the extracted answer (math, code,
gsm8k) or pass@1 of the completions run in the sandbox (HumanEval)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm import tqdm

from rad.decode.generate import generate
from rad.eval.perplexity import load_texts, score_texts
from rad.eval.tasks import TASK_NAMES, EvalItem, load_task, suite_tasks
from rad.model.llama import CausalLM
from rad.model.tokenizer import encode_prompt
from rad.options import Options, option, seed_option

@dataclass(frozen=True)
class EvalConfig(Options):
    task: str = option("math", help=f"the task: {' | '.join(TASK_NAMES)}")
    n: int = option(200, help="number of problems", low=1)
    seed: int = seed_option("which held-out problems (math, code)")
    batch_size: int = option(16, help="prompts decoded together", low=1)
    max_new_tokens: int = option(256, help="longest answer", low=1)
    skip: list[int] = option(default_factory=list, help="evaluate with these attention layers skipped, e.g. 1,3", low=0)
    allow_unsandboxed: bool = option(False, help="humaneval: run the generated code even where bubblewrap cannot "
                                                 "isolate it (as this user, with resource limits and a Python guard only)")
    window: int = option(512, help="ppl tasks: tokens per window of the sliding window", low=2)
    stride: int = option(256, help="ppl tasks: tokens the window moves by (each token is scored once)", low=1)


def complete(model: CausalLM, tokenizer, prompts: Sequence[str], config: EvalConfig, desc: str,
             chat: bool = False) -> list[str]:  # fmt: skip
    """Greedy completions of text prompts (`chat`: user messages in the chat template), in batches, with a progress bar."""
    outputs = []
    batches = range(0, len(prompts), config.batch_size)
    for start in tqdm(batches, desc=desc, unit="batch", disable=len(batches) < 2):
        ids = [encode_prompt(tokenizer, p, chat=chat) for p in prompts[start : start + config.batch_size]]
        result = generate(model, ids, config.max_new_tokens, skip=config.skip)
        outputs.extend(tokenizer.decode(tokens, skip_special_tokens=True) for tokens in result.tokens)
    return outputs


def evaluate(model: CausalLM, tokenizer, config: EvalConfig, teacher: CausalLM | None = None) -> dict:
    """{"task", "n", "accuracy", "correct", "seconds", "records"} (records hold every item's output); a suite adds
    each task's result under "tasks"; a ppl task gives "perplexity" (and with a teacher "kl", "top1_agreement")."""
    start = time.perf_counter()
    if config.task == "humaneval":
        result = evaluate_humaneval(model, tokenizer, config)
    elif config.task.startswith("ppl:"):
        texts = load_texts(config.task, config.n)
        result = {"task": config.task, **score_texts(model, tokenizer, texts, config.window, config.stride, teacher),
                  "records": []}
    else:
        parts = [exact_match(model, tokenizer, config, spec) for spec in suite_tasks(config.task)]
        correct, n = sum(p["correct"] for p in parts), sum(p["n"] for p in parts)
        result = {"task": parts[0]["task"] if len(parts) == 1 else config.task, "n": n, "accuracy": correct / n,
                  "correct": correct,
                  "records": [r for p in parts for r in p.pop("records")]}
        if len(parts) > 1:
            result["tasks"] = {p["task"]: p for p in parts}
    result["seconds"] = time.perf_counter() - start
    return result


def exact_match(model: CausalLM, tokenizer, config: EvalConfig, spec: str) -> dict:
    task = load_task(spec, config.n, config.seed)
    outputs = complete(model, tokenizer, [item.prompt for item in task.items], config, f"eval {task.name}", task.chat)
    records = [exact_match_record(item, output, task.extract_answer(output)) for item, output in zip(task.items, outputs)]
    correct = sum(r["correct"] for r in records)
    return {"task": task.name, "n": len(records), "accuracy": correct / len(records), "correct": correct,
            "records": records}


def exact_match_record(item: EvalItem, output: str, prediction: str | None) -> dict:
    return {"id": item.id, "prompt": item.prompt, "output": output, "prediction": prediction,
            "answer": item.answer, "correct": prediction == item.answer}


def evaluate_humaneval(model: CausalLM, tokenizer, config: EvalConfig) -> dict:
    from rad.eval.humaneval import check_completions, estimate_pass_at_k, load_problems, truncate_completion
    from rad.eval.isolation import require_isolation

    isolation = require_isolation(config.allow_unsandboxed)
    problems = load_problems()[: config.n]
    outputs = complete(model, tokenizer, [p.prompt for p in problems], config, "humaneval")
    completions = {p.task_id: [truncate_completion(o)] for p, o in zip(problems, outputs)}
    results = check_completions(problems, completions, progress=len(problems) > 20, isolation=isolation)
    records = [{"id": r.task_id, "completion": completions[r.task_id][0], "status": r.status, "correct": r.passed}
               for r in results]
    correct = sum(r["correct"] for r in records)
    return {"task": "humaneval", "n": len(records), "accuracy": correct / len(records), "correct": correct,
            **estimate_pass_at_k(results, ks=(1,)), "records": records}
