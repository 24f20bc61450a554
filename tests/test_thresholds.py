"""Out-of-scope threshold: chosen on validation to balance in-scope accuracy and OOS recall."""

from __future__ import annotations

import numpy as np

from training.evaluate import split_metrics
from training.thresholds import choose_oos_threshold, thresholded_predictions

LABELS = ["a", "b", "oos"]


def _probs(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float64)


def test_low_confidence_becomes_oos() -> None:
    probs = _probs([[0.9, 0.05, 0.05], [0.45, 0.40, 0.15], [0.2, 0.7, 0.1]])
    assert thresholded_predictions(probs, 0.5, 2).tolist() == [0, 2, 1]
    assert thresholded_predictions(probs, 0.0, 2).tolist() == [0, 0, 1]


def test_choice_recovers_oos_without_hurting_confident_in_scope() -> None:
    # in-scope queries are confident and right; out-of-scope ones are spread thin over a and b
    in_scope = [[0.8, 0.1, 0.1]] * 8 + [[0.1, 0.85, 0.05]] * 8
    oos = [[0.5, 0.4, 0.1]] * 4
    y = np.array([0] * 8 + [1] * 8 + [2] * 4)
    choice = choose_oos_threshold(_probs(in_scope + oos), y, oos_id=2)
    assert 0.5 < choice["threshold"] <= 0.8
    assert choice["in_scope_accuracy"] == 1.0 and choice["oos_recall"] == 1.0


def test_split_metrics_reports_both_operating_points() -> None:
    probs = _probs([[0.8, 0.1, 0.1], [0.5, 0.4, 0.1], [0.1, 0.8, 0.1]])
    y = np.array([0, 2, 1])
    metrics = split_metrics(y, probs, LABELS, oos_threshold=0.6)
    assert metrics["accuracy"] == 2 / 3  # argmax misses the out-of-scope query
    assert metrics["with_oos_threshold"]["accuracy"] == 1.0
    assert metrics["with_oos_threshold"]["oos"]["recall"] == 1.0
    assert "with_oos_threshold" not in split_metrics(y, probs, ["a", "b", "c"], oos_threshold=0.6)
