"""Pictures and tables for evaluation metrics (the dicts made by ``training.metrics``).

Plots draw on a bare matplotlib ``Figure`` with the Agg canvas: headless, and no
pyplot global state, so it is safe in servers, tests and threads. Tables are ``rich``
tables for the terminal, plus a markdown table for model cards and docs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize, PowerNorm
from matplotlib.figure import Figure
from rich.table import Table

from training.formatting import pct

__all__ = [
    "headline_rows",
    "metrics_markdown",
    "metrics_table",
    "per_intent_table",
    "plot_confusion_matrix",
]

#: Up to this many labels each cell is annotated with its value.
ANNOTATE_MAX_LABELS = 30
#: Up to this many labels every tick is labelled with the intent name.
TICK_LABELS_MAX = 60
#: Figure side in inches: grows with the label count, between these bounds.
MIN_FIG_INCHES = 6.0
MAX_FIG_INCHES = 16.0


def _format_ece(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def headline_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """Headline numbers as (name, formatted value) pairs, for table and markdown."""
    rows: list[tuple[str, str]] = [
        ("n", str(metrics["n"])),
        ("accuracy", pct(metrics["accuracy"], 1)),
        ("macro-F1", pct(metrics["macro_f1"], 1)),
        ("weighted-F1", pct(metrics["weighted_f1"], 1)),
        ("ECE", _format_ece(metrics["ece"])),
    ]
    if "mean_confidence" in metrics:
        rows.append(("mean confidence", pct(metrics["mean_confidence"], 1)))
    if "in_scope_accuracy" in metrics:
        rows.append(("in-scope accuracy", pct(metrics["in_scope_accuracy"], 1)))
    if "oos" in metrics:
        rows.append(("OOS precision", pct(metrics["oos"]["precision"], 1)))
        rows.append(("OOS recall", pct(metrics["oos"]["recall"], 1)))
    return rows


def metrics_table(metrics: dict[str, Any], *, title: str) -> Table:
    """A two-column rich table of the headline numbers."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in headline_rows(metrics):
        table.add_row(name, value)
    return table


def metrics_markdown(metrics: dict[str, Any]) -> str:
    """The headline numbers as a markdown table (ends with a newline)."""
    lines = ["| metric | value |", "| --- | ---: |"]
    lines += [f"| {name} | {value} |" for name, value in headline_rows(metrics)]
    return "\n".join(lines) + "\n"


def per_intent_table(metrics: dict[str, Any], *, worst: int | None = 10) -> Table:
    """The intents with the lowest F1 (all of them when ``worst`` is None).

    Ranked by F1, then recall, then name. Intents with no examples in the evaluated
    split (support 0) have no meaningful recall and are left out; the caption says how
    many.
    """
    per_intent: dict[str, dict[str, Any]] = metrics["per_intent"]
    evaluated = [(name, s) for name, s in per_intent.items() if s["support"] > 0]
    evaluated.sort(key=lambda item: (item[1]["f1"], item[1]["recall"], item[0]))
    shown = evaluated if worst is None else evaluated[: max(worst, 0)]

    if worst is None:
        title = f"Per-intent scores ({len(shown)} intents, lowest F1 first)"
    else:
        title = f"Lowest-F1 intents ({len(shown)} of {len(evaluated)})"
    table = Table(title=title)
    table.add_column("intent")
    for col in ("precision", "recall", "F1", "support"):
        table.add_column(col, justify="right")
    for name, s in shown:
        table.add_row(
            name,
            pct(s["precision"], 1),
            pct(s["recall"], 1),
            pct(s["f1"], 1),
            str(s["support"]),
        )
    skipped = len(per_intent) - len(evaluated)
    if skipped:
        table.caption = f"{skipped} intent(s) with no examples not shown"
    return table


def _row_normalised(confusion: Sequence[Sequence[int]], n_labels: int) -> np.ndarray:
    counts = np.asarray(confusion, dtype=np.float64)
    if counts.shape != (n_labels, n_labels):
        raise ValueError(f"confusion matrix has shape {counts.shape}, expected ({n_labels}, {n_labels})")
    row_sums = counts.sum(axis=1, keepdims=True)
    # Rows with no examples stay all zero instead of 0/0.
    return np.divide(counts, row_sums, out=np.zeros_like(counts), where=row_sums > 0)


def plot_confusion_matrix(metrics: dict[str, Any], labels: Sequence[str], path: Path, *, title: str) -> Path:
    """Write the row-normalised (recall) confusion matrix as a PNG and return its path.

    Up to ``ANNOTATE_MAX_LABELS`` labels every cell carries its value; up to
    ``TICK_LABELS_MAX`` the axes name every intent; beyond that the axes show class ids
    every few steps (the names would be unreadable). Without annotations the colour
    scale is square-root, so small confusions stay visible. The figure grows with the
    label count, capped at ``MAX_FIG_INCHES``.
    """
    if "confusion" not in metrics:
        raise ValueError("metrics has no 'confusion' entry (omitted for very many labels)")
    n = len(labels)
    matrix = _row_normalised(metrics["confusion"], n)

    # 1. Figure sized for the label count.
    side = float(np.clip(3.0 + 0.25 * n, MIN_FIG_INCHES, MAX_FIG_INCHES))
    fig = Figure(figsize=(side + 1.5, side), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()

    # 2. The matrix and its colour scale: square-root scale when cells carry no numbers,
    #    so that small confusions (a few percent) stay visible next to the diagonal.
    annotate = n <= ANNOTATE_MAX_LABELS
    norm = Normalize(0.0, 1.0) if annotate else PowerNorm(0.5, 0.0, 1.0)
    image = ax.imshow(matrix, cmap="Blues", norm=norm, interpolation="nearest")
    scale = "" if annotate else " (sqrt scale)"
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label=f"fraction of true class{scale}")

    # 3. Axes: names when readable, sparse class ids otherwise.
    if n <= TICK_LABELS_MAX:
        fontsize = 9 if n <= ANNOTATE_MAX_LABELS else 7
        ticks = np.arange(n)
        ax.set_xticks(ticks, [str(label) for label in labels], rotation=90, fontsize=fontsize)
        ax.set_yticks(ticks, [str(label) for label in labels], fontsize=fontsize)
        ax.set_xlabel("predicted intent")
        ax.set_ylabel("true intent")
    else:
        step = 10 if n <= 200 else 25
        ticks = np.arange(0, n, step)
        ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=8)
        ax.set_yticks(ticks, [str(t) for t in ticks], fontsize=8)
        ax.set_xlabel("predicted intent (class id)")
        ax.set_ylabel("true intent (class id)")

    # 4. Cell values for small matrices (white text on dark cells).
    if annotate:
        fontsize = 9 if n <= 12 else 6
        for i in range(n):
            for j in range(n):
                value = matrix[i, j]
                if value == 0.0 and i != j:
                    continue
                ax.text(
                    j,
                    i,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=fontsize,
                    color="white" if value > 0.5 else "black",
                )

    ax.set_title(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # bbox_inches="tight": long intent names never get clipped at the figure edge.
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight", pad_inches=0.2)
    return path
