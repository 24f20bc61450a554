"""Batched transformers inference: texts -> class probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase


@torch.inference_mode()
def predict_proba(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_length: int = 128,
    batch_size: int = 64,
    progress: bool = True,
) -> np.ndarray:
    """(N, C) softmax probabilities, in the order of `texts`.

    Texts are batched by length so padding stays small; results go back in input order.
    """
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: np.ndarray | None = None
    batches = range(0, len(order), batch_size)
    for start in tqdm(batches, desc="predict", unit="batch", disable=not progress, leave=False):
        idx = order[start : start + batch_size]
        enc = tokenizer(
            [texts[i] for i in idx],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        ).to(device)
        logits = model(**enc).logits.float()
        probs = torch.softmax(logits, dim=-1).cpu().numpy()
        if out is None:
            out = np.zeros((len(texts), probs.shape[1]), dtype=np.float32)
        out[idx] = probs
    if out is None:
        raise ValueError("no texts to predict")
    return out


def predict_proba_of_models(
    model_dirs: Sequence[str | Path], texts: Sequence[str], *, progress: bool = False
) -> tuple[list[str], list[np.ndarray]]:
    """Each exported classifier's (N, C) probabilities for `texts`, and their shared label order
    (models that order their labels differently cannot be compared column by column: an error)."""
    from training.modeling import load_classifier, model_labels

    labels: list[str] = []
    probs: list[np.ndarray] = []
    for model_dir in model_dirs:
        model, tokenizer = load_classifier(model_dir)
        if labels and model_labels(model) != labels:
            raise ValueError(f"{model_dir} orders its labels differently from {model_dirs[0]}")
        labels = model_labels(model)
        probs.append(predict_proba(model, tokenizer, texts, progress=progress))
    return labels, probs
