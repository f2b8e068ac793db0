"""What a diagnosis is told: the model and the k values (its inputs), the search, the prompts its objective
decodes, and where it runs."""

from __future__ import annotations

from dataclasses import dataclass

from rad.errors import RadError
from rad.machine import THREADS_HELP
from rad.model.io import Placement
from rad.options import Options, internal, nested, option, seed_option
from rad.search.bayes import SAMPLERS
from rad.search.speedup import MODES

PROMPT_SOURCES = "task:math | task:code | task:smol | task:smol:NAME | text:python-docs | jsonl:PATH | text:PATH"


@dataclass
class DiagnoseConfig(Options):
    model: str | None = option(None, help="model folder (Hugging Face layout) or 'demo'", positional=True, required=True)
    out: str | None = option(None, help="folder for diagnosis.json, diagnosis.png and study.db", required=True)
    ks: list[int] | None = option(None, help="how many attention layers to skip; several: 2,4,6", flag="--k",
                                  required=True, low=1)
    trials: int = option(50, help="search trials per k (a resumed study counts its earlier ones)", low=1)
    prompts: list[str] = option(default_factory=lambda: ["task:math"], help=f"prompt source: {PROMPT_SOURCES}; "
                                "repeat the flag for several", repeat=True, metavar="SOURCE")
    # 16 x 64 tokens: with 4 x 24 many skip sets tied on the same acceptance counts (see benchmarks/search.py)
    n_prompts: int = option(16, help="prompts per source", low=1)
    max_new_tokens: int = option(64, help="tokens decoded per prompt and evaluation", low=2)
    draft_len: int = option(4, help="draft tokens per speculative step", low=1)
    objective: str = option("modeled", help="modeled: acceptance x timed cost model (repeatable); measured: wall clock",
                            choices=MODES)
    sampler: str = option("gp", help="gp: additive GP on the sets; gp-matern: Optuna's GP on z; tpe; random",
                          choices=SAMPLERS)
    seed: int = seed_option("seed of the search and of the prompts")
    exclude_first: bool = option(False, help="never skip layer 0")
    exclude_last: bool = option(False, help="never skip the last layer")
    resume: bool = option(False, help="continue the study already in --out (or --storage)")
    storage: str | None = option(None, help="Optuna storage URL shared by several workers (default: sqlite in --out)")
    placement: Placement = nested(Placement)
    # Decoding a small model for a few prompts gains little from more threads, and on a busy machine each waits
    # for the others: 1 thread ran a 50-trial diagnosis of an 8-layer, hidden-256 model in 38 s where 2 threads
    # spent 20 s per trial.
    threads: int | str = option(0, help=THREADS_HELP, low=0, words=("auto",))
    progress: bool = internal(True, "the command turns the progress bar off with --json")

    def __post_init__(self):
        super().__post_init__()
        if self.ks is not None and len(set(self.ks)) != len(self.ks):
            raise RadError(f"--k repeats a value: {','.join(map(str, self.ks))}")
        if self.ks is not None and not self.ks:
            raise RadError("--k needs at least one value, e.g. --k 2 or --k 2,4")
