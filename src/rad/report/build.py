"""Build OUT/report.md and OUT/report.html from whichever of a run's artifacts exist."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rad.report import sections
from rad.report.document import Section, write_report
from rad.report.verdict import verdict_section


@dataclass(frozen=True)
class ReportInputs:
    diagnosis: Path | None = None  # diagnosis.json (diagnosis.png beside it is shown too)
    metrics: Path | None = None  # distillation metrics.jsonl
    evaluation: Path | None = None  # eval.json: {"models": {name: {task: result}}}
    bench: Path | None = None  # bench.json from rad bench
    price_per_hour: float = 2.0  # USD per machine-hour, for the cost section


def _load(path: Path | None):
    if path is None or not Path(path).is_file():
        return None
    text = Path(path).read_text()
    if Path(path).suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def build_report(out_dir: Path, inputs: ReportInputs, title: str = "rad report") -> tuple[Path, Path]:
    evaluation, bench = _load(inputs.evaluation), _load(inputs.bench)
    parts: list[Section] = [verdict_section(evaluation, bench, inputs.price_per_hour)]
    diagnosis = _load(inputs.diagnosis)
    if diagnosis:
        picture = Path(inputs.diagnosis).with_name("diagnosis.png")
        parts.append(sections.diagnosis_section(diagnosis, picture.read_bytes() if picture.is_file() else None))
    metrics = _load(inputs.metrics)
    if metrics:
        parts.append(sections.distillation_section(metrics))
    if evaluation:
        parts.append(sections.accuracy_section(evaluation))
    if bench:
        parts.append(sections.throughput_section(bench))
        if len(bench["models"]) > 1:
            parts.append(sections.cost_section(bench, inputs.price_per_hour))
    return write_report(Path(out_dir), title, parts)
