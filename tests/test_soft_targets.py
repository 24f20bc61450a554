"""Soft targets (distillation): the file format, its errors, the loss, and a real training run
that learns a teacher's distribution instead of the rows' labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.data.types import DatasetError, LabelMap
from training.soft_targets import read_soft_targets, soft_cross_entropy, target_rows, write_soft_targets

LABELS = LabelMap(("a", "b", "c"))
TEXTS = ["first text", "second text", "third text"]


def test_round_trip_renormalises_and_orders_by_label_map(tmp_path: Path) -> None:
    path = write_soft_targets(
        tmp_path / "soft.jsonl", [(" first text ", {"c": 0.3, "a": 0.3}), ("third text", {"b": 1})]
    )
    soft = read_soft_targets(path, LABELS, TEXTS)
    assert set(soft) == {"first text", "third text"}
    np.testing.assert_allclose(soft["first text"], [0.5, 0.0, 0.5])
    np.testing.assert_allclose(soft["third text"], [0.0, 1.0, 0.0])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": "first text", "probabilities": {"z": 1}}', "line 2: unknown label 'z'"),
        ('{"text": "not in train", "probabilities": {"a": 1}}', "line 2: the text is not in the train split"),
        ('{"text": "first text", "probabilities": {"a": -0.1, "b": 1}}', "line 2: the probability of 'a'"),
        ('{"text": "first text", "probabilities": {"a": true}}', "line 2: the probability of 'a'"),
        ('{"text": "first text", "probabilities": {"a": 0}}', "line 2: every probability is 0"),
        ('{"text": "first text"}', "line 2: expected"),
        ("not json", "line 2: expected"),
        ('{"text": 3, "probabilities": {}}', "line 2: 'text' must be a string"),
    ],
)
def test_bad_rows_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "soft.jsonl"
    path.write_text('{"text": "second text", "probabilities": {"a": 1}}\n' + line + "\n")
    with pytest.raises(DatasetError, match=message):
        read_soft_targets(path, LABELS, TEXTS)


def test_missing_file_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        read_soft_targets(tmp_path / "absent.jsonl", LABELS, TEXTS)


def test_hard_rows_are_smoothed_like_the_trainers_label_smoother() -> None:
    rows = target_rows(TEXTS, [0, 2, 1], {"second text": np.array([0.2, 0.8, 0.0])}, 3, 0.1)
    np.testing.assert_allclose(rows[0], [0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3], rtol=1e-6)
    np.testing.assert_allclose(rows[1], [0.2, 0.8, 0.0])  # the soft row as given
    # on smoothed one-hot rows the loss is torch's label-smoothed cross-entropy
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3]])
    targets = torch.tensor([target_rows(["x"], [0], {}, 3, 0.1)[0], target_rows(["y"], [2], {}, 3, 0.1)[0]])
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2]), label_smoothing=0.1)
    assert soft_cross_entropy(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.slow
def test_training_learns_the_soft_targets_not_the_labels(sample_dir: Path, tmp_path: Path) -> None:
    """The same seeded run twice: with soft targets that move ten train texts' whole probability to
    another intent, the trained model gives that intent far more probability on those texts."""
    from training.config import build_config
    from training.data import load_dataset
    from training.modeling import load_classifier
    from training.predict import predict_proba
    from training.train import train

    train_split = load_dataset(sample_dir, validation_fraction=0.1, seed=42).train  # as train() splits
    labels = sorted(set(train_split.labels))
    moved = [t for t, y in zip(train_split.texts, train_split.labels, strict=True) if y == labels[0]][:10]
    other = labels[1]
    soft_file = write_soft_targets(tmp_path / "soft.jsonl", [(text, {other: 1.0}) for text in moved])

    def run(name: str, soft: Path | None) -> np.ndarray:
        config = build_config(
            {
                "data": {"dataset": str(sample_dir), "soft_targets": str(soft) if soft else None},
                "optim": {"epochs": 4, "batch_size": 16, "head_init": "random", "learning_rate": 1e-4,
                          "head_learning_rate": 1e-3, "label_smoothing": 0.1},
                "contrastive": {"mode": "never"},  # the soft targets alone move the answers
                "output_dir": str(tmp_path / name),
            }
        )  # fmt: skip
        out = train(config, progress=False).output_dir
        model, tokenizer = load_classifier(out)
        names = json.loads((out / "config.json").read_text())["id2label"]
        column = next(int(i) for i, label in names.items() if label == other)
        return predict_proba(model, tokenizer, moved, progress=False)[:, column]

    plain, distilled = run("plain", None), run("soft", soft_file)
    assert np.mean(distilled) > 0.5 > np.mean(plain), (np.mean(plain), np.mean(distilled))
