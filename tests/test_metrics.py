"""Tests for training.metrics and training.report on small hand-computed cases."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from rich.console import Console

from training.metrics import (
    compute_metrics,
    expected_calibration_error,
    predictions_from_probs,
    trainer_compute_metrics,
)
from training.report import (
    metrics_markdown,
    metrics_table,
    per_intent_table,
    plot_confusion_matrix,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def one_hot_probs(y_pred: list[int], n_classes: int, confidence: float = 0.8) -> np.ndarray:
    """Rows putting `confidence` on the predicted class and the rest spread evenly."""
    rest = (1.0 - confidence) / (n_classes - 1)
    probs = np.full((len(y_pred), n_classes), rest)
    probs[np.arange(len(y_pred)), y_pred] = confidence
    return probs


def render(table: object) -> str:
    console = Console(record=True, width=160)
    console.print(table)
    return console.export_text()


# --- metrics --------------------------------------------------------------------------


def test_perfect_predictions() -> None:
    probs = np.array(
        [
            [0.9, 0.05, 0.05],
            [0.1, 0.8, 0.1],
            [0.2, 0.1, 0.7],
            [0.6, 0.3, 0.1],
        ]
    )
    m = compute_metrics([0, 1, 2, 0], probs, ["a", "b", "c"])
    assert m["n"] == 4
    assert m["accuracy"] == 1.0
    assert m["macro_f1"] == 1.0
    assert m["weighted_f1"] == 1.0
    assert m["mean_confidence"] == pytest.approx(0.75)
    # All correct: every bin has accuracy 1, so ECE = 1 - mean confidence exactly.
    assert m["ece"] == pytest.approx(0.25)
    assert m["confusion"] == [[2, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert "oos" not in m and "in_scope_accuracy" not in m


def test_known_confusion() -> None:
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    m = compute_metrics(y_true, one_hot_probs(y_pred, 3), ["a", "b", "c"])
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    a, b, c = (m["per_intent"][k] for k in ("a", "b", "c"))
    assert (a["precision"], a["recall"], a["f1"], a["support"]) == pytest.approx((0.5, 0.5, 0.5, 2))
    assert (b["precision"], b["recall"], b["f1"]) == pytest.approx((2 / 3, 1.0, 0.8))
    assert (c["precision"], c["recall"], c["f1"]) == pytest.approx((1.0, 0.5, 2 / 3))
    expected_macro = (0.5 + 0.8 + 2 / 3) / 3
    assert m["macro_f1"] == pytest.approx(expected_macro)
    assert m["weighted_f1"] == pytest.approx(expected_macro)  # equal supports
    # All predictions at confidence 0.8 (one bin): ECE = |4/6 - 0.8|.
    assert m["ece"] == pytest.approx(abs(4 / 6 - 0.8))


def test_macro_f1_ignores_labels_absent_from_truth_and_predictions() -> None:
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    m = compute_metrics(y_true, one_hot_probs(y_pred, 4), ["a", "b", "c", "d"])
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["per_intent"]["d"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 0,
    }
    # A predicted-but-absent label counts, with F1 = 0.
    m2 = compute_metrics([0, 1], one_hot_probs([0, 3], 4), ["a", "b", "c", "d"])
    assert m2["macro_f1"] == pytest.approx((1.0 + 0.0 + 0.0) / 3)


def test_ece_constructed_case() -> None:
    # Bin (0.8, 0.867]: 4 examples, conf 0.85, accuracy 0.75 -> gap 0.10
    # Bin (0.6, 0.667]: 2 examples, conf 0.65, accuracy 0.50 -> gap 0.15
    confidences = [0.85, 0.85, 0.85, 0.85, 0.65, 0.65]
    correct = [True, True, True, False, False, True]
    expected = 4 / 6 * 0.10 + 2 / 6 * 0.15
    assert expected_calibration_error(confidences, correct, n_bins=15) == pytest.approx(expected)
    # One bin: |overall accuracy - mean confidence|.
    one_bin = expected_calibration_error(confidences, correct, n_bins=1)
    assert one_bin == pytest.approx(abs(4 / 6 - np.mean(confidences)))


def test_ece_bin_edges() -> None:
    # Bins are (lo, hi]; 0.0 and 1.0 are accepted. With two bins, 0.5 falls in bin 0
    # (gap 0.5) and 1.0 in bin 1 (gap 1.0) -> 0.75; 0.5 in bin 1 would give 0.25.
    assert expected_calibration_error([0.5, 1.0], [True, False], n_bins=2) == pytest.approx(0.75)
    assert expected_calibration_error([0.0], [False], n_bins=10) == 0.0
    with pytest.raises(ValueError):
        expected_calibration_error([], [], n_bins=10)


def test_oos_metrics() -> None:
    labels = ["balance", "transfer", "oos"]
    y_true = [0, 1, 2, 2, 2, 0]
    y_pred = [0, 2, 2, 2, 0, 0]
    m = compute_metrics(y_true, one_hot_probs(y_pred, 3, 0.9), labels)
    assert m["oos"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert m["in_scope_accuracy"] == pytest.approx(2 / 3)  # examples 0, 1, 5
    assert m["accuracy"] == pytest.approx(4 / 6)
    # A different name for the OOS class.
    m2 = compute_metrics(y_true, one_hot_probs(y_pred, 3), ["a", "b", "none"], oos_label="none")
    assert m2["oos"] == m["oos"]


def test_json_serialisable_plain_types() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=40).astype(np.float32)
    y_true = rng.integers(0, 5, size=40)
    m = compute_metrics(y_true, probs, ["a", "b", "c", "d", "oos"])
    json.loads(json.dumps(m, allow_nan=False))

    def walk(x: object) -> None:
        assert type(x) in (dict, list, str, int, float, bool, type(None)), type(x)
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(m)


def test_confusion_omitted_for_many_labels() -> None:
    labels = [f"i{k}" for k in range(201)]
    m = compute_metrics([0, 200], one_hot_probs([0, 200], 201), labels)
    assert "confusion" not in m
    assert len(m["per_intent"]) == 201


def test_input_validation() -> None:
    with pytest.raises(ValueError):
        compute_metrics([0, 1], np.ones((3, 2)) / 2, ["a", "b"])  # row count
    with pytest.raises(ValueError):
        compute_metrics([0, 1], np.ones((2, 3)) / 3, ["a", "b"])  # column count
    with pytest.raises(ValueError):
        compute_metrics([0, 2], np.ones((2, 2)) / 2, ["a", "b"])  # id out of range


def test_predictions_from_probs() -> None:
    probs = np.array([[0.1, 0.9], [0.7, 0.3]])
    assert predictions_from_probs(probs).tolist() == [1, 0]


def test_trainer_compute_metrics_with_large_logits() -> None:
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 1001.0, 1000.0], [5.0, 6.0, 7.0]])
    labels = np.array([0, 2, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warnings from exp
        out = trainer_compute_metrics(SimpleNamespace(predictions=logits, label_ids=labels))
    assert set(out) == {"accuracy", "macro_f1"}
    assert out["accuracy"] == pytest.approx(2 / 3)
    # Classes 0: f1 1; 1: predicted once, never true -> 0; 2: p 1, r 0.5 -> 2/3.
    assert out["macro_f1"] == pytest.approx((1.0 + 0.0 + 2 / 3) / 3)
    assert all(type(v) is float for v in out.values())
    # Tuple form, with extra model outputs after the logits.
    assert trainer_compute_metrics(((logits, np.zeros(3)), labels)) == out


# --- report ---------------------------------------------------------------------------


@pytest.mark.parametrize("n_labels", [3, 150])
def test_plot_confusion_matrix_writes_png(tmp_path: Path, n_labels: int) -> None:
    rng = np.random.default_rng(n_labels)
    labels = [f"intent_{k}" for k in range(n_labels)]
    y_true = np.repeat(np.arange(n_labels), 3)
    y_pred = np.where(rng.random(y_true.size) < 0.8, y_true, rng.integers(0, n_labels, y_true.size))
    m = compute_metrics(y_true, one_hot_probs(y_pred.tolist(), n_labels), labels)
    out = plot_confusion_matrix(m, labels, tmp_path / "sub" / "cm.png", title="test")
    assert out == tmp_path / "sub" / "cm.png"
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 1000


def test_plot_confusion_matrix_needs_confusion(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        plot_confusion_matrix({"n": 1}, ["a"], tmp_path / "x.png", title="t")


def test_tables_and_markdown() -> None:
    labels = ["balance", "transfer", "oos"]
    y_true = [0, 1, 2, 2, 2, 0]
    y_pred = [0, 2, 2, 2, 0, 0]
    m = compute_metrics(y_true, one_hot_probs(y_pred, 3, 0.9), labels)

    md = metrics_markdown(m)
    assert md.startswith("| metric | value |")
    for expected in (
        "| n | 6 |",
        "66.7%",
        "in-scope accuracy",
        "OOS precision",
        "OOS recall",
    ):
        assert expected in md
    assert f"{m['ece']:.3f}" in md  # 0.233

    text = render(metrics_table(m, title="CLINC150 test"))
    assert "CLINC150 test" in text and "66.7%" in text and f"{m['ece']:.3f}" in text

    worst = render(per_intent_table(m, worst=1))
    assert "transfer" in worst  # F1 0: the lowest
    assert "balance" not in worst
    everything = render(per_intent_table(m, worst=None))
    assert all(label in everything for label in labels)


def test_markdown_without_oos() -> None:
    m = compute_metrics([0, 1], np.array([[0.943, 0.057], [0.2, 0.8]]), ["a", "b"])
    md = metrics_markdown(m)
    assert "100.0%" in md and "OOS" not in md and "in-scope" not in md
