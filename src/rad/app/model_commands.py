"""`rad info` (what a checkpoint folder holds) and `rad generate` (text from a prompt, plain or self-speculative)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from rad.app.command import MODEL_HELP, Command, JsonOutput
from rad.decode.draft_policy import DraftPolicy
from rad.decode.sampling import SamplingConfig
from rad.errors import RadError
from rad.model.io import Placement
from rad.options import nested, option


@dataclass
class InfoCommand(JsonOutput):
    model: str | None = option(None, help=MODEL_HELP, positional=True, required=True)


def run_info(command: InfoCommand) -> None:
    from rad.model.io import describe

    def text(info: dict) -> str:
        return "\n".join(f"{key:>18}: {value:,}" if isinstance(value, int) and not isinstance(value, bool)
                         else f"{key:>18}: {value}" for key, value in info.items())

    command.emit(describe(command.model), text)


@dataclass
class GenerateCommand(JsonOutput):
    model: str | None = option(None, help=MODEL_HELP, positional=True, required=True)
    prompt: str | None = option(None, help="the prompt text", required=True)
    max_new_tokens: int = option(64, help="most tokens generated", low=1)
    skip: list[int] = option(default_factory=list, help="attention layers to skip, e.g. 1,3,5 (with --speculative: "
                                                        "in the draft only)", low=0)
    speculative: bool = option(False, help="self-speculative decoding: the model with --skip drafts, the full model "
                                           "verifies (the same output)")
    chat: bool = option(False, help="wrap the prompt with the tokenizer's chat template")
    sampling: SamplingConfig = nested(SamplingConfig)
    policy: DraftPolicy = nested(DraftPolicy)
    placement: Placement = nested(Placement)

    def __post_init__(self):
        super().__post_init__()
        if not self.speculative and (self.policy.draft_len is not None or self.policy.adaptive):
            raise RadError("--draft-len and --adaptive apply to --speculative decoding only")


def run_generate(command: GenerateCommand) -> None:
    from rad.decode.generate import generate
    from rad.decode.loop import check_positions
    from rad.eval.profiling import profile_speculative
    from rad.model.formats import load_config
    from rad.model.io import resolve_model_dir
    from rad.model.tokenizer import encode_prompt, load_tokenizer

    model_dir = resolve_model_dir(command.model)
    config = load_config(model_dir)  # its mistakes are rad's to report, before the tokenizer's reader sees them
    tokenizer = load_tokenizer(model_dir)
    prompt = encode_prompt(tokenizer, command.prompt, chat=command.chat)
    check_positions(config, len(prompt), command.max_new_tokens)  # before the weights load
    model = command.placement.load(model_dir)
    if command.speculative:
        profile = profile_speculative(model, [prompt], command.max_new_tokens, command.sampling, skip=command.skip,
                                      policy=command.policy)
        result, stats = profile.output, profile.to_dict()
    else:
        result, stats = generate(model, [prompt], command.max_new_tokens, command.sampling, skip=command.skip), {}
    tokens = result.tokens[0]
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    # The first run of each shape compiles: its time is in the tokens/s (a second run in the process would not pay).
    compiled = {} if model.compiled_decode is None else {"compile_s": model.compiled_decode.compile_seconds}
    if command.json:
        print(json.dumps({"text": text, "tokens": tokens, "prompt_tokens": len(prompt), "new_tokens": len(tokens),
                          "tokens_per_s": result.tokens_per_s, "prefill_s": result.prefill_s,
                          "decode_s": result.decode_s, "skip": sorted(command.skip), **compiled, **stats}))
        return
    print(text)
    compiling = f", of which {compiled['compile_s']:.1f} s compiling" if compiled else ""
    print(f"[{len(tokens)} tokens, {result.tokens_per_s:.1f} tokens/s{compiling}]", file=sys.stderr)
    if stats:
        print(f"[acceptance {stats['acceptance_rate']:.2f}, {stats['mean_accepted']:.2f} drafts accepted per step, "
              f"speed-up {stats['speedup_measured'] or 0:.2f}x measured, {stats['speedup_modeled'] or 0:.2f}x modeled]",
              file=sys.stderr)


@dataclass
class ImportCommand(JsonOutput):
    file: str | None = option(None, help="the GGUF file", positional=True, required=True)
    out: str | None = option(None, help="new folder for the checkpoint", required=True)
    dtype: str = option("float32", help="dtype of the weights written (float32 keeps the de-quantised values exactly)",
                        choices=("float32", "bfloat16"))


def run_import(command: ImportCommand) -> None:
    from rad.model.gguf import import_gguf

    command.emit(import_gguf(command.file, command.out, command.dtype),
                 lambda r: f"wrote {r['out']}: a {r['layers']}-layer {r['model_type']} model, "
                           f"{r['parameters']:,} parameters in {r['dtype']}")


COMMANDS = [
    Command("info", "describe a checkpoint folder", InfoCommand, run_info),
    Command("generate", "generate text from a prompt (plain or self-speculative decoding)", GenerateCommand, run_generate),
    Command("import", "write a checkpoint folder from a GGUF file (llama.cpp's format)", ImportCommand, run_import),
]
