"""`report.md` and `report.json` of a benchmark run; the markdown tables are reused by
`benchmarks/compare.py` for docs/BENCHMARKS.md."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.comparison.cascade import CascadeSweep
from training.comparison.systems import Hardware, SystemResult
from training.formatting import pct

__all__ = ["BenchReport", "cascade_table", "fmt_cost", "report_markdown", "systems_table", "write_report"]


@dataclass
class BenchReport:
    dataset: str
    n: int  # test queries every system answered
    has_oos: bool
    systems: list[SystemResult]
    sweeps: list[CascadeSweep]
    hardware: Hardware
    prices: dict[str, Any]  # file, source, read_on
    settings: dict[str, Any]
    created: str
    pictures: dict[str, str] = field(default_factory=dict)  # name -> file name in the output dir

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "n": self.n,
            "created": self.created,
            "hardware": self.hardware.__dict__,
            "prices": self.prices,
            "settings": self.settings,
            "systems": [s.to_json() for s in self.systems],
            "cascades": [
                {k: v for k, v in sweep.__dict__.items() if k != "best_metrics"} for sweep in self.sweeps
            ],
            "pictures": self.pictures,
        }


def _latency(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds:.2f} s" if seconds >= 1 else f"{1000 * seconds:.1f} ms"


def _rate(qps: float | None) -> str:
    if qps is None:
        return "n/a"
    return f"{qps:.0f}/s" if qps >= 10 else f"{qps:.2f}/s"


def fmt_cost(dollars: float | None) -> str:
    """Dollars with enough digits to tell small costs apart."""
    if dollars is None:
        return "n/a"
    if dollars == 0:
        return "$0"
    if dollars >= 100:
        return f"${dollars:,.0f}"
    if dollars >= 1:
        return f"${dollars:.2f}"
    return f"${dollars:.2g}" if dollars >= 0.001 else f"${dollars:.1e}"


def systems_table(systems: list[SystemResult], *, has_oos: bool) -> str:
    head = ["system", "accuracy", "macro-F1"]
    if has_oos:
        head += ["in-scope acc.", "OOS recall"]
    head += ["invalid", "p50 latency", "p99 latency", "throughput", "cost / 1M queries", "one-off training"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" + " ---: |" * (len(head) - 1)]
    for s in systems:
        m = s.metrics
        cells = [s.name, pct(m["accuracy"]), pct(m["macro_f1"])]
        if has_oos:
            oos = m.get("oos") or {}
            cells += [pct(m.get("in_scope_accuracy")), pct(oos.get("recall"))]
        cells += [
            str(m["invalid"]) if "invalid" in m else "-",
            _latency(s.latency_p50_s),
            _latency(s.latency_p99_s),
            _rate(s.throughput_qps),
            fmt_cost(s.cost_per_million),
            fmt_cost(s.training_cost_usd),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cascade_table(sweep: CascadeSweep, *, has_oos: bool) -> str:
    head = ["threshold", "escalated", "accuracy", "macro-F1"]
    head += ["OOS recall"] if has_oos else []
    head += ["cost / 1M queries"]
    lines = ["| " + " | ".join(head) + " |", "|" + " ---: |" * len(head)]
    for p in sweep.points:
        mark = "**" if p is sweep.best else ""
        cells = [f"{p['threshold']:g}", pct(p["escalated"]), pct(p["accuracy"]), pct(p["macro_f1"])]
        cells += [pct(p.get("oos_recall"))] if has_oos else []
        cells += [fmt_cost(p["cost_per_million"])]
        lines.append("| " + " | ".join(f"{mark}{c}{mark}" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _operating_point(sweep: CascadeSweep) -> str:
    best, cheap = sweep.best, sweep.cheapest_near_best
    text = (
        f"Best operating point: threshold {best['threshold']:g} ({pct(best['escalated'])} escalated): "
        f"accuracy {pct(best['accuracy'])} at {fmt_cost(best['cost_per_million'])} per 1M queries."
    )
    if cheap is not best:
        text += (
            f" Cheapest within 0.5 points of it: threshold {cheap['threshold']:g} "
            f"({pct(cheap['escalated'])} escalated), {pct(cheap['accuracy'])} at "
            f"{fmt_cost(cheap['cost_per_million'])}."
        )
    if sweep.fallback_model:  # the same rule runs in the router (docs/ROUTER.md, cascade mode)
        text += (
            f" To serve a point, set the router's `escalation_model: {sweep.fallback_model}` and "
            f"`escalation_threshold: {cheap['threshold']:g}` (or the best point's)."
        )
    return text


def report_markdown(report: BenchReport) -> str:
    hw = report.hardware
    lines = [
        f"# Benchmark: {report.dataset}",
        "",
        f"{report.n} test queries, the same for every system; {report.created}.",
        "",
        systems_table(report.systems, has_oos=report.has_oos),
        "**How the columns are measured.** Accuracy and F1: on the queries above (an invalid "
        "few-shot answer counts as wrong). Tuned model and classical baselines: throughput measured "
        f"in this run on {hw.measured_on}; cost per 1M queries = 1M / throughput x "
        f"${hw.price_per_hour:g}/hour ({hw.priced_as}), at full utilisation; one-off training = "
        "training seconds x the same hourly price. Few-shot: cost from the token usage of every "
        f"answer x the prices in `{Path(report.prices.get('file', '')).name}` (read on "
        f"{report.prices.get('read_on') or 'n/a'}; {report.prices.get('source') or 'no source given'}); "
        "latency per call as the client saw it.",
        "",
    ]
    for s in report.systems:
        if s.notes:
            lines.append(f"- {s.name}: " + "; ".join(s.notes))
    lines.append("")
    for sweep in report.sweeps:
        lines += [
            f"## Cascade: {sweep.tuned}, escalating to {sweep.fallback}",
            "",
            "The tuned model answers when its top-1 probability is at least the threshold; the rest "
            "goes to the few-shot model. Cost = the tuned model on every query + the few-shot "
            "usage of the escalated ones.",
            "",
            cascade_table(sweep, has_oos=report.has_oos),
            _operating_point(sweep),
            "",
        ]
    if report.pictures:
        lines += ["## Pictures", ""]
        lines += [f"![{name}]({file})" for name, file in report.pictures.items()]
        lines.append("")
    return "\n".join(lines)


def write_report(report: BenchReport, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / "report.md", out_dir / "report.json"
    md.write_text(report_markdown(report))
    js.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return md, js
