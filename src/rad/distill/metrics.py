"""Per-step metrics: one JSON line per optimizer step in OUT/metrics.jsonl, optionally TensorBoard too.

A resumed run first cuts metrics.jsonl back to the lines its checkpoint had seen, so the file never
holds the same step twice (the steps a killed run did after its last checkpoint are done again).
"""

from __future__ import annotations

import json
from pathlib import Path

from rad.errors import RadError


class MetricsLog:
    def __init__(self, path: Path, keep_lines: int, tensorboard: bool):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = path.read_text().splitlines(keepends=True) if path.is_file() else []
        path.write_text("".join(lines[:keep_lines]))
        self.lines = min(keep_lines, len(lines))
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise RadError("--tensorboard needs the tensorboard package: pip install 'rad[tensorboard]'") from None
            self.writer = SummaryWriter(str(path.parent / "tensorboard"))

    def write(self, record: dict) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.lines += 1
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, float):
                    self.writer.add_scalar(f"distill/{key}", value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
