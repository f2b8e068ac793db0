"""What each `rad` sub-command does with its parsed arguments: build the stage's config, call the
library, print the result. The parser itself is in rad.cli."""

from __future__ import annotations

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
        from rad.eval.profiling import profile_speculative

        policy = DraftPolicy(ADAPTIVE_DRAFT_LEN, adaptive=True) if args.adaptive else DraftPolicy(4 if args.draft_len is None else args.draft_len)
        profile = profile_speculative(model, [prompt], args.max_new_tokens, sampling, skip=skip, policy=policy)
        result, stats = profile.output, profile.to_dict()
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
        align=StageConfig(args.align_steps, args.align_lr, "ssm", warmup=min(10, args.align_steps)),
        stage1=StageConfig(args.stage1_steps, args.lr, "ssm", args.warmup, on_policy=args.on_policy),
        stage2=StageConfig(args.stage2_steps, args.stage2_lr, args.stage2_params, args.stage2_warmup,
                           on_policy=args.stage2_on_policy),
        on_policy_max_new_tokens=args.on_policy_max_new_tokens, seq_len=args.seq_len, pack=not args.no_pack,
        assistant_only=args.assistant_only, batch_size=args.batch_size,
        grad_accum=args.grad_accum, temperature=args.temperature, hidden_weight=args.hidden_weight,
        ce_weight=args.ce_weight, max_grad_norm=args.max_grad_norm, topk_cache=args.topk_cache, topk=args.topk,
        save_every=args.save_every, resume=args.resume, seed=args.seed, device=args.device,
        mixed_precision=args.mixed_precision, threads=args.threads, compile=args.compile, tensorboard=args.tensorboard,
        progress=not args.json,
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
                       stage2_steps=args.stage2_steps, lr=args.lr, stage2_lr=args.stage2_lr,
                       temperature=args.temperature, assistant_only=args.assistant_only, eval_n=args.eval_n,
                       contexts=parse_int_list(args.contexts, "--contexts"), device=args.device, seed=args.seed,
                       threads=args.threads, distill_threads=args.distill_threads)
    run(config, log=lambda line: print(line, flush=True))


def cmd_demo(args) -> None:
    from rad.demo import demo_config, summary_table
    from rad.pipeline import run

    summaries = run(demo_config(args.out), log=lambda line: print(line, flush=True))
    print(summary_table(summaries))
