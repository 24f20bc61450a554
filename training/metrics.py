"""Classification metrics for intent models: accuracy, F1, calibration, out-of-scope.

Pure numpy / scikit-learn (no torch), so the router, benchmarks and baselines can use it
without the training stack. Everything :func:`compute_metrics` returns is plain Python
(ints, floats, lists, dicts, ``None``) and can go straight into ``metrics.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

__all__ = [
    "MAX_CONFUSION_LABELS",
    "compute_metrics",
    "expected_calibration_error",
    "predictions_from_probs",
    "softmax",
    "trainer_compute_metrics",
]

#: The confusion matrix is only stored up to this many classes (C x C ints in JSON).
MAX_CONFUSION_LABELS = 200


def predictions_from_probs(probs: np.ndarray) -> np.ndarray:
    """Top-1 class id for each row of an (N, C) probability (or logit) array."""
    arr = np.asarray(probs)
    if arr.ndim != 2:
        raise ValueError(f"expected an (N, C) array, got shape {arr.shape}")
    return arr.argmax(axis=1)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis (subtracts the row max first)."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def expected_calibration_error(
    confidences: Sequence[float] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    n_bins: int = 15,
) -> float:
    """Expected calibration error (Guo et al., 2017) with equal-width confidence bins.

    ``ECE = sum_b |B_b| / N * |accuracy(B_b) - mean_confidence(B_b)|``, where bin
    ``b`` holds the confidences in ``(b / n_bins, (b + 1) / n_bins]`` (confidence 0
    goes to the first bin). Empty bins contribute nothing.
    """
    conf = np.asarray(confidences, dtype=np.float64).reshape(-1)
    ok = np.asarray(correct, dtype=np.float64).reshape(-1)
    if conf.shape != ok.shape:
        raise ValueError(f"confidences {conf.shape} and correct {ok.shape} differ in length")
    if conf.size == 0:
        raise ValueError("expected_calibration_error needs at least one example")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    inner_edges = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    # side="left": a confidence equal to an edge belongs to the bin that edge closes.
    bins = np.searchsorted(inner_edges, np.clip(conf, 0.0, 1.0), side="left")
    counts = np.bincount(bins, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=conf, minlength=n_bins)
    ok_sum = np.bincount(bins, weights=ok, minlength=n_bins)
    # sum_b |B|/N * |acc_b - conf_b| == sum_b |ok_sum_b - conf_sum_b| / N
    return float(np.abs(ok_sum - conf_sum)[counts > 0].sum() / conf.size)


def _class_scores(precision: float, recall: float, f1: float, support: int) -> dict[str, Any]:
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "support": int(support),
    }


def compute_metrics(
    y_true: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    labels: Sequence[str],
    *,
    oos_label: str = "oos",
    n_bins: int = 15,
    y_pred: Sequence[int] | np.ndarray | None = None,
) -> dict[str, Any]:
    """All evaluation numbers for one model on one labelled split.

    ``y_pred`` overrides the argmax predictions (e.g. after an out-of-scope threshold,
    ``training.thresholds``); calibration still reads the top-1 probability.

    Args:
        y_true: gold class ids in ``[0, C)``.
        probs: (N, C) class probabilities (rows sum to 1); the prediction is the argmax.
        labels: the C label names, index = class id.
        oos_label: name of the out-of-scope class; its metrics are added when present.
        n_bins: number of equal-width bins for the expected calibration error.

    Returns a JSON-serialisable dict with ``n``, ``accuracy``, ``macro_f1``,
    ``weighted_f1``, ``ece``, ``mean_confidence``, ``n_bins``, ``per_intent`` (every
    label in ``labels``), ``oos`` and ``in_scope_accuracy`` (only when ``oos_label`` is
    a label; ``in_scope_accuracy`` is ``None`` if every example is out-of-scope) and
    ``confusion`` (rows = true, cols = predicted; only when C <= 200).

    ``macro_f1`` averages over the labels that occur in ``y_true`` or in the
    predictions (scikit-learn's default label set). Intents missing from a small
    evaluation split would otherwise each count as F1 = 0 and drag the average down for
    no fault of the model; a label that is predicted but absent from the gold labels
    still counts (its F1 is 0), because those predictions are real false positives.
    ``weighted_f1`` weights by support, so absent labels do not affect it either way.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64).reshape(-1)
    n_classes = len(labels)
    if p.ndim != 2:
        raise ValueError(f"probs must be (N, C), got shape {p.shape}")
    if p.shape[1] != n_classes:
        raise ValueError(f"probs has {p.shape[1]} columns but there are {n_classes} labels")
    if p.shape[0] != y.size:
        raise ValueError(f"probs has {p.shape[0]} rows but y_true has {y.size} entries")
    if y.size == 0:
        raise ValueError("compute_metrics needs at least one example")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"y_true ids must lie in [0, {n_classes}), got [{y.min()}, {y.max()}]")

    # 1. Predictions, confidence, correctness.
    argmax = predictions_from_probs(p)
    confidence = p[np.arange(y.size), argmax]
    y_pred = argmax if y_pred is None else np.asarray(y_pred, dtype=np.int64).reshape(-1)
    correct = y_pred == y

    # 2. Headline numbers.
    present = np.union1d(y, y_pred)
    out: dict[str, Any] = {
        "n": int(y.size),
        "accuracy": float(correct.mean()),
        "macro_f1": float(f1_score(y, y_pred, average="macro", labels=present, zero_division=0)),
        "weighted_f1": float(f1_score(y, y_pred, average="weighted", labels=present, zero_division=0)),
        "ece": expected_calibration_error(confidence, argmax == y, n_bins=n_bins),
        "mean_confidence": float(confidence.mean()),
        "n_bins": int(n_bins),
    }

    # 3. Per-intent precision / recall / F1 for every label, present or not.
    all_ids = np.arange(n_classes)
    prec, rec, f1, support = precision_recall_fscore_support(
        y, y_pred, labels=all_ids, average=None, zero_division=0
    )
    per_intent = {
        str(name): _class_scores(prec[i], rec[i], f1[i], support[i]) for i, name in enumerate(labels)
    }
    out["per_intent"] = per_intent

    # 4. Out-of-scope metrics (CLINC150 style): OOS precision/recall, in-scope accuracy.
    if oos_label in labels:
        oos_id = list(labels).index(oos_label)
        out["oos"] = dict(per_intent[str(oos_label)])
        in_scope = y != oos_id
        out["in_scope_accuracy"] = float(correct[in_scope].mean()) if in_scope.any() else None

    # 5. Confusion matrix, when it stays a reasonable size.
    if n_classes <= MAX_CONFUSION_LABELS:
        out["confusion"] = confusion_matrix(y, y_pred, labels=all_ids).tolist()
    return out


def trainer_compute_metrics(eval_pred: Any) -> dict[str, float]:
    """``compute_metrics`` hook for the Hugging Face ``Trainer``.

    Accepts an ``EvalPrediction`` (``.predictions`` = logits (N, C), ``.label_ids``)
    or a ``(predictions, label_ids)`` tuple. If the model returned extra outputs, the
    logits are the first element of ``predictions``. Returns ``accuracy`` and
    ``macro_f1`` (macro over the labels present in gold or predictions, as in
    :func:`compute_metrics`).
    """
    if hasattr(eval_pred, "predictions"):
        logits, label_ids = eval_pred.predictions, eval_pred.label_ids
    else:
        logits, label_ids = eval_pred
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    probs = softmax(np.asarray(logits))
    y = np.asarray(label_ids).reshape(-1)
    y_pred = predictions_from_probs(probs)
    return {
        "accuracy": float((y_pred == y).mean()),
        "macro_f1": float(f1_score(y, y_pred, average="macro", zero_division=0)),
    }
