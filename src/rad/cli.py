"""The `rad` command: one sub-command per stage. This file is the parser; rad.commands runs each one.

User mistakes (RadError) become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from rad.commands import (
    cmd_bench,
    cmd_convert,
    cmd_demo,
    cmd_diagnose,
    cmd_distill,
    cmd_eval,
    cmd_generate,
    cmd_info,
    cmd_run,
)
from rad.errors import RadError


def add_model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model folder (HF layout) or 'demo'")


def add_runtime_args(parser: argparse.ArgumentParser, json_help: str) -> None:
    """--device, --dtype and --json, shared by the commands that load a model."""
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--json", action="store_true", help=json_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rad", description="Redundancy-Aware Distillation: Transformer -> hybrid Transformer-SSM")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="describe a checkpoint folder")
    add_model_arg(info)
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(func=cmd_info)

    gen = sub.add_parser("generate", help="generate text from a prompt")
    add_model_arg(gen)
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--skip", default="", help="attention layers to skip, e.g. 1,3,5 (with --speculative: in the draft only)")
    gen.add_argument("--speculative", action="store_true",
                     help="self-speculative decoding: the model with --skip drafts, the full model verifies (same output)")
    draft_len = gen.add_mutually_exclusive_group()
    draft_len.add_argument("--draft-len", type=int, help="tokens drafted per step (default 4)")
    draft_len.add_argument("--adaptive", action="store_true", help="draft until the draft's confidence drops (Draft & Verify)")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--chat", action="store_true", help="wrap the prompt with the tokenizer's chat template")
    add_runtime_args(gen, json_help="print one JSON object")
    gen.set_defaults(func=cmd_generate)

    diag = sub.add_parser("diagnose", help="find the redundant attention layers (Bayesian search over skip sets)")
    add_model_arg(diag)
    diag.add_argument("--k", required=True, help="how many attention layers to skip; several: 2,4,6")
    diag.add_argument("--trials", type=int, default=50, help="trials per k (a resumed study counts its old ones)")
    diag.add_argument("--prompts", action="append", metavar="SOURCE",
                      help="task:math | task:code | jsonl:PATH | text:PATH; repeat for several (default task:math)")
    diag.add_argument("--n-prompts", type=int, default=16, help="prompts per source")
    diag.add_argument("--max-new-tokens", type=int, default=64, help="tokens decoded per prompt and evaluation")
    diag.add_argument("--draft-len", type=int, default=4, help="draft tokens per speculative step")
    diag.add_argument("--objective", default="modeled", choices=["modeled", "measured"],
                      help="modeled: acceptance x timed cost model (repeatable); measured: wall clock")
    diag.add_argument("--sampler", default="gp", choices=["gp", "gp-matern", "tpe", "random"],
                      help="gp: additive GP on the sets (default); gp-matern: Optuna's GP on z; tpe; random")
    diag.add_argument("--seed", type=int, default=0)
    diag.add_argument("--exclude-first", action="store_true", help="never skip layer 0")
    diag.add_argument("--exclude-last", action="store_true", help="never skip the last layer")
    diag.add_argument("--resume", action="store_true", help="continue the study already in --out (or --storage)")
    diag.add_argument("--storage", help="Optuna storage URL shared by several workers (default: sqlite in --out)")
    diag.add_argument("--out", required=True, help="folder for diagnosis.json, diagnosis.png and study.db")
    diag.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default; 1 on a busy machine)")
    add_runtime_args(diag, json_help="print the diagnosis as one JSON object")
    diag.set_defaults(func=cmd_diagnose)

    ev = sub.add_parser("eval", help="generation-based accuracy on a task")
    add_model_arg(ev)
    ev.add_argument("--task", required=True, help="math | code | humaneval | gsm8k:PATH.jsonl")
    ev.add_argument("--n", type=int, default=200, help="number of problems")
    ev.add_argument("--seed", type=int, default=0, help="which held-out problems (math, code)")
    ev.add_argument("--batch-size", type=int, default=16)
    ev.add_argument("--max-new-tokens", type=int, default=256)
    ev.add_argument("--skip", default="", help="evaluate with these attention layers skipped, e.g. 1,3")
    ev.add_argument("--records", help="write one JSON line per problem to this file")
    add_runtime_args(ev, json_help="print one JSON object")
    ev.set_defaults(func=cmd_eval)

    bench = sub.add_parser("bench", help="decode tokens/s, time to first token and memory, per model, context and batch")
    bench.add_argument("models", nargs="+", help="model folders (or 'demo'); ratios compare each with the first")
    bench.add_argument("--contexts", default="256,1024,4096", help="prompt lengths, e.g. 256,1024,4096")
    bench.add_argument("--batch-sizes", default="1,8")
    bench.add_argument("--new-tokens", type=int, default=32)
    bench.add_argument("--reps", type=int, default=3, help="timed repetitions after one warm-up (median reported)")
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    bench.add_argument("--out", help="also write the results to this JSON file")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(func=cmd_bench)

    conv = sub.add_parser("convert", help="replace attention layers by Mamba2 mixers (a hybrid model folder)")
    add_model_arg(conv)
    conv.add_argument("--layers", help="attention layers to replace, e.g. 1,3,5")
    conv.add_argument("--diagnosis", help="diagnosis.json from `rad diagnose`: replace its best layers for --k")
    conv.add_argument("--k", type=int, help="with --diagnosis: how many layers to replace")
    conv.add_argument("--init", default="rad", choices=["rad", "kqvo"],
                      help="rad: out_proj <- o_proj, in_proj <- 0 (the draft model exactly); kqvo: x,B,C <- v,k,q")
    conv.add_argument("--seed", type=int, default=0, help="for the freshly initialised mixer parameters")
    conv.add_argument("--out", required=True, help="new folder for the hybrid")
    conv.add_argument("--json", action="store_true", help="print one JSON object")
    conv.set_defaults(func=cmd_convert)
    dist = sub.add_parser("distill", help="distil a hybrid from its teacher: SSM mixers first, then optionally end to end")
    dist.add_argument("hybrid", help="hybrid folder from `rad convert` (the student)")
    dist.add_argument("--teacher", required=True, help="the source model, or another with the same tokenizer")
    dist.add_argument("--data", required=True, help="task:math | task:code | task:math+code (a task named twice: twice its share) | jsonl:PATH (texts or chat messages)")
    dist.add_argument("--align-steps", type=int, default=0,
                      help="first, steps in which each SSM mixer alone learns to reproduce the teacher's attention "
                           "output from the teacher's input to its layer (0: none)")
    dist.add_argument("--align-lr", type=float, default=3e-3, help="alignment stage peak learning rate")
    dist.add_argument("--stage1-steps", type=int, default=200, help="steps training only the SSM mixers")
    dist.add_argument("--lr", type=float, default=1e-3, help="stage 1 peak learning rate")
    dist.add_argument("--warmup", type=int, default=20, help="stage 1 warm-up steps (then cosine decay)")
    dist.add_argument("--stage2-steps", type=int, default=0, help="steps of stage 2 (0: no stage 2)")
    dist.add_argument("--stage2-lr", type=float, default=1e-4)
    dist.add_argument("--stage2-warmup", type=int, default=10)
    dist.add_argument("--stage2-params", default="all", help="all | ssm | name globs, e.g. 'ssm,model.layers.*.mlp.*'")
    dist.add_argument("--on-policy", type=float, default=0.0,
                      help="stage 1: share of steps trained on the student's own sampled completions (0-1)")
    dist.add_argument("--stage2-on-policy", type=float, default=0.0, help="the same for stage 2")
    dist.add_argument("--on-policy-max-new-tokens", type=int, default=128, help="longest completion on an on-policy step")
    dist.add_argument("--seq-len", type=int, default=256)
    dist.add_argument("--no-pack", action="store_true", help="one document per row (padded) instead of packed rows")
    dist.add_argument("--assistant-only", action="store_true", help="loss only on assistant turns / task completions")
    dist.add_argument("--batch-size", type=int, default=16, help="sequences per optimizer step, over all processes")
    dist.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    dist.add_argument("--temperature", type=float, default=1.0)
    dist.add_argument("--hidden-weight", type=float, default=0.0, help="weight of hidden-state alignment at replaced layers")
    dist.add_argument("--ce-weight", type=float, default=0.0, help="weight of cross-entropy on the data")
    dist.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping (0: off)")
    dist.add_argument("--topk-cache", help="folder of cached top-k teacher logits, reused across runs")
    dist.add_argument("--topk", type=int, default=64, help="logits kept per token in the cache")
    dist.add_argument("--save-every", type=int, default=50, help="checkpoint every N steps")
    dist.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    dist.add_argument("--seed", type=int, default=0)
    dist.add_argument("--device", help="cpu | cuda (default: cuda if available)")
    dist.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], help="default: bf16 on GPU, no on CPU")
    dist.add_argument("--threads", type=int, default=0, help="torch CPU threads per process (0: torch's default)")
    dist.add_argument("--compile", action="store_true",
                      help="torch.compile the models' layers: faster steps after a one-off compile (minutes on a small CPU)")
    dist.add_argument("--tensorboard", action="store_true", help="also log to OUT/tensorboard (pip install 'rad[tensorboard]')")
    dist.add_argument("--out", required=True, help="folder for the distilled hybrid, metrics.jsonl and checkpoints")
    dist.add_argument("--json", action="store_true", help="print a JSON summary (no progress bar)")
    dist.set_defaults(func=cmd_distill)

    run = sub.add_parser("run", help="the whole pipeline: diagnose, convert, distill, eval, bench, report")
    add_model_arg(run)
    run.add_argument("--k", type=int, required=True, help="how many attention layers to replace")
    run.add_argument("--out", required=True, help="run folder; re-running resumes where it stopped")
    run.add_argument("--teacher", help="distillation teacher (default: the model itself)")
    run.add_argument("--data", default="task:math+code", help="task:math | task:code | task:math+code | jsonl:PATH")
    run.add_argument("--price-per-hour", type=float, default=2.0, help="USD per machine-hour, for the cost section")
    run.add_argument("--trials", type=int, default=30, help="diagnosis search trials")
    run.add_argument("--stage1-steps", type=int, default=200)
    run.add_argument("--stage2-steps", type=int, default=0)
    run.add_argument("--lr", type=float, default=1e-3, help="stage 1 peak learning rate")
    run.add_argument("--stage2-lr", type=float, default=1e-4, help="stage 2 peak learning rate")
    run.add_argument("--temperature", type=float, default=1.0, help="distillation temperature")
    run.add_argument("--assistant-only", action="store_true", help="distillation loss only on task completions")
    run.add_argument("--eval-n", type=int, default=200, help="held-out problems per task")
    run.add_argument("--contexts", default="256,1024,4096", help="benchmark contexts")
    run.add_argument("--device", default="cpu")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default; 1 on a busy machine)")
    run.add_argument("--distill-threads", type=int, default=0, help="torch CPU threads while distilling (0: as --threads)")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="rad run on the shipped demo model, sized for a laptop CPU")
    demo.add_argument("--out", default="rad-demo", help="run folder (default: ./rad-demo)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except RadError as err:
        print(f"rad: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
