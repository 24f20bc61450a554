"""`switchboard evaluate`: the training metrics and picture for any exported model directory."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from serving.label_scoring import is_generative
from serving.model_dir import stored_oos_threshold
from training.data import DatasetError, IntentDataset, Split, load_dataset
from training.data.types import OOS_LABEL
from training.metrics import compute_metrics
from training.modeling import load_classifier, model_labels
from training.predict import predict_proba
from training.report import plot_confusion_matrix
from training.thresholds import thresholded_predictions


def split_probabilities(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    split: Split,
    model_labels: Sequence[str],
    *,
    max_length: int = 128,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Gold ids (in the model's label order; matched by name) and the model's probabilities."""
    index = {label: i for i, label in enumerate(model_labels)}
    unknown = sorted({label for label in split.labels if label not in index})
    if unknown:
        raise DatasetError(
            f"{len(unknown)} label(s) of the data are unknown to the model: {', '.join(unknown[:5])}"
        )
    probs = predict_proba(model, tokenizer, split.texts, max_length=max_length, progress=progress)
    return np.asarray([index[label] for label in split.labels]), probs


def split_metrics(
    y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str], *, oos_threshold: float | None = None
) -> dict[str, Any]:
    """Metrics on the argmax; plus `with_oos_threshold` when a threshold applies to an `oos` label."""
    metrics = compute_metrics(y_true, probs, list(labels))
    if oos_threshold is not None and OOS_LABEL in labels:
        oos_id = list(labels).index(OOS_LABEL)
        pred = thresholded_predictions(probs, oos_threshold, oos_id)
        metrics["with_oos_threshold"] = {
            "threshold": oos_threshold,
            **{
                k: v
                for k, v in compute_metrics(y_true, probs, list(labels), y_pred=pred).items()
                if k not in ("confusion", "per_intent")
            },
        }
    return metrics


def write_evaluation(metrics: dict[str, Any], labels: Sequence[str], out_dir: Path, *, title: str) -> Path:
    """The confusion matrix picture next to the metrics."""
    return plot_confusion_matrix(metrics, labels, out_dir / "confusion_matrix.png", title=title)


def evaluate_model_dir(
    model_dir: str | Path,
    dataset: str | IntentDataset,
    *,
    split: str = "test",
    output_dir: str | Path | None = None,
    max_length: int = 128,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate an exported model on a dataset split; writes metrics JSON + PNG to `output_dir`.
    A generative model (`objective: generate`) is scored by its labels' probabilities."""
    data = load_dataset(dataset) if isinstance(dataset, str) else dataset
    splits = data.splits()
    if split not in splits:
        raise DatasetError(f"dataset {data.name!r} has no {split!r} split (has: {', '.join(splits)})")
    if is_generative(model_dir):
        from training.generative_scoring import generative_split_probabilities

        labels, y_true, probs = generative_split_probabilities(model_dir, splits[split], progress=progress)
    else:
        model, tokenizer = load_classifier(model_dir)
        labels = model_labels(model)
        y_true, probs = split_probabilities(
            model, tokenizer, splits[split], labels, max_length=max_length, progress=progress
        )
    metrics = split_metrics(y_true, probs, labels, oos_threshold=stored_oos_threshold(model_dir))
    metrics["model_dir"] = str(model_dir)
    metrics["dataset"] = data.name
    metrics["split"] = split
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        write_evaluation(metrics, labels, out, title=f"{data.name} ({split})")
    return metrics
