"""Held-out English text from a real source: Python's documentation, as Debian's python3.11-doc package installs
it (the reStructuredText sources beside the HTML; the Python Software Foundation's licence allows this use). rad
reads it where the package put it, ships none of it, and downloads nothing.

Each page is a document, cleaned of markup that is not prose (directives, labels, roles, code blocks). Pages are
split by a stable hash of their path: one in ten is for evaluation, the rest for distillation, so the two parts
never share a document, whatever size either is asked for.
"""

from __future__ import annotations

import glob
import hashlib
import re
from pathlib import Path

from rad.errors import RadError

SOURCES = "/usr/share/doc/python3*/html/_sources"
PACKAGE = "python3.11-doc"
NAME = "python-docs"  # how specs name it: ppl:python-docs, text:python-docs
SPLITS = ("distill", "eval")
EVAL_PER_MILLE = 100
MIN_CHARS = 400  # shorter pages are mostly tables of contents

DIRECTIVE = re.compile(r"^\.\. [\w:|-]+::.*$|^\.\. _[^:]+:$|^\.\. \|.*$|^\.\. .*$")
ROLE = re.compile(r":[\w:+-]+:`(?:[^`<]*<)?([^`>]+)>?`")
UNDERLINE = re.compile(r"^([=\-~^*#\"'`+_.:])\1{3,}$")


def source_dir() -> Path:
    found = sorted(glob.glob(SOURCES))
    if not found:
        raise RadError(f"the text set '{NAME}' is Python's documentation from Debian's {PACKAGE} package, which is "
                       f"not installed: apt-get install {PACKAGE}")
    return Path(found[-1])


def split_of(relative: str) -> str:
    digest = hashlib.sha256(relative.encode("utf-8")).digest()
    return "eval" if int.from_bytes(digest[:4], "big") % 1000 < EVAL_PER_MILLE else "distill"


def clean(text: str) -> str:
    """Prose paragraphs of an RST page: no directives or their indented bodies, no code blocks, roles as their text."""
    kept, skipping = [], False
    for line in text.splitlines():
        stripped = line.strip()
        if skipping and (not stripped or line.startswith((" ", "\t"))):
            continue  # the body of a directive or a literal block, until the text comes back to the margin
        skipping = False
        if DIRECTIVE.match(stripped):
            skipping = True
            continue
        if UNDERLINE.match(stripped):
            continue
        if stripped.endswith("::"):  # a paragraph that introduces a literal block
            line, skipping = line.rstrip()[:-1], True
        kept.append(line)
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", "\n".join(kept))]  # a role may span lines
    paragraphs = [ROLE.sub(r"\1", p).replace("``", "").replace("**", "") for p in paragraphs]
    return "\n\n".join(p for p in paragraphs if len(p.split()) >= 8)


def documents(split: str) -> list[tuple[str, str]]:
    """(page path, cleaned text) of every page of the split, in path order."""
    if split not in SPLITS:
        raise RadError(f"unknown split '{split}' of the text set; choose one of {', '.join(SPLITS)}")
    root = source_dir()
    pages = []
    for path in sorted(root.rglob("*.rst.txt")):
        relative = str(path.relative_to(root))
        if split_of(relative) == split:
            text = clean(path.read_text(encoding="utf-8", errors="replace"))
            if len(text) >= MIN_CHARS:
                pages.append((relative, text))
    return pages
