"""Does vLLM serve the exported model as transformers computes it? Argmax agreement on a split."""

from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from serving.label_scoring import is_generative
from serving.offline import classify_texts, close_llm, labels_of, open_llm

REQUIRED_AGREEMENT = 0.995


def vllm_agreement(
    model_dir: str | Path,
    texts: Sequence[str],
    *,
    max_length: int = 128,
    dtype: str = "auto",
    eager: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    from training.modeling import load_classifier, model_labels
    from training.predict import predict_proba

    if is_generative(model_dir):  # `objective: generate`: label probabilities on both sides
        return generative_agreement(model_dir, texts, dtype=dtype, eager=eager, progress=progress)
    model, tokenizer = load_classifier(model_dir)
    hf_labels = model_labels(model)
    hf = predict_proba(model, tokenizer, texts, max_length=max_length, progress=progress)
    del model
    gc.collect()

    llm = open_llm(model_dir, max_model_len=max_length + 8, dtype=dtype, eager=eager)
    try:
        served = classify_texts(llm, texts, max_length=max_length, progress=progress)
        vllm_labels = labels_of(llm)
        vllm_dtype = str(llm.llm_engine.model_config.dtype).removeprefix("torch.")
    finally:
        close_llm(llm)
    return _report(hf, served, hf_labels, vllm_labels, vllm_dtype)


def generative_agreement(
    model_dir: str | Path,
    texts: Sequence[str],
    *,
    dtype: str = "auto",
    eager: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """`vllm_agreement` for a generative model: transformers' label scoring vs. the vLLM engine's
    (`serving.generative.score_texts`); the query's max length is the model's own."""
    from serving.generative import open_generative_llm, score_texts
    from training.generative_scoring import generative_probabilities

    hf_labels, hf = generative_probabilities(model_dir, texts, progress=progress)
    gc.collect()
    llm = open_generative_llm(model_dir, dtype=dtype, eager=eager)
    try:
        served = score_texts(llm, model_dir, texts, progress=progress)
        vllm_labels = labels_of(llm)
        vllm_dtype = str(llm.llm_engine.model_config.dtype).removeprefix("torch.")
    finally:
        close_llm(llm)
    return {
        **_report(hf, served, hf_labels, vllm_labels, vllm_dtype),
        "max_row_sum_error": float(np.abs(served.sum(axis=1) - 1.0).max()),
        "objective": "generate",
    }


def _report(
    hf: np.ndarray, served: np.ndarray, hf_labels: Any, vllm_labels: Any, vllm_dtype: str
) -> dict[str, Any]:
    """transformers vs. vLLM on the same texts: argmax agreement, largest probability gap, labels."""
    agree = hf.argmax(axis=1) == served.argmax(axis=1)
    return {
        "n": len(hf),
        "agreement": float(agree.mean()),
        "disagreements": int((~agree).sum()),
        "max_abs_prob_diff": float(np.abs(hf - served).max()),
        "labels_match": hf_labels == vllm_labels,
        "vllm_dtype": vllm_dtype,
        "passed": bool(agree.mean() >= REQUIRED_AGREEMENT and hf_labels == vllm_labels),
    }
