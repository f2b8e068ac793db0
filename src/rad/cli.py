"""The `rad` command: one sub-command per stage. It parses, calls the library and prints.

User mistakes (RadError) become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from rad.errors import RadError


def parse_int_list(text: str, what: str) -> list[int]:
    """'1,3,5' -> [1, 3, 5]; an empty string is an empty list."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise RadError(f"{what} must be comma-separated integers like 1,3,5, got '{text}'") from None


def cmd_info(args) -> None:
    from rad.model.io import describe

    info = describe(args.model)
    if args.json:
        print(json.dumps(info))
        return
    for key, value in info.items():
        print(f"{key:>18}: {value:,}" if isinstance(value, int) and not isinstance(value, bool) else f"{key:>18}: {value}")


def cmd_generate(args) -> None:
    from rad.decode.generate import generate
    from rad.decode.sampling import SamplingConfig
    from rad.model.io import load_model, resolve_model_dir
    from rad.model.tokenizer import encode_prompt, load_tokenizer

    sampling = SamplingConfig(temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    skip = parse_int_list(args.skip, "--skip")
    model_dir = resolve_model_dir(args.model)
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, device=args.device, dtype=args.dtype)
    prompt = encode_prompt(tokenizer, args.prompt, chat=args.chat)
    if args.speculative:
        from rad.decode.draft_policy import ADAPTIVE_DRAFT_LEN, DraftPolicy
        from rad.decode.speculative import speculative_generate

        policy = DraftPolicy(ADAPTIVE_DRAFT_LEN, adaptive=True) if args.adaptive else DraftPolicy(4 if args.draft_len is None else args.draft_len)
        result = speculative_generate(model, [prompt], args.max_new_tokens, sampling, skip=skip, policy=policy,
                                      measure_plain=True, model_cost=True)
        stats = result.stats.to_dict()
    elif args.draft_len is not None or args.adaptive:
        raise RadError("--draft-len and --adaptive apply to --speculative decoding only")
    else:
        result, stats = generate(model, [prompt], args.max_new_tokens, sampling, skip=skip), {}
    tokens = result.tokens[0]
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    if args.json:
        print(json.dumps({
            "text": text,
            "tokens": tokens,
            "prompt_tokens": len(prompt),
            "new_tokens": len(tokens),
            "tokens_per_s": result.tokens_per_s,
            "prefill_s": result.prefill_s,
            "decode_s": result.decode_s,
            "skip": sorted(skip),
            **stats,
        }))
    else:
        print(text)
        print(f"[{len(tokens)} tokens, {result.tokens_per_s:.1f} tokens/s]", file=sys.stderr)
        if stats:
            print(f"[acceptance {stats['acceptance_rate']:.2f}, {stats['mean_accepted']:.2f} drafts accepted per step, "
                  f"speed-up {stats['speedup_measured'] or 0:.2f}x measured, {stats['speedup_modeled'] or 0:.2f}x modeled]",
                  file=sys.stderr)


def cmd_diagnose(args) -> None:
    from rad.search.diagnose import DiagnoseConfig, diagnose
    from rad.search.report import format_table

    config = DiagnoseConfig(
        model=args.model, out=args.out, ks=parse_int_list(args.k, "--k"), trials=args.trials,
        prompts=args.prompts or ["task:math"], n_prompts=args.n_prompts, max_new_tokens=args.max_new_tokens,
        draft_len=args.draft_len, objective=args.objective, sampler=args.sampler, seed=args.seed,
        exclude_first=args.exclude_first, exclude_last=args.exclude_last, resume=args.resume,
        storage=args.storage, device=args.device, dtype=args.dtype, threads=args.threads, progress=not args.json,
    )
    diagnosis = diagnose(config)
    if args.json:
        print(json.dumps(diagnosis))
    else:
        print(format_table(diagnosis))
        print(f"wrote {args.out}/diagnosis.json and {args.out}/diagnosis.png")


def cmd_eval(args) -> None:
    from rad.eval.accuracy import EvalConfig, evaluate
    from rad.eval.tasks import check_task_spec
    from rad.files import atomic_write_jsonl
    from rad.model.io import load_model, resolve_model_dir
    from rad.model.tokenizer import load_tokenizer

    config = EvalConfig(task=args.task, n=args.n, seed=args.seed, batch_size=args.batch_size,
                        max_new_tokens=args.max_new_tokens, skip=parse_int_list(args.skip, "--skip"))
    check_task_spec(config.task)  # fail before the model loads
    model_dir = resolve_model_dir(args.model)
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, device=args.device, dtype=args.dtype)
    result = evaluate(model, tokenizer, config)
    records = result.pop("records")
    if args.records:
        atomic_write_jsonl(args.records, records)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['task']}: accuracy {result['accuracy']:.1%} ({result['correct']}/{result['n']}) in {result['seconds']:.1f} s")


