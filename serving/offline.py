"""Offline vLLM classification of a list of texts (benchmarks, export checks).

`runner="pooling"` resolves `--convert classify` for `*ForSequenceClassification` checkpoints;
`classify()` batches the whole list through the engine. vLLM spawns worker processes, so
scripts that call this need an `if __name__ == "__main__":` guard.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


def engine_kwargs(
    model_dir: str | Path, *, max_model_len: int = 128, dtype: str = "auto", eager: bool = False
) -> dict[str, Any]:
    """Engine arguments shared by the offline and the in-process async engine."""
    on_gpu = torch.cuda.is_available()
    return {
        "model": str(model_dir),
        "runner": "pooling",
        "max_model_len": max_model_len,
        "dtype": dtype,
        # on CPU vLLM sizes its KV cache from this share of RAM; 0.3 leaves room for the rest
        "gpu_memory_utilization": 0.9 if on_gpu else 0.3,
        "pooler_config": {"use_activation": True},  # classify -> softmax probabilities
        "enforce_eager": eager,  # skip graph compilation: faster start, slower steady state
        "seed": 0,
    }


def open_llm(
    model_dir: str | Path, *, max_model_len: int = 128, dtype: str = "auto", eager: bool = False
) -> Any:
    from vllm import LLM

    return LLM(**engine_kwargs(model_dir, max_model_len=max_model_len, dtype=dtype, eager=eager))


def classify_texts(
    llm: Any, texts: Sequence[str], *, max_length: int = 128, progress: bool = False
) -> np.ndarray:
    """(N, C) class probabilities from vLLM, texts truncated like the transformers path."""
    outputs = llm.classify(
        list(texts),
        use_tqdm=progress,
        tokenization_kwargs={"truncation": True, "max_length": max_length},
    )
    return np.asarray([o.outputs.probs for o in outputs], dtype=np.float32)


def labels_of(llm: Any) -> list[str]:
    id2label = llm.llm_engine.model_config.hf_config.id2label
    return [id2label[i] for i in range(len(id2label))]
