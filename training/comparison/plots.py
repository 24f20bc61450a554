"""The benchmark's two pictures: accuracy against cost, and per-intent F1 side by side.

Bare matplotlib `Figure` + Agg canvas (no pyplot global state), as in `training.report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from training.comparison.cascade import CascadeSweep
from training.comparison.systems import SystemResult

__all__ = ["plot_accuracy_vs_cost", "plot_per_intent_f1"]

MARKERS = {"tuned": "*", "classical": "o", "fewshot": "s", "cascade": "D"}
#: Up to this many intents every heatmap cell carries its value.
ANNOTATE_MAX = 30


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110, bbox_inches="tight", pad_inches=0.2)
    return path


def plot_accuracy_vs_cost(
    systems: Sequence[SystemResult], sweeps: Sequence[CascadeSweep], path: Path, *, title: str
) -> Path:
    """Accuracy (y) against dollars per 1M queries (x, log scale); each cascade as a curve over
    its thresholds with the best point ringed. Systems without a cost are listed, not drawn."""
    fig = Figure(figsize=(8.5, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = iter(f"C{i}" for i in range(10))
    missing = []
    for system in systems:
        if system.cost_per_million is None or system.cost_per_million <= 0:
            missing.append(system.name)
            continue
        ax.scatter(
            system.cost_per_million,
            100 * system.metrics["accuracy"],
            marker=MARKERS.get(system.kind, "o"),
            s=160 if system.kind == "tuned" else 70,
            color=next(colours),
            label=system.name,
            zorder=3,
        )
    for sweep in sweeps:
        points = [p for p in sweep.points if p["cost_per_million"]]
        if not points:
            continue
        colour = next(colours)
        ax.plot(
            [p["cost_per_million"] for p in points],
            [100 * p["accuracy"] for p in points],
            marker=".",
            color=colour,
            alpha=0.8,
            label=f"cascade {sweep.tuned} -> {sweep.fallback}",
        )
        best = sweep.best
        if best["cost_per_million"]:
            ax.scatter(
                best["cost_per_million"], 100 * best["accuracy"], s=220, facecolors="none",
                edgecolors=colour, linewidths=2, zorder=4,
            )  # fmt: skip
            ax.annotate(
                f"best: threshold {best['threshold']:g}\n{100 * best['escalated']:.0f}% escalated",
                (best["cost_per_million"], 100 * best["accuracy"]),
                textcoords="offset points", xytext=(8, -24), fontsize=8, color=colour,
            )  # fmt: skip
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"${x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a narrow log range collide
    ax.set_xlabel("cost per 1M queries (USD, log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    if ax.has_data():  # below the axes: inside, it hides the points it names
        fig.legend(fontsize=8, loc="outside lower center", ncols=2)
    if missing:
        ax.set_xlabel(ax.get_xlabel() + "\nno cost, not drawn: " + "; ".join(missing))
    return _save(fig, path)


def plot_per_intent_f1(
    columns: Sequence[tuple[str, dict[str, dict[str, float]]]], path: Path, *, title: str
) -> Path:
    """Heatmap: one row per intent (lowest F1 of the first column first), one column per system.

    `columns` holds (system name, metrics["per_intent"]). A heatmap rather than grouped bars so
    that 150 intents x 5 systems stays readable.
    """
    if not columns:
        raise ValueError("no systems to plot")
    first = columns[0][1]
    intents = sorted(
        (name for name, s in first.items() if s.get("support", 1) > 0),
        key=lambda name: (first[name]["f1"], name),
    )
    matrix = np.array([[per.get(i, {}).get("f1", np.nan) for _, per in columns] for i in intents])
    n_rows, n_cols = matrix.shape
    height = float(np.clip(1.5 + 0.16 * n_rows, 4.0, 30.0))
    fig = Figure(figsize=(3.0 + 1.6 * n_cols, height), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, aspect="auto", cmap="RdYlGn", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02, label="F1")
    names = [name for name, _ in columns]
    ax.set_xticks(np.arange(n_cols), names, rotation=30, ha="left", rotation_mode="anchor", fontsize=8)
    ax.set_yticks(np.arange(n_rows), intents, fontsize=7 if n_rows > 40 else 9)
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    if n_rows <= ANNOTATE_MAX:
        for r in range(n_rows):
            for c in range(n_cols):
                if not np.isnan(matrix[r, c]):
                    ax.text(c, r, f"{matrix[r, c]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_title(f"{title}\n(intents by F1 of {columns[0][0]}, lowest first)", fontsize=10)
    return _save(fig, path)
