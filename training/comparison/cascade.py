"""Cascade: the tuned model answers when its top-1 probability reaches a threshold, the rest
is escalated to a few-shot LLM.

Computed from answers both systems already gave for every test query, so a sweep over many
thresholds costs no extra call. The cost of a threshold is what it would really spend: every
query goes through the tuned model (its cost per query), and the escalated ones add the few-shot
cost *of those queries* (their own token usage, not an average).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.baselines.fewshot import metrics_from_predictions

__all__ = ["DEFAULT_THRESHOLDS", "CascadeSweep", "best_point", "sweep"]

DEFAULT_THRESHOLDS: tuple[float, ...] = (
    0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 1.0,
)  # fmt: skip
#: The cheapest point within this much accuracy of the best is reported too.
TOLERANCE = 0.005


@dataclass
class CascadeSweep:
    fallback: str  # the few-shot system's name
    points: list[dict[str, Any]]  # threshold, escalated, accuracy, macro_f1, ..., cost_per_million
    best: dict[str, Any]  # highest accuracy, the cheaper one on a tie
    cheapest_near_best: dict[str, Any]  # cheapest within TOLERANCE of the best accuracy
    best_metrics: dict[str, Any]  # full metrics at `best` (per-intent F1 for the plots)
    fallback_model: str | None = None  # the model name the router's escalation_model takes
    tuned: str = "tuned model"  # the tuned system's name (a bench may compare several)


def _point(
    threshold: float,
    escalate: np.ndarray,
    gold: list[int],
    pred: list[int | None],
    labels: list[str],
    tuned_cpm: float | None,
    fallback_costs: np.ndarray | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    metrics = metrics_from_predictions(gold, pred, labels)
    cost = None
    if tuned_cpm is not None and fallback_costs is not None:
        cost = tuned_cpm + float(fallback_costs[escalate].sum()) / len(gold) * 1_000_000
    point = {
        "threshold": threshold,
        "escalated": float(escalate.mean()),
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "invalid": metrics["invalid"],
        "cost_per_million": cost,
    }
    if "oos" in metrics:
        point["oos_recall"] = metrics["oos"]["recall"]
        point["in_scope_accuracy"] = metrics["in_scope_accuracy"]
    return point, metrics


def best_point(points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Highest accuracy; on a tie the cheaper (then the lower threshold)."""

    def key(p: dict[str, Any]) -> tuple[float, float, float]:
        cost = p["cost_per_million"]
        return (-p["accuracy"], cost if cost is not None else 0.0, p["threshold"])

    return min(points, key=key)


def sweep(
    gold_labels: Sequence[str],
    tuned_labels: Sequence[str],
    tuned_confidence: np.ndarray,
    fallback_labels: Sequence[str | None],
    labels: Sequence[str],
    *,
    fallback: str,
    tuned_cost_per_million: float | None,
    fallback_query_costs: Sequence[float] | None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    fallback_model: str | None = None,
    tuned_name: str = "tuned model",
) -> CascadeSweep:
    """Accuracy and cost of the cascade at each threshold (escalate when confidence < threshold).

    `fallback_labels[i]` is None where the few-shot answer was invalid: an escalated query with
    an invalid answer is wrong, as it is for the few-shot model alone.
    """
    ids = {label: i for i, label in enumerate(labels)}
    gold = [ids[g] for g in gold_labels]
    tuned = np.array([ids[t] for t in tuned_labels])
    fall = [None if f is None else ids[f] for f in fallback_labels]
    conf = np.asarray(tuned_confidence, dtype=np.float64)
    costs = None if fallback_query_costs is None else np.asarray(fallback_query_costs, dtype=np.float64)
    if not len(gold) == len(tuned) == len(fall) == len(conf):
        raise ValueError("gold, tuned, confidence and fallback answers differ in length")

    points, all_metrics = [], []
    for threshold in thresholds:
        escalate = conf < threshold
        pred = [fall[i] if escalate[i] else int(tuned[i]) for i in range(len(gold))]
        point, metrics = _point(
            float(threshold), escalate, gold, pred, list(labels), tuned_cost_per_million, costs
        )
        points.append(point)
        all_metrics.append(metrics)
    best = best_point(points)
    near = [p for p in points if p["accuracy"] >= best["accuracy"] - TOLERANCE]
    cheapest = min(near, key=lambda p: (p["cost_per_million"] or 0.0, -p["accuracy"], p["threshold"]))
    return CascadeSweep(
        fallback=fallback,
        points=points,
        best=best,
        cheapest_near_best=cheapest,
        best_metrics=all_metrics[points.index(best)],
        fallback_model=fallback_model,
        tuned=tuned_name,
    )
