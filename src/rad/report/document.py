"""A report as a list of sections of blocks (text, table, figure), rendered to Markdown (figures as
PNG files beside it) and to one self-contained HTML file (figures embedded as data URIs)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from rad.files import atomic_write_text

FIGURE_DIR = "report_files"


@dataclass
class Figure:
    name: str  # file stem, unique in the report
    png: bytes
    caption: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)  # str paragraphs, Tables and Figures, in order


def markdown(title: str, sections: list[Section]) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Figure):
                lines += [f"![{block.caption}]({FIGURE_DIR}/{block.name}.png)", "", f"*{block.caption}*", ""]
            elif isinstance(block, Table):
                lines += ["| " + " | ".join(block.headers) + " |", "|" + "---|" * len(block.headers)]
                lines += ["| " + " | ".join(row) + " |" for row in block.rows] + [""]
            else:
                lines += [block, ""]
    return "\n".join(lines)


STYLE = """body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}figure{margin:1em 0}
img{max-width:100%;height:auto}figcaption{color:#555;font-size:0.9em}"""


def html_page(title: str, sections: list[Section]) -> str:
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, Figure):
                data = base64.b64encode(block.png).decode("ascii")
                parts.append(f"<figure><img alt='{html.escape(block.caption)}' src='data:image/png;base64,{data}'>"
                             f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
            elif isinstance(block, Table):
                head = "".join(f"<th>{html.escape(h)}</th>" for h in block.headers)
                body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows)
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            else:
                parts.append(f"<p>{html.escape(block)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(out_dir: Path, title: str, sections: list[Section]) -> tuple[Path, Path]:
    """Write OUT/report.md (+ OUT/report_files/*.png) and OUT/report.html; return both paths."""
    figure_dir = out_dir / FIGURE_DIR
    figure_dir.mkdir(parents=True, exist_ok=True)
    for section in sections:
        for block in section.blocks:
            if isinstance(block, Figure):
                (figure_dir / f"{block.name}.png").write_bytes(block.png)
    md = atomic_write_text(out_dir / "report.md", markdown(title, sections))
    page = atomic_write_text(out_dir / "report.html", html_page(title, sections))
    return md, page
