"""The ONNX export's checks: fp32 against torch, the int8 quality rule, and a short speed measurement.

fp32: its argmax must agree with the torch classifier's on at least 99.5% of the validation
texts checked (as `switchboard check-vllm` requires of vLLM), the same label order assumed.

int8 is served only when, over the validation texts and training texts together (at most
`MAX_CHECK_TEXTS`, validation first: thousands where there are, where validation alone may be
77), its argmax agrees with fp32's on at least 99%, and on validation it gets at most one text
per 300 fewer right than fp32 (77 texts: none). Otherwise fp32 is served, and the report says why.
The test split is never read here: what is served is chosen without it.

The speed measurement (`SPEED_TEXTS` texts in batches of `SPEED_BATCH`, then `SINGLE_QUERIES`
one at a time) runs the served ONNX file and, on a CPU without native bf16, PyTorch fp32 (vLLM's
stand-in there, see `serving.engine_choice`); it takes a few seconds.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.agreement import REQUIRED_AGREEMENT

REQUIRED_INT8_AGREEMENT = 0.99
TEXTS_PER_ALLOWED_DROP = 300  # validation texts per text int8 may get wrong that fp32 got right
MAX_VALIDATION_TEXTS = 1000
MAX_CHECK_TEXTS = 2000  # bounds the checks' time: about 10 s for MiniLM on 2 cores
SPEED_TEXTS = 256
SPEED_BATCH = 32
SINGLE_QUERIES = 16


@dataclass(frozen=True)
class CheckTexts:
    """The texts the checks run on: `validation` of them first (`validation_index` into the
    validation split, `validation_labels` as the model's label ids), then training texts."""

    texts: list[str]
    validation_index: list[int]
    validation_labels: np.ndarray

    @property
    def validation(self) -> int:
        return len(self.validation_index)


def check_texts(
    labels: Sequence[str],
    validation_texts: Sequence[str],
    validation_labels: Sequence[str],
    train_texts: Sequence[str],
    *,
    seed: int = 0,
    max_validation: int = MAX_VALIDATION_TEXTS,
    max_total: int = MAX_CHECK_TEXTS,
) -> CheckTexts:
    """Validation texts whose label the model has (a seeded sample past `max_validation`), then
    a seeded sample of training texts up to `max_total` in all."""
    rng = random.Random(seed)
    label_id = {label: i for i, label in enumerate(labels)}
    known = [i for i, label in enumerate(validation_labels) if label in label_id]
    if len(known) > max_validation:
        known = sorted(rng.sample(known, max_validation))
    room = max(0, max_total - len(known))
    train = list(train_texts) if len(train_texts) <= room else rng.sample(list(train_texts), room)
    return CheckTexts(
        [validation_texts[i] for i in known] + train,
        known,
        np.asarray([label_id[validation_labels[i]] for i in known], dtype=np.int64),
    )


def fp32_check(torch_probs: np.ndarray, onnx_probs: np.ndarray) -> dict[str, Any]:
    """ONNX fp32 against the torch classifier on the same texts (rows)."""
    agree = torch_probs.argmax(axis=1) == onnx_probs.argmax(axis=1)
    agreement = float(agree.mean()) if len(agree) else 1.0
    return {
        "n": len(agree),
        "agreement": round(agreement, 6),
        "disagreements": int((~agree).sum()),
        "max_abs_prob_diff": float(np.abs(torch_probs - onnx_probs).max()) if len(agree) else 0.0,
        "required": REQUIRED_AGREEMENT,
        "passed": agreement >= REQUIRED_AGREEMENT,
    }


def int8_check(
    fp32_probs: np.ndarray, int8_probs: np.ndarray, validation_labels: np.ndarray
) -> dict[str, Any]:
    """The int8 quality rule on the check texts (validation rows first, with their labels)."""
    fp32_top, int8_top = fp32_probs.argmax(axis=1), int8_probs.argmax(axis=1)
    agreement = float((fp32_top == int8_top).mean()) if len(fp32_top) else 1.0
    n_val = len(validation_labels)
    fp32_right = int((fp32_top[:n_val] == validation_labels).sum())
    int8_right = int((int8_top[:n_val] == validation_labels).sum())
    drop, allowed = fp32_right - int8_right, n_val // TEXTS_PER_ALLOWED_DROP
    reasons = []
    if agreement < REQUIRED_INT8_AGREEMENT:
        reasons.append(
            f"int8 agrees with fp32 on {agreement:.2%} of {len(fp32_top)} texts, under "
            f"{REQUIRED_INT8_AGREEMENT:.0%}"
        )
    if drop > allowed:
        reasons.append(
            f"int8 gets {drop} of {n_val} validation texts fewer right than fp32 (at most {allowed} "
            f"allowed: one per {TEXTS_PER_ALLOWED_DROP})"
        )
    return {
        "n": len(fp32_top),
        "agreement": round(agreement, 6),
        "required_agreement": REQUIRED_INT8_AGREEMENT,
        "validation": {
            "n": n_val,
            "fp32_accuracy": round(fp32_right / n_val, 6) if n_val else None,
            "int8_accuracy": round(int8_right / n_val, 6) if n_val else None,
            "drop_texts": drop,
            "allowed_drop_texts": allowed,
        },
        "passed": not reasons,
        "reason": "; ".join(reasons)
        or f"int8 agrees with fp32 on {agreement:.2%} and loses {max(drop, 0)} validation texts",
    }


def timed(run: Callable[[list[str]], Any], texts: Sequence[str], *, whole: bool = False) -> dict[str, float]:
    """Queries/s over `texts` in batches of `SPEED_BATCH` (`whole`: in one call, for an engine
    that schedules its own batches: vLLM), and the median time of one query alone."""
    texts = list(texts)
    run(texts[:SPEED_BATCH])  # warm-up: first-call allocations, lazy kernels
    run(texts[:1])
    started = time.perf_counter()
    step = len(texts) if whole else SPEED_BATCH
    for start in range(0, len(texts), step):
        run(texts[start : start + step])
    qps = len(texts) / (time.perf_counter() - started)
    singles = []
    for text in texts[:SINGLE_QUERIES]:
        t0 = time.perf_counter()
        run([text])
        singles.append(time.perf_counter() - t0)
    return {"qps": round(qps, 1), "single_ms_p50": round(1000 * float(np.median(singles)), 2)}
