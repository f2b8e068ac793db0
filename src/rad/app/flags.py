"""A command's flags, generated from its config dataclass (rad.options), and the config read back from them.

Every option field becomes one flag named after it (or its metadata's `flag`), with the field's default, help
and choices; a nested config's fields become flags too, prefixed with the nesting field's prefix. Argument
types follow the field's annotation: `bool` is a switch (`--name`, or `--no-name` where the default is True),
`list[int]` and `list[str]` are comma-separated (or a repeated flag), `X | None` takes an X.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

from rad.options import INTERNAL, NESTED, OPTION, Option, field_types, flag_name, optional_inner


@dataclasses.dataclass(frozen=True)
class Flag:
    """One generated flag: where its value goes in the config, and what the parser was told."""

    path: tuple[str, ...]  # field names from the command's config down to the option
    dest: str  # the argparse destination
    flags: tuple[str, ...]  # its spellings ('' for a positional argument)
    default: object  # the config's default (before the parser sees it)


def walk(cls, defaults, skip=frozenset(), prefix: str = "", path: tuple[str, ...] = (), aliases=None):
    """Yield (Flag, Option, annotation) for every option of config class `cls` whose default values are the
    fields of `defaults` (an instance, or None for the class's own defaults), except those whose dotted path
    ("distill.seed") is in `skip`: the command sets them itself."""
    hints = field_types(cls)
    for f in dataclasses.fields(cls):
        if ".".join((*path, f.name)) in skip:
            continue
        default = default_of(f, defaults)
        if NESTED in f.metadata:
            inner = f.metadata[NESTED]
            sub_prefix = "-".join(p for p in (prefix, inner.prefix) if p)
            yield from walk(hints[f.name], default, skip, sub_prefix, (*path, f.name), inner.aliases)
        elif OPTION in f.metadata:
            spec: Option = f.metadata[OPTION]
            base = flag_name(f.name, spec)
            name = "--" + "-".join(p for p in (prefix, base[2:]) if p)
            extra = [a for a in ((aliases or {}).get(f.name), *(spec.aliases if not prefix else ())) if a]
            flags = ("",) if spec.positional else (name, *extra)
            dest = "_".join((*path, f.name))
            yield Flag((*path, f.name), dest, flags, default), spec, hints[f.name]
        elif INTERNAL not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} is neither an option, a nested config nor internal")


def default_of(f: dataclasses.Field, defaults):
    if defaults is not None:
        return getattr(defaults, f.name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def add_flags(parser: argparse.ArgumentParser, cls, skip=frozenset()) -> list[Flag]:
    """Add a flag for every option of `cls` (nested ones included, but those in `skip`) to `parser`; return them."""
    added = []
    for flag, spec, annotation in walk(cls, None, skip):
        kind, _ = optional_inner(annotation)
        kwargs = argument(spec, kind, flag.default)
        if kind is not bool and "metavar" not in kwargs and not spec.positional:
            kwargs["metavar"] = flag.path[-1].upper()
        if spec.positional:
            parser.add_argument(flag.dest, **kwargs)
        else:
            parser.add_argument(*flag.flags, dest=flag.dest, required=spec.required, **kwargs)
        added.append(flag)
    return added


def argument(spec: Option, kind, default) -> dict:
    """argparse's keyword arguments for an option of type `kind` with this default."""
    shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
    help_text = spec.help if spec.required or kind is bool or default is None else f"{spec.help} (default: {shown})"
    kwargs = {"help": help_text}
    if spec.metavar:
        kwargs["metavar"] = spec.metavar
    if kind is bool:
        return {**kwargs, "action": "store_false" if default else "store_true", "default": default}
    if typing.get_origin(kind) is list:
        item = typing.get_args(kind)[0]
        if spec.positional:
            return {**kwargs, "nargs": "+", "type": item}
        if spec.repeat:
            return {**kwargs, "action": "append", "type": item, "default": None}
        return {**kwargs, "type": comma_list(item), "default": default}
    if spec.positional:
        return {**kwargs, "type": kind}
    return {**kwargs, "type": with_words(kind, spec.words), "default": default, "choices": spec.choices}


def with_words(kind, words: tuple[str, ...]):
    """`kind` as an argparse type that also takes `words` as they are."""
    if not words:
        return kind

    def parse(text: str):
        return text if text in words else kind(text)
    parse.__name__ = f"{kind.__name__} or {' or '.join(words)}"
    return parse


def comma_list(item):
    """'1,3,5' -> [1, 3, 5] (an empty string: an empty list)."""
    def parse(text: str) -> list:
        try:
            return [item(part.strip()) for part in text.split(",") if part.strip()]
        except ValueError:
            what = "integers like 1,3,5" if item is int else "values"
            raise argparse.ArgumentTypeError(f"must be comma-separated {what}, got '{text}'") from None
    parse.__name__ = f"list of {item.__name__}"
    return parse


def read_flags(args: argparse.Namespace, cls, flags: list[Flag]):
    """The config of class `cls` that the parsed `args` describe (fields without a flag keep their defaults)."""
    values = {}
    for flag in flags:
        value = getattr(args, flag.dest)
        values[flag.path] = flag.default if value is None and flag.default is not None else value
    return build(cls, values, None)


def build(cls, values: dict, defaults, path: tuple[str, ...] = ()):
    hints, kwargs = field_types(cls), {}
    for f in dataclasses.fields(cls):
        key = (*path, f.name)
        if NESTED in f.metadata:
            kwargs[f.name] = build(hints[f.name], values, default_of(f, defaults), key)
        elif key in values:
            kwargs[f.name] = values[key]
        else:
            kwargs[f.name] = default_of(f, defaults)
    return cls(**kwargs)