def cmd_bench(args) -> None:
    from rad.eval.throughput import BenchConfig, bench_models
    from rad.files import atomic_write_json

    config = BenchConfig(contexts=parse_int_list(args.contexts, "--contexts"),
                         batch_sizes=parse_int_list(args.batch_sizes, "--batch-sizes"),
                         new_tokens=args.new_tokens, reps=args.reps)

    def show(model_index, point):
        if not args.json:
            print(f"  [{args.models[model_index]}] context {point['context']:>6}  batch {point['batch']:>3}  decode {point['decode_tokens_per_s']:9.1f} tok/s"
                  f"  TTFT {point['ttft_s'] * 1000:8.1f} ms  memory {point['memory_bytes'] / 2**20:8.1f} MiB"
                  f" (state {point['state_bytes'] / 2**20:.1f} MiB)", flush=True)

    result = bench_models(args.models, config, args.device, args.dtype, progress=show)
    if args.out:
        atomic_write_json(args.out, result)
    if args.json:
        print(json.dumps(result))
        return
    for entry in result["models"][1:]:
        print(f"{entry['model']} vs {result['models'][0]['model']}:")
        for r in entry["vs_first"]:
            print(f"  context {r['context']:>6}  batch {r['batch']:>3}  decode speed-up {r['decode_speedup']:.2f}x"
                  f"  memory ratio {r['memory_ratio']:.2f}")


def cmd_convert(args) -> None:
    from rad.model.convert import convert_folder, layers_from_diagnosis

    if (args.layers is None) == (args.diagnosis is None):
        raise RadError("give either --layers 1,3,5 or --diagnosis DIR/diagnosis.json --k K")
    if args.diagnosis is not None and args.k is None:
        raise RadError("--diagnosis needs --k: how many attention layers to replace")
    layers = parse_int_list(args.layers, "--layers") if args.layers is not None else layers_from_diagnosis(args.diagnosis, args.k)
    result = convert_folder(args.model, args.out, layers, args.init, args.seed)
    if args.json:
        print(json.dumps(result))
        return
    for note in result["notes"]:
        print(f"rad: note: {note}", file=sys.stderr)
    print(f"wrote {result['out']} ({result['model_type']}): layers {result['layers']} are Mamba2 mixers, {args.init} init")


def cmd_distill(args) -> None:
    from accelerate import PartialState

    from rad.distill.config import DistillConfig, StageConfig
    from rad.distill.distill import distill

    config = DistillConfig(
        student=args.hybrid, teacher=args.teacher, data=args.data, out=args.out,
        stage1=StageConfig(args.stage1_steps, args.lr, "ssm", args.warmup),
        stage2=StageConfig(args.stage2_steps, args.stage2_lr, args.stage2_params, args.stage2_warmup),
        seq_len=args.seq_len, pack=not args.no_pack, assistant_only=args.assistant_only, batch_size=args.batch_size,
        grad_accum=args.grad_accum, temperature=args.temperature, hidden_weight=args.hidden_weight,
        ce_weight=args.ce_weight, max_grad_norm=args.max_grad_norm, topk_cache=args.topk_cache, topk=args.topk,
        save_every=args.save_every, resume=args.resume, seed=args.seed, device=args.device,
        mixed_precision=args.mixed_precision, threads=args.threads, tensorboard=args.tensorboard, progress=not args.json,
    )  # fmt: skip
    summary = distill(config)
    if not PartialState().is_main_process:  # under accelerate launch / torchrun, one process reports
        return
    if args.json:
        print(json.dumps(summary))
    elif summary["final"] is not None:
        final = summary["final"]
        print(f"wrote {args.out}: {summary['steps']} steps, final KL {final['kl']:.4f} in {summary['seconds']:.0f} s")


def cmd_run(args) -> None:
    from rad.pipeline import RunConfig, run

    config = RunConfig(model=args.model, k=args.k, out=args.out, teacher=args.teacher, data=args.data,
                       price_per_hour=args.price_per_hour, trials=args.trials, stage1_steps=args.stage1_steps,
                       stage2_steps=args.stage2_steps, eval_n=args.eval_n,
                       contexts=parse_int_list(args.contexts, "--contexts"), device=args.device, seed=args.seed,
                       threads=args.threads)
    run(config, log=lambda line: print(line, flush=True))


def cmd_demo(args) -> None:
    from rad.demo import demo_config, summary_table
    from rad.pipeline import run

    summaries = run(demo_config(args.out), log=lambda line: print(line, flush=True))
    print(summary_table(summaries))


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
    diag.add_argument("--n-prompts", type=int, default=4, help="prompts per source")
    diag.add_argument("--max-new-tokens", type=int, default=24, help="tokens decoded per prompt and evaluation")
    diag.add_argument("--draft-len", type=int, default=4, help="draft tokens per speculative step")
    diag.add_argument("--objective", default="modeled", choices=["modeled", "measured"],
                      help="modeled: acceptance x timed cost model (repeatable); measured: wall clock")
    diag.add_argument("--sampler", default="gp", choices=["gp", "tpe", "random"])
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
    dist.add_argument("--data", required=True, help="task:math | task:code | task:math+code | jsonl:PATH (texts or chat messages)")
    dist.add_argument("--stage1-steps", type=int, default=200, help="steps training only the SSM mixers")
    dist.add_argument("--lr", type=float, default=1e-3, help="stage 1 peak learning rate")
    dist.add_argument("--warmup", type=int, default=20, help="stage 1 warm-up steps (then cosine decay)")
    dist.add_argument("--stage2-steps", type=int, default=0, help="steps of stage 2 (0: no stage 2)")
    dist.add_argument("--stage2-lr", type=float, default=1e-4)
    dist.add_argument("--stage2-warmup", type=int, default=10)
    dist.add_argument("--stage2-params", default="all", help="all | ssm | name globs, e.g. 'ssm,model.layers.*.mlp.*'")
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
    run.add_argument("--eval-n", type=int, default=200, help="held-out problems per task")
    run.add_argument("--contexts", default="256,1024,4096", help="benchmark contexts")
    run.add_argument("--device", default="cpu")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default; 1 on a busy machine)")
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
