"""A retrain's decision report next to the challenger it registered: `decision.json` (everything)
and `decision.md` (the gate's paired evidence as a table, and why)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.formatting import pct


def write_report(directory: Path, report: dict[str, Any]) -> None:
    (directory / "decision.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    rows = []
    for name, title in (("feedback_holdout", "held-out feedback"), ("test", "test set")):
        e = report["gate"][name]
        rows.append(
            f"| {title} | {e['n']} | {pct(e['champion_accuracy'])} | {pct(e['challenger_accuracy'])} "
            f"| {100 * e['difference']:+.2f} pts ({100 * e['ci_low']:+.2f} to {100 * e['ci_high']:+.2f}) "
            f"| {e['only_champion']} / {e['only_challenger']} | {e['p_better']:.3g} | {e['p_worse']:.3g} |"
        )
    needed = report["gate"]["feedback_holdout"].get("more_feedback_needed")
    fb_counts = report["feedback"]
    md = [
        f"# Retrain decision: {'promoted' if report['promoted'] else 'not promoted'}",
        "",
        f"**Why:** {report['reason']}.",
        "",
        f"Champion {report['champion']}, challenger {report['challenger']}. Paired on the same examples: "
        "difference with its 90% interval; b / c = examples only the champion / only the challenger "
        "gets right; exact McNemar p-values (one-sided).",
        "",
        "| examples | n | champion | challenger | difference (90% CI) | b / c | p better | p worse |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        *(
            [f"More evidence: about {needed} more feedback rows at these rates would decide it.", ""]
            if needed
            else []
        ),
        f"Feedback: {fb_counts['rows_read']} rows read, {fb_counts['usable']} usable "
        f"({fb_counts['train']} trained on, {fb_counts['holdout']} held out), "
        f"{fb_counts['superseded']} superseded, {fb_counts['conflicting_texts']} conflicting texts left out, "
        f"{fb_counts['without_text']} without text. Test margin: {report['test_margin']:.2%}. "
        f"Retrain took {report['retrain_seconds']} s"
        + (
            " (" + ", ".join(f"{step} {sec} s" for step, sec in report["step_seconds"].items()) + ")."
            if report.get("step_seconds")
            else "."
        ),
    ]
    (directory / "decision.md").write_text("\n".join(md) + "\n")
