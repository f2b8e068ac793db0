"""The `rad` command: one sub-command per stage, each with its flags generated from its config dataclass
(rad.app.flags), each run by its handler.

User mistakes (a RadError, or flags the parser refuses) become one line on stderr and exit code 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import sys

from rad.app import demo, model_commands, pipeline, stage_commands
from rad.app.command import Command
from rad.app.flags import add_flags, read_flags
from rad.errors import RadError


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are RadErrors (one line, exit 2) instead of usage text and SystemExit."""

    def error(self, message: str):
        raise RadError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="rad", description="Redundancy-Aware Distillation: Transformer -> hybrid Transformer-SSM")
    sub = parser.add_subparsers(dest="command_name", required=True, parser_class=OneLineParser)
    commands = [*model_commands.COMMANDS, *stage_commands.COMMANDS, *pipeline.COMMANDS, *demo.COMMANDS]
    for command in commands:
        command_parser = sub.add_parser(command.name, help=command.help, description=command.help)
        command_parser.set_defaults(command=command, flags=add_flags(command_parser, command.config, command.skip))
    return parser


def parse(argv: list[str]) -> tuple[Command, object]:
    """The command named in `argv` and its config, read from the flags."""
    args = build_parser().parse_args(argv)
    return args.command, read_flags(args, args.command.config, args.flags)


def main(argv: list[str] | None = None) -> int:
    try:
        command, config = parse(sys.argv[1:] if argv is None else [str(a) for a in argv])
        command.handler(config)
    except RadError as err:
        print(f"rad: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
