"""What every task generator returns, and how problems are assigned to splits."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

SPLITS = ("train", "test")
# One problem in ten goes to the test split. The split is a function of the problem's text alone,
# so train and test never share a problem whatever seeds or sizes are asked for.
TEST_PER_MILLE = 100
ANSWER_MARK = "####"


@dataclass(frozen=True)
class Problem:
    prompt: str  # the text fed to the model
    completion: str  # the target continuation: worked solution ending with the answer line
    answer: str  # the exact answer string (what extract_answer returns on a correct completion)
    task: str  # "math" or "code"


def split_of(text: str) -> str:
    """The split a problem belongs to, from a stable hash of its canonical text."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:4], "big") % 1000 < TEST_PER_MILLE else "train"


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")


def answer_line(text: str) -> str | None:
    """The rest of the first line that starts with the answer mark, stripped; None if there is none."""
    match = re.search(rf"^{ANSWER_MARK}[ \t]*(.*)$", text, flags=re.MULTILINE)
    return match.group(1).strip() if match else None
