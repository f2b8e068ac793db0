"""Each option is defined once, on its config dataclass: every sub-command's flags against the dataclass fields
(every field has its flag, every flag's default is the field's default), and the checks the metadata drives."""

import dataclasses
import math

import pytest

from rad.app.cli import build_parser, parse
from rad.app.demo import COMMANDS as DEMO
from rad.app.model_commands import COMMANDS as MODEL_COMMANDS
from rad.app.pipeline import COMMANDS as RUN, RunConfig
from rad.app.stage_commands import COMMANDS as STAGE_COMMANDS
from rad.distill.config import DistillConfig
from rad.errors import RadError
from rad.options import INTERNAL, NESTED, OPTION, check_options, from_dict

COMMANDS = [*MODEL_COMMANDS, *STAGE_COMMANDS, *RUN, *DEMO]
# A valid value for every option a command requires, by field name.
REQUIRED_VALUES = {"model": "demo", "prompt": "hi", "out": "somewhere", "ks": "2", "k": "2", "student": "hybrid",
                   "teacher": "demo", "data": "task:math", "models": "demo", "file": "model.gguf"}
ONE_OF = {"convert": ("layers", "1")}  # --layers or --diagnosis


def options(cls, defaults, skip, prefix="", path=()):
    """(dotted path, expected flag, option metadata, default) of every option field, walked here from the
    dataclass fields alone; a field that is neither option, nested config nor internal fails the test."""
    for f in dataclasses.fields(cls):
        dotted = ".".join((*path, f.name))
        default = getattr(defaults, f.name) if defaults is not None else field_default(f)
        if dotted in skip or INTERNAL in f.metadata:
            continue
        if NESTED in f.metadata:
            inner = "-".join(p for p in (prefix, f.metadata[NESTED].prefix) if p)
            yield from options(type(default), default, skip, inner, (*path, f.name))
            continue
        assert OPTION in f.metadata, f"{cls.__name__}.{f.name} is not an option"
        spec = f.metadata[OPTION]
        name = (spec.flag or "--" + f.name.replace("_", "-"))[2:]
        yield dotted, "--" + "-".join(p for p in (prefix, name) if p), spec, default


def field_default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def lookup(config, dotted: str):
    for name in dotted.split("."):
        config = getattr(config, name)
    return config


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_every_field_has_its_flag_with_the_fields_default(command):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command_name").choices[command.name]
    spellings = {s for action in sub._actions for s in action.option_strings}
    positionals = [a.dest for a in sub._actions if not a.option_strings]
    argv, expected = [command.name], {}
    for dotted, flag, spec, default in options(command.config, None, command.skip):
        if spec.positional:
            assert dotted.replace(".", "_") in positionals, dotted
            argv.insert(1, REQUIRED_VALUES[dotted.split(".")[-1]])
        else:
            assert flag in spellings, f"{command.name}: {dotted} has no flag {flag}"
            if spec.required:
                argv += [flag, REQUIRED_VALUES[dotted.split(".")[-1]]]
            else:
                expected[dotted] = default
    if command.name in ONE_OF:  # a command that needs one of two options: give the first
        name, value = ONE_OF[command.name]
        argv += [f"--{name}", value]
        expected.pop(name)
    _, config = parse(argv)
    for dotted, default in expected.items():
        read = lookup(config, dotted)
        assert (list(read) if isinstance(read, tuple) else read) == (list(default) if isinstance(default, tuple) else default), \
            f"{command.name}: {dotted} reads {read!r} from its default flag, the field's default is {default!r}"


def test_a_run_reads_its_stages_flags_and_their_older_spellings():
    _, config = parse(["run", "demo", "--k", "2", "--out", "o", "--lr", "0.5", "--distill-stage2-steps", "7",
                       "--trials", "9", "--eval-n", "11", "--contexts", "16,32", "--diagnose-prompts", "task:code",
                       "--diagnose-prompts", "task:math", "--convert-init", "kqvo", "--distill-no-pack"])
    assert (config.distill.stage1_lr, config.distill.stage2_steps, config.distill.pack) == (0.5, 7, False)
    assert (config.diagnose.trials, config.diagnose.prompts) == (9, ["task:code", "task:math"])
    assert (config.eval.n, config.bench.contexts, config.convert.init) == (11, [16, 32], "kqvo")
    assert config.eval.max_new_tokens == RunConfig().eval.max_new_tokens  # untouched: the run's own default
    assert from_dict(RunConfig, dataclasses.asdict(config)) == config


@pytest.mark.parametrize("kwargs, message", [
    (dict(stage1_lr=math.nan), "--stage1-lr must be a finite number"),
    (dict(stage1_lr=0.0), "--stage1-lr must be greater than 0"),
    (dict(stage1_on_policy=1.5), "--stage1-on-policy must be at most 1"),
    (dict(batch_size=2.5), "--batch-size must be a whole number"),
    (dict(pack="yes"), "--no-pack must be true or false"),
    (dict(mixed_precision="fp8"), "--mixed-precision must be one of auto, no, bf16, fp16"),
    (dict(topk=True), "--topk must be a whole number"),
])
def test_values_are_checked_when_a_config_is_made(kwargs, message):
    with pytest.raises(RadError, match=message):
        DistillConfig(**kwargs)


def test_a_bad_flag_is_one_line_naming_it(capsys):
    from rad.app.cli import main

    assert main(["distill", "h", "--teacher", "t", "--data", "task:math", "--out", "o", "--batch-size", "many"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--batch-size" in err and "many" in err
    check_options(DistillConfig())  # the defaults themselves are valid
