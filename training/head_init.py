"""LP-FT: fit the classification head as a linear probe on frozen features, then fine-tune.

Fine-tuning from a random head first spends its gradient undoing the head's noise and distorts
the pretrained features on the way (Kumar et al., 2022, "Fine-Tuning can Distort Pretrained
Features"). A logistic regression on the frozen features takes seconds and starts fine-tuning from
the linear-probe optimum instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


def _head(model: nn.Module) -> nn.Linear:
    for name in ("classifier", "score"):
        head = getattr(model, name, None)
        if isinstance(head, nn.Linear):
            return head
    raise ValueError(f"{type(model).__name__} has no linear classifier/score head")


@torch.inference_mode()
def head_features(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int = 64,
    progress: bool = True,
) -> np.ndarray:
    """The vectors the head sees (the pooled representation), one row per text."""
    head = _head(model)
    captured: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    model.eval()
    device = next(model.parameters()).device
    rows: list[np.ndarray] = []
    try:
        for start in tqdm(range(0, len(texts), batch_size), desc="probe features", disable=not progress):
            enc = tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(device)
            captured.clear()
            model(**enc)
            feats = captured[-1].float()
            if feats.dim() == 3:  # decoders score every position; keep the last real token
                last = enc["attention_mask"].sum(dim=1) - 1
                feats = feats[torch.arange(feats.shape[0], device=feats.device), last]
            rows.append(feats.cpu().numpy())
    finally:
        hook.remove()
    return np.concatenate(rows)


def linear_probe_init(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    label_ids: Sequence[int],
    *,
    max_length: int,
    progress: bool = True,
    c: float = 1.0,
) -> float:
    """Set the head to a logistic regression fitted on frozen features; returns its train accuracy."""
    head = _head(model)
    features = head_features(model, tokenizer, texts, max_length=max_length, progress=progress)
    y = np.asarray(label_ids)
    probe = LogisticRegression(C=c, max_iter=2000, fit_intercept=head.bias is not None)
    probe.fit(features, y)
    coef, intercept = probe.coef_, probe.intercept_
    if len(probe.classes_) == 2:  # binary: one logit difference -> two symmetric softmax rows
        coef, intercept = (
            np.vstack([-coef / 2, coef / 2]),
            np.hstack([-intercept / 2, intercept / 2]),
        )
    weight = np.zeros((head.out_features, head.in_features), dtype=np.float32)
    weight[probe.classes_] = coef
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        if head.bias is not None:
            bias = np.full(head.out_features, -10.0, dtype=np.float32)  # classes unseen in train
            bias[probe.classes_] = intercept
            head.bias.copy_(torch.from_numpy(bias))
    accuracy = float(probe.score(features, y))
    log.info("linear probe: train accuracy %.4f on %d texts", accuracy, len(texts))
    return accuracy
