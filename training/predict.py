"""Batched transformers inference: texts -> class probabilities."""

from __future__ import annotations

from collections.abc import Sequence

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
