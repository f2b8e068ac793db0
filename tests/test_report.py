"""The report: sections from artifacts, cost arithmetic, and the HTML page in a real headless browser."""

import json

import pytest

from rad.report.build import ReportInputs, build_report
from rad.report.sections import cost_per_million
from report_browser import CHROMIUM, DRIVER, open_page


def bench_point(context, tps, state):
    return {"context": context, "batch": 1, "decode_tokens_per_s": tps, "ttft_s": 0.01,
            "weight_bytes": 1000, "state_bytes": state, "memory_bytes": 1000 + state}


@pytest.fixture
def run_dir(tmp_path):
    bench = {"device": "cpu", "dtype": "float32", "new_tokens": 8, "reps": 3, "models": [
        {"model": "teacher", "points": [bench_point(256, 100.0, 4096), bench_point(1024, 50.0, 16384)]},
        {"model": "hybrid", "points": [bench_point(256, 120.0, 2048), bench_point(1024, 80.0, 8192)]},
    ]}
    evaluation = {"models": {
        "teacher": {"math": {"accuracy": 0.8, "correct": 160, "n": 200}},
        "hybrid": {"math": {"accuracy": 0.76, "correct": 152, "n": 200}},
    }}
    metrics = [{"step": s, "kl": 1.0 / s, "loss": 1.2 / s} for s in range(1, 21)]
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    (tmp_path / "eval.json").write_text(json.dumps(evaluation))
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return tmp_path


def build(run_dir):
    inputs = ReportInputs(metrics=run_dir / "metrics.jsonl", evaluation=run_dir / "eval.json",
                          bench=run_dir / "bench.json", price_per_hour=3.6)
    return build_report(run_dir, inputs)


def test_cost_per_million_tokens():
    # $3.60 an hour is $0.001 a second; at 1,000 tokens/s a million tokens take 1,000 s.
    assert cost_per_million(1000.0, 3.6) == pytest.approx(1.0)


def test_markdown_has_every_section_and_its_figures(run_dir):
    md, _ = build(run_dir)
    text = md.read_text()
    for title in ("## Distillation", "## Accuracy: teacher vs hybrid", "## Decode throughput and memory", "## Cost"):
        assert title in text
    assert "| math | hybrid | 76.0% | 152/200 | 95.0% |" in text
    # teacher 50 tok/s vs hybrid 80 tok/s at $3.60/h: $20.00 vs $12.50 per million tokens, 37.5% cheaper
    assert "| 1024 | 1 | 50.0 | 80.0 | $20.00 | $12.50 | +37.5% |" in text
    for name in ("distillation", "accuracy", "throughput"):
        assert (run_dir / "report_files" / f"{name}.png").stat().st_size > 1000


def test_empty_run_still_gives_a_page(tmp_path):
    md, html = build_report(tmp_path, ReportInputs())
    assert "No evaluation or benchmark has been written yet" in md.read_text() and html.is_file()


def test_the_verdict_comes_first_and_says_where_the_hybrid_pays(run_dir):
    """Hybrid 1.2x and 1.6x the teacher at 256 and 1024 tokens with 95% of its math: it pays at both."""
    bench = json.loads((run_dir / "bench.json").read_text())
    bench["machine"] = {"model": "Test CPU 9000", "capability": "AVX2", "native_bf16": False, "cores": 2,
                        "threads": 1, "dtype": "float32", "device": "cpu", "torch": "2.13.0", "date": "2026-12-07"}
    (run_dir / "bench.json").write_text(json.dumps(bench))
    text = build(run_dir)[0].read_text()
    assert text.index("## Verdict") < text.index("## Distillation")
    assert "math 80.0% -> 76.0% (95%)" in text and "| 1024 | 1 | 1.60x | 0.53 | +38% |" in text
    assert "It pays on this machine at context 256 (batch 1), 1024 (batch 1)" in text
    assert "Measured on: Test CPU 9000 (AVX2, no bf16), 1 threads, float32" in text
    evaluation = json.loads((run_dir / "eval.json").read_text())
    evaluation["models"]["hybrid"]["math"]["accuracy"] = 0.6  # 75% of the teacher: below the bar
    (run_dir / "eval.json").write_text(json.dumps(evaluation))
    assert "It does not pay on this machine yet: it keeps less than 95%" in build(run_dir)[0].read_text()


@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")
def test_html_opens_in_headless_chromium_with_every_figure_shown(run_dir):
    _, html = build(run_dir)
    (run_dir / "report_files").rename(run_dir / "moved")  # the page must not depend on files beside it
    errors, images = open_page(html)
    assert errors == []
    assert len(images) == 3
    for natural_w, natural_h, shown_w, shown_h in images:
        assert natural_w > 0 and natural_h > 0 and shown_w > 0 and shown_h > 0
