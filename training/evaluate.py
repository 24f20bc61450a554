"""`switchboard evaluate`: the training metrics and picture for any exported model directory."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from training.data import DatasetError, IntentDataset, Split, load_dataset
from training.metrics import compute_metrics
from training.modeling import load_classifier
from training.predict import predict_proba
from training.report import plot_confusion_matrix


def evaluate_split(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    split: Split,
    model_labels: Sequence[str],
    *,
    max_length: int = 128,
    progress: bool = True,
) -> dict[str, Any]:
    """Metrics of `model` on `split`; its labels are matched to the model's by name."""
    index = {label: i for i, label in enumerate(model_labels)}
    unknown = sorted({label for label in split.labels if label not in index})
    if unknown:
        raise DatasetError(
            f"{len(unknown)} label(s) of the data are unknown to the model: {', '.join(unknown[:5])}"
        )
    probs = predict_proba(model, tokenizer, split.texts, max_length=max_length, progress=progress)
    return compute_metrics([index[label] for label in split.labels], probs, list(model_labels))


def write_evaluation(
    metrics: dict[str, Any], labels: Sequence[str], out_dir: Path, *, title: str
) -> Path:
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
    """Evaluate an exported model on a dataset split; writes metrics JSON + PNG to `output_dir`."""
    model, tokenizer = load_classifier(model_dir)
    data = load_dataset(dataset) if isinstance(dataset, str) else dataset
    splits = data.splits()
    if split not in splits:
        raise DatasetError(
            f"dataset {data.name!r} has no {split!r} split (has: {', '.join(splits)})"
        )
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    metrics = evaluate_split(
        model, tokenizer, splits[split], labels, max_length=max_length, progress=progress
    )
    metrics["model_dir"] = str(model_dir)
    metrics["dataset"] = data.name
    metrics["split"] = split
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        write_evaluation(metrics, labels, out, title=f"{data.name} ({split})")
    return metrics
