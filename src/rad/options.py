"""Options: a stage's settings are the fields of its config dataclass, and each field says in its metadata
what a command needs to offer it as a flag and to check it: the help text, the choices, the valid range.

    trials: int = option(50, help="trials per k", low=1)

rad.app.flags builds the `rad` command's flags from these fields (one source for the name, the default and
the help); `check_options` checks a config's values against them, and every config class runs it when it is
made (`Options.__post_init__`), so a bad value fails before any long work starts. A field that holds another
config (`nested`) gets that config's flags, prefixed; a field that is not a user's option (`internal`) says why.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import MISSING, dataclass

from rad.errors import RadError

OPTION, NESTED, INTERNAL = "rad.option", "rad.nested", "rad.internal"


@dataclass(frozen=True)
class Option:
    help: str
    flag: str | None = None  # default: --field-name
    aliases: tuple[str, ...] = ()  # older or shorter spellings of the flag
    choices: tuple | None = None
    low: float | None = None  # the least valid value (of each item, for a list)
    above: float | None = None  # values must exceed this
    high: float | None = None  # the largest valid value
    below: float | None = None  # values must be less than this
    positional: bool = False
    required: bool = False  # a command must be given it (the field's default, None, means "not given")
    repeat: bool = False  # a list given by repeating the flag (--prompts A --prompts B), not comma-separated
    words: tuple[str, ...] = ()  # words accepted besides values of the field's type (threads: "auto")
    metavar: str | None = None


@dataclass(frozen=True)
class Nested:
    prefix: str  # the nested config's flags are --{prefix}-{flag}; "" keeps them as they are
    aliases: dict  # field name -> an extra flag, for spellings that predate the prefix


def option(default=MISSING, *, help: str, default_factory=MISSING, **spec) -> dataclasses.Field:
    """A config field that is a user's option (see Option for `spec`)."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={OPTION: Option(help, **spec)})


SEED_MAX = 2**32 - 1  # numpy's and Optuna's generators take seeds below 2**32


def seed_option(help: str) -> dataclasses.Field:
    """A seed: a whole number from 0 to SEED_MAX, default 0."""
    return option(0, help=help, low=0, high=SEED_MAX)


def nested(factory, prefix: str = "", aliases: dict | None = None) -> dataclasses.Field:
    """A field holding another config (made by `factory`), whose options become this one's."""
    return dataclasses.field(default_factory=factory, metadata={NESTED: Nested(prefix, aliases or {})})


def internal(default, why: str) -> dataclasses.Field:
    """A field that is not a user's option (a command or the pipeline sets it); `why` says who does."""
    return dataclasses.field(default=default, metadata={INTERNAL: why})


def field_types(cls) -> dict[str, object]:
    return typing.get_type_hints(cls)


def optional_inner(annotation):
    """(the field's value type, whether None is allowed) for `X | None` and plain `X`; `X | str` is an X that
    also takes the option's `words`."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        kind = next((a for a in args if a is not str), str)
        return kind, type(None) in typing.get_args(annotation)
    return annotation, False


def flag_name(name: str, spec: Option) -> str:
    return spec.flag or "--" + name.replace("_", "-")


class Options:
    """Base of every config dataclass: its options are checked when it is made."""

    def __post_init__(self):
        check_options(self)


def check_options(config) -> None:
    """Raise a RadError naming the first option of `config` whose value is out of its type, choices or range."""
    hints = field_types(type(config))
    for f in dataclasses.fields(config):
        spec = f.metadata.get(OPTION)
        if spec is not None:
            check_value(getattr(config, f.name), hints[f.name], spec, flag_name(f.name, spec))


def check_value(value, annotation, spec: Option, flag: str) -> None:
    kind, optional = optional_inner(annotation)
    if isinstance(value, str) and value in spec.words:
        return
    if value is None:
        if optional:
            return
        raise RadError(f"{flag} needs a value")
    if typing.get_origin(kind) is list:
        if not isinstance(value, (list, tuple)):
            raise RadError(f"{flag} must be a list, got {value!r}")
        for item in value:
            check_value(item, typing.get_args(kind)[0], spec, flag)
        return
    if kind is bool:
        if not isinstance(value, bool):
            raise RadError(f"{flag} must be true or false, got {value!r}")
        return
    if kind in (int, float):
        whole = isinstance(value, int) and not isinstance(value, bool)
        if not whole and not (kind is float and isinstance(value, float)):
            raise RadError(f"{flag} must be {'a whole number' if kind is int else 'a number'}, got {value!r}")
        if not math.isfinite(value):
            raise RadError(f"{flag} must be a finite number, got {value}")
        check_range(value, spec, flag)
    elif kind is str and not isinstance(value, str):
        raise RadError(f"{flag} must be text, got {value!r}")
    if spec.choices is not None and value not in spec.choices:
        raise RadError(f"{flag} must be one of {', '.join(map(str, spec.choices))}, got {value!r}")


def check_range(value: float, spec: Option, flag: str) -> None:
    if spec.low is not None and value < spec.low:
        raise RadError(f"{flag} must be at least {spec.low}, got {value}")
    if spec.above is not None and value <= spec.above:
        raise RadError(f"{flag} must be greater than {spec.above}, got {value}")
    if spec.high is not None and value > spec.high:
        raise RadError(f"{flag} must be at most {spec.high}, got {value}")
    if spec.below is not None and value >= spec.below:
        raise RadError(f"{flag} must be less than {spec.below}, got {value}")


def require(config, *names: str) -> None:
    """Raise a RadError for the first of `names` that a caller left unset (None): a stage's inputs."""
    for name in names:
        if getattr(config, name) is None:
            spec = next(f for f in dataclasses.fields(config) if f.name == name).metadata.get(OPTION)
            raise RadError(f"{flag_name(name, spec) if spec else name} is required")


def from_dict(cls, data: dict):
    """The config of class `cls` whose `dataclasses.asdict` is `data` (nested configs rebuilt too)."""
    hints = field_types(cls)
    return cls(**{f.name: from_dict(hints[f.name], data[f.name]) if NESTED in f.metadata else data[f.name]
                  for f in dataclasses.fields(cls) if f.name in data})
