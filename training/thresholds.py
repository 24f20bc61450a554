"""Out-of-scope by confidence: below a threshold the prediction becomes `oos` (the fallback).

A classifier trained with only a few out-of-scope examples (CLINC150 has 100 of 15,100) rarely
predicts `oos` outright, yet its top-1 probability is low on queries it has never seen the like
of. The threshold is chosen on the validation split, never on test (by the F1 of the `oos`
class), and ships with the model
(`metrics.json` → `oos_threshold`) so the router's fallback uses the same operating point.
"""

from __future__ import annotations

from typing import Any

import numpy as np

GRID = np.round(np.arange(0.0, 0.951, 0.01), 2)


def thresholded_predictions(probs: np.ndarray, threshold: float, oos_id: int) -> np.ndarray:
    pred = probs.argmax(axis=1)
    return np.where(probs.max(axis=1) < threshold, oos_id, pred)


def _rates(y: np.ndarray, pred: np.ndarray, oos_id: int) -> tuple[float, float]:
    in_scope = y != oos_id
    in_acc = float((pred[in_scope] == y[in_scope]).mean()) if in_scope.any() else 0.0
    oos_recall = float((pred[~in_scope] == oos_id).mean()) if (~in_scope).any() else 0.0
    return in_acc, oos_recall


def choose_oos_threshold(probs: np.ndarray, y_true: np.ndarray, oos_id: int) -> dict[str, Any]:
    """The threshold maximising the F1 of the out-of-scope class on this (validation) split.

    OOS-F1 weighs both ways a threshold errs: out-of-scope queries it misses (recall) and
    in-scope queries it sends to the fallback for nothing (precision). Ties go to the lower
    threshold, the one that touches fewer in-scope answers.
    """
    y = np.asarray(y_true)
    is_oos = y == oos_id
    best: dict[str, Any] = {}
    for threshold in GRID:
        pred = thresholded_predictions(probs, float(threshold), oos_id)
        flagged = pred == oos_id
        tp = int((flagged & is_oos).sum())
        f1 = 2 * tp / max(int(flagged.sum()) + int(is_oos.sum()), 1)
        if not best or f1 > best["oos_f1"] + 1e-12:
            in_acc, oos_recall = _rates(y, pred, oos_id)
            best = {
                "threshold": float(threshold),
                "criterion": "max validation OOS-F1",
                "oos_f1": f1,
                "in_scope_accuracy": in_acc,
                "oos_recall": oos_recall,
            }
    return best
