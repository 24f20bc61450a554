"""`switchboard bench` and `switchboard baseline classical`: the cascade arithmetic, the report
files, and the real entry points on the sample dataset (the few-shot + cascade end to end against
a real server is in test_fewshot.py, next to that server)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from router.cli import app
from serving.llm.pricing import hourly_cost_per_million
from training.comparison.cascade import best_point, sweep
from training.comparison.plots import plot_accuracy_vs_cost, plot_per_intent_f1
from training.comparison.report import BenchReport, fmt_cost, write_report
from training.comparison.run import BenchConfig, limit_test, run_bench
from training.comparison.systems import Hardware, SystemResult
from training.data import load_dataset
from training.metrics import compute_metrics

LABELS = ["a", "b", "c"]
PNG = b"\x89PNG"


def _cascade_inputs() -> dict:
    return {
        "gold_labels": ["a", "b", "c", "a"],
        "tuned_labels": ["a", "c", "c", "b"],  # right, wrong, right, wrong
        "tuned_confidence": np.array([0.99, 0.4, 0.95, 0.6]),
        "fallback_labels": ["a", "b", None, "a"],  # right, right, invalid, right
        "labels": LABELS,
        "fallback": "few-shot x",
        "tuned_cost_per_million": 10.0,
        "fallback_query_costs": [0.001, 0.002, 0.003, 0.004],
    }


def test_cascade_sweep_accuracy_and_cost() -> None:
    result = sweep(**_cascade_inputs(), thresholds=(0.0, 0.5, 0.7, 0.96, 1.0))
    by_t = {p["threshold"]: p for p in result.points}
    assert by_t[0.0]["escalated"] == 0 and by_t[0.0]["accuracy"] == 0.5  # tuned alone
    assert by_t[0.0]["cost_per_million"] == 10.0
    # 0.5: query 1 (conf 0.4) escalated -> right
    assert by_t[0.5]["accuracy"] == 0.75 and by_t[0.5]["escalated"] == 0.25
    assert by_t[0.5]["cost_per_million"] == pytest.approx(10.0 + 0.002 / 4 * 1e6)
    # 0.7: queries 1 and 3 escalated -> all right; the best, and cheaper than escalating more
    assert by_t[0.7]["accuracy"] == 1.0
    assert by_t[0.7]["cost_per_million"] == pytest.approx(10.0 + (0.002 + 0.004) / 4 * 1e6)
    # 0.96: query 2 escalated too, its few-shot answer is invalid -> wrong
    assert by_t[0.96]["accuracy"] == 0.75 and by_t[0.96]["invalid"] == 1
    assert by_t[1.0]["escalated"] == 1.0
    assert result.best is by_t[0.7] and result.cheapest_near_best is by_t[0.7]
    assert result.best_metrics["accuracy"] == 1.0


def test_best_point_breaks_ties_by_cost() -> None:
    points = [
        {"threshold": 0.5, "accuracy": 0.9, "cost_per_million": 30.0},
        {"threshold": 0.7, "accuracy": 0.9, "cost_per_million": 20.0},
        {"threshold": 0.9, "accuracy": 0.8, "cost_per_million": 1.0},
    ]
    assert best_point(points)["threshold"] == 0.7


def test_cascade_without_prices_still_scores() -> None:
    inputs = {**_cascade_inputs(), "fallback_query_costs": None}
    result = sweep(**inputs, thresholds=(0.0, 0.7))
    assert [p["cost_per_million"] for p in result.points] == [None, None]
    assert result.best["threshold"] == 0.7


def test_costs_and_formatting() -> None:
    # 100 queries/s for an hour = 360k queries for $1 -> $2.78 per 1M
    assert hourly_cost_per_million(100.0, 1.0) == pytest.approx(1e6 / 360_000)
    assert [fmt_cost(x) for x in (None, 0, 0.0123, 2.5, 1234.0)] == ["n/a", "$0", "$0.012", "$2.50", "$1,234"]


def _system(name: str, kind: str, probs: np.ndarray, cost: float | None) -> SystemResult:
    metrics = compute_metrics([0, 1, 2, 0], probs, LABELS)
    return SystemResult(name, kind, metrics, throughput_qps=50.0, cost_per_million=cost)  # type: ignore[arg-type]


def test_report_files_from_results(tmp_path: Path) -> None:
    eye = np.eye(3)[[0, 1, 2, 1]]
    systems = [_system("tuned", "tuned", eye, 1.5), _system("tfidf", "classical", eye, None)]
    cascade = sweep(**_cascade_inputs(), thresholds=(0.0, 0.7, 1.0))
    report = BenchReport(
        dataset="toy", n=4, has_oos=False, systems=systems, sweeps=[cascade],
        hardware=Hardware("a CPU, 2 cores, no GPU", 0.1, "test"),
        prices={"file": "p.yaml", "source": "test", "read_on": "today"}, settings={}, created="now",
    )  # fmt: skip
    plot_accuracy_vs_cost(systems, [cascade], tmp_path / "acc.png", title="toy")
    plot_per_intent_f1([(s.name, s.metrics["per_intent"]) for s in systems], tmp_path / "f1.png", title="t")
    md, js = write_report(report, tmp_path)
    assert (tmp_path / "acc.png").read_bytes()[:4] == PNG and (tmp_path / "f1.png").read_bytes()[:4] == PNG
    text = md.read_text()
    assert "| tuned | 75.00% |" in text and "## Cascade: tuned model, escalating to few-shot x" in text
    assert "**0.7**" in text  # the best threshold is marked
    loaded = json.loads(js.read_text())
    assert (
        loaded["systems"][0]["cost_per_million"] == 1.5 and "confusion" not in loaded["systems"][0]["metrics"]
    )
    assert loaded["cascades"][0]["best"]["threshold"] == 0.7


def test_limit_keeps_the_first_test_queries(sample_dir: Path) -> None:
    data = load_dataset(str(sample_dir))
    small = limit_test(data, 7)
    assert small.test is not None and data.test is not None
    assert small.test.texts == data.test.texts[:7] and len(data.test) == 60
    assert limit_test(data, None) is data


def test_bench_classical_only_writes_the_report(sample_dir: Path, tmp_path: Path) -> None:
    report = run_bench(
        BenchConfig(
            dataset=str(sample_dir), output=tmp_path, classical=("tfidf",), hardware_price_per_hour=0.2,
            progress=False, latency_samples=7,
        )
    )  # fmt: skip
    (system,) = report.systems
    assert system.metrics["n"] == 60 and system.throughput_qps and system.training_cost_usd is not None
    assert system.latency_p50_s is not None and 0 < system.latency_p50_s <= (system.latency_p99_s or 0)
    assert system.cost_per_million == pytest.approx(hourly_cost_per_million(system.throughput_qps, 0.2))
    for name in ("report.md", "report.json", "accuracy_vs_cost.png", "per_intent_f1.png"):
        assert (tmp_path / name).is_file(), name
    assert report.hardware.priced_as == "--hardware-price-per-hour"


def test_cli_classical_tfidf(sample_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["baseline", "classical", "-d", str(sample_dir), "--kind", "tfidf", "--json", "-o", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert row["name"].startswith("tfidf") and row["metrics"]["accuracy"] > 0.5  # ten intents: chance 10%
    assert (tmp_path / "classical.json").is_file()


def test_cli_bench_errors(sample_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["bench", "-d", str(sample_dir), "-o", str(tmp_path), "-m", "nope"])
    assert missing.exit_code == 2 and "model directory not found" in missing.output
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    no_key = runner.invoke(app, ["bench", "-d", str(sample_dir), "-o", str(tmp_path), "--fewshot-model", "x"])
    assert no_key.exit_code == 2 and "no API key" in no_key.output
    bad_prices = runner.invoke(
        app, ["bench", "-d", str(sample_dir), "-o", str(tmp_path), "--prices", str(tmp_path / "no.yaml")]
    )
    assert bad_prices.exit_code == 2 and "cannot read price file" in bad_prices.output


# ---------------------------------------------------------------- slow: a tuned model


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["transformers", "vllm"])
def test_bench_tuned_model(engine: str, minilm_model: Path, sample_dir: Path, tmp_path: Path) -> None:
    """`switchboard bench` as a user runs it (a subprocess: vLLM spawns workers of its own)."""
    done = subprocess.run(
        [sys.executable, "-m", "router.cli", "bench", "-d", str(sample_dir), "-o", str(tmp_path),
         "-m", str(minilm_model), "--engine", engine, "--classical", "tfidf", "--latency-samples", "10",
         "--no-progress"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    tuned = report["systems"][0]
    assert tuned["kind"] == "tuned" and tuned["metrics"]["n"] == 60
    trained = json.loads((minilm_model / "metrics.json").read_text())
    # the same model, scored on the same test split as at training time (vLLM: argmax agreement)
    assert tuned["metrics"]["accuracy"] == pytest.approx(trained["test"]["accuracy"], abs=2 / 60)
    assert tuned["throughput_qps"] > 0 and 0 < tuned["latency_p50_s"] <= tuned["latency_p99_s"]
    assert tuned["details"]["latency_samples"] == 10
    assert tuned["training_seconds"] == trained["training"]["train_seconds"]
    price = report["hardware"]["price_per_hour"]
    assert tuned["training_cost_usd"] == pytest.approx(tuned["training_seconds"] / 3600 * price)
    assert tuned["cost_per_million"] == pytest.approx(hourly_cost_per_million(tuned["throughput_qps"], price))
    assert report["cascades"] == []  # no few-shot model, no cascade
    assert "| tuned all-MiniLM-L6-v2 (full) |" in (tmp_path / "report.md").read_text()


def test_comparison_markdown_keeps_published_figures_apart() -> None:
    """benchmarks/compare.py: measured rows in one table, the published few-shot figures in
    their own, marked table, and only when no few-shot model was measured."""
    from benchmarks.compare import to_markdown

    eye = np.eye(3)[[0, 1, 2, 1]]
    tuned = _system("tuned x", "tuned", eye, 1.5)
    tuned.notes = ["vLLM offline classify (float32)"]

    def results(fewshot_models: list[str]) -> dict:
        report = {"n": 4, "fewshot_models": fewshot_models, "systems_objects": [tuned], "sweep_objects": []}
        return {
            "command": "python benchmarks/compare.py",
            "machine": {"cpu": "a CPU", "cores": 2, "torch_threads": 2, "gpu": None, "date": "today",
                        "load_average_1min": [0.1, 0.2]},
            "hardware": {"price_per_hour": 0.1, "priced_as": "test"},
            "datasets": [{"dataset": "banking77", "has_oos": False, "pictures": {}, "report": report}],
        }  # fmt: skip

    text = to_markdown(results([]))
    measured, published = text.split("**Published, not measured here**")
    assert "| tuned x | 75.00% |" in measured and "83.1%" not in measured
    assert "| GPT-4 | 3-shot | 83.1% |" in published and "arxiv.org/abs/2311.06102" in published
    assert "- tuned x: vLLM offline classify (float32)" in measured
    assert "Published" not in to_markdown(results(["gpt-4o-mini"]))
