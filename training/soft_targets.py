"""Soft targets: training rows that learn a teacher's probabilities instead of one label.

Self-training (training.self_training) hands the student the teachers' *answer* for the traffic
they are sure about. Distillation hands it their whole *distribution*, for every unlabelled text:
a query the teachers split 60/40 between `card_arrival` and `card_delivery_estimate` teaches
exactly that, instead of being dropped (below the confidence) or taught as a certainty.

`data.soft_targets` names a JSON Lines file, one object per train text:
`{"text": "...", "probabilities": {"card_arrival": 0.6, "card_delivery_estimate": 0.4}}`
(labels by name, so a teacher's label order does not matter; missing labels have probability 0;
the row is renormalised). Every text must be one of the train split's texts, compared after
stripping as the dataset readers strip them. The loss is then the cross-entropy against a target
distribution for every row: the soft rows' teacher distribution, the other rows' label smoothed
by `optim.label_smoothing` as the Trainer's own label smoother does. Validation and early
stopping are unchanged.

Measured on the Banking77 cold start (docs/BENCHMARKS.md, "Retrain recipes"), three teachers'
distributions on every unlabelled query gave 91.62% at round 3, below their hard answers at
confidence >= 0.7 (92.01%): `switchboard retrain` uses hard answers. This stays for the recipe replay
(`benchmarks/retrain_recipes.py --variants ensemble_distill`) and for training configs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Trainer

from training.data.types import DatasetError, LabelMap

SOFT_TARGETS_COLUMN = "soft_targets"


def write_soft_targets(path: Path, rows: Sequence[tuple[str, Mapping[str, float]]]) -> Path:
    """Write (text, {label: probability}) rows in the format `read_soft_targets` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for text, probabilities in rows:
            kept = {label: round(float(p), 6) for label, p in probabilities.items() if p > 0}
            fh.write(json.dumps({"text": text, "probabilities": kept}) + "\n")
    return path


def read_soft_targets(
    path: str | Path, label_map: LabelMap, train_texts: Sequence[str]
) -> dict[str, np.ndarray]:
    """text -> (C,) target distribution in `label_map`'s order. Errors name the file and line: a
    label the model does not have, a negative or non-finite probability, an all-zero row, a text
    that is not in the train split (it would be silently ignored)."""
    known = set(train_texts)
    ids = label_map.label2id
    out: dict[str, np.ndarray] = {}
    where = Path(path)
    if not where.is_file():
        raise DatasetError(f"data.soft_targets: no such file: {where}")
    with where.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            at = f"{where}, line {number}"
            try:
                row = json.loads(line)
                text, probabilities = row["text"], row["probabilities"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DatasetError(f'{at}: expected {{"text": ..., "probabilities": {{label: p}}}}') from None
            if not isinstance(text, str) or not isinstance(probabilities, dict):
                raise DatasetError(f"{at}: 'text' must be a string and 'probabilities' an object")
            text = text.strip()  # as the dataset readers read train texts
            if text not in known:
                raise DatasetError(f"{at}: the text is not in the train split: {text[:60]!r}")
            target = np.zeros(len(label_map), dtype=np.float32)
            for label, p in probabilities.items():
                if label not in ids:
                    raise DatasetError(f"{at}: unknown label {label!r}")
                if isinstance(p, bool) or not isinstance(p, int | float) or not math.isfinite(p) or p < 0:
                    raise DatasetError(f"{at}: the probability of {label!r} must be a number >= 0, not {p!r}")
                target[ids[label]] = p
            if target.sum() <= 0:
                raise DatasetError(f"{at}: every probability is 0")
            out[text] = target / target.sum()
    return out


def target_rows(
    texts: Sequence[str],
    label_ids: Sequence[int],
    soft: Mapping[str, np.ndarray],
    n_labels: int,
    smoothing: float,
) -> list[list[float]]:
    """Each row's target distribution: its soft target if it has one, else its label smoothed."""
    rows = []
    for text, label in zip(texts, label_ids, strict=True):
        target = soft.get(text)
        if target is None:
            target = np.full(n_labels, smoothing / n_labels, dtype=np.float32)
            target[label] += 1.0 - smoothing
        rows.append(target.tolist())
    return rows


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_c target_c * log softmax(logits)_c."""
    return -(targets * torch.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


class SoftTargetTrainer(Trainer):
    """A Trainer whose training batches carry a target distribution per row; evaluation batches
    (labels only) go through the Trainer's own loss."""

    loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer divides by the accumulation steps

    def compute_loss(  # type: ignore[override]
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        targets = inputs.pop(SOFT_TARGETS_COLUMN, None)
        if targets is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = {k: v for k, v in inputs.items() if k != "labels"}
        outputs = model(**inputs)
        loss = soft_cross_entropy(outputs.logits, targets.to(outputs.logits.device))
        return (loss, outputs) if return_outputs else loss
