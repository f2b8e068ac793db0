"""Every `rad` command line the README and docs/ show (in ```bash blocks) parses with the real parser and makes
a valid config, so that a documented command cannot drift from the flags."""

import re
import shlex
from pathlib import Path

import pytest

from rad.app.cli import parse

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RAD = re.compile(r'^(?:.*\s)?(?:rad|"\$\(command -v rad\)")\s+(.*)$')  # also `torchrun ... "$(command -v rad)" distill`


def bash_lines(text: str) -> list[str]:
    """The lines of every ```bash block, continuation lines (a trailing backslash) joined."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        lines += block.replace("\\\n", " ").splitlines()
    return lines


def rad_commands() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for line in bash_lines(page.read_text()):
            for command in line.split("&&"):
                match = RAD.match(command.strip())
                if match and not command.strip().startswith(("#", "pip", "python")):
                    found.append((page.name, match.group(1)))
    return found


def test_the_pages_show_commands():
    pages = {page for page, _ in rad_commands()}
    assert "README.md" in pages and len(pages) >= 6  # the pattern finds what the pages show


@pytest.mark.parametrize("page, command", rad_commands())
def test_a_shown_command_parses(page, command):
    # shlex knows no $'...' quoting; a plain quote keeps such an argument one word, which is all parsing needs.
    argv = shlex.split(command.replace("$'", "'"))
    parse(argv)  # raises RadError (a refused flag or value) or SystemExit (--help) on a line that is wrong
