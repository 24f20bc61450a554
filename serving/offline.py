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

from serving.hardware import cpu_has_native_bf16


def engine_kwargs(
    model_dir: str | Path,
    *,
    max_model_len: int = 128,
    dtype: str = "auto",
    eager: bool = False,
    gpu_memory_utilization: float = 0.9,
) -> dict[str, Any]:
    """Engine arguments shared by the offline and the in-process async engine.

    `gpu_memory_utilization` is the share of the GPU's memory this one engine may take (weights,
    activations, KV cache; vLLM refuses to start when less than that is free). The offline engine
    is alone and takes 0.9; the router's engine takes less, so that a hot swap can start a
    second one beside it (`serving.local.HOT_SWAP_GPU_SHARE`). Ignored on CPU."""
    on_gpu = torch.cuda.is_available()
    return {
        "model": str(model_dir),
        "runner": "pooling",
        "max_model_len": max_model_len,
        "dtype": resolve_dtype(dtype),
        # on CPU vLLM sizes its KV cache from this share of RAM; 0.3 leaves room for the rest
        # (and for a second engine during a hot swap: 0.6 together)
        "gpu_memory_utilization": gpu_memory_utilization if on_gpu else 0.3,
        "pooler_config": {"use_activation": True},  # classify -> softmax probabilities
        "enforce_eager": eager,  # skip graph compilation: faster start, slower steady state
        "seed": 0,
    }


def resolve_dtype(dtype: str) -> str:
    """`auto` on a CPU without native bf16 means float32; any other choice passes through.

    vLLM's own `auto` runs float32 checkpoints in float16, which CPUs without AVX-512 BF16/FP16
    or AMX emulate: on this AVX2-only machine MiniLM classified 25 queries/s in float16 and
    175/s in float32 (compiled, same load). CPUs with native bf16 get bfloat16; GPUs keep `auto`.
    """
    if dtype != "auto" or torch.cuda.is_available():
        return dtype
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def open_llm(
    model_dir: str | Path, *, max_model_len: int = 128, dtype: str = "auto", eager: bool = False
) -> Any:
    from vllm import LLM

    return LLM(**engine_kwargs(model_dir, max_model_len=max_model_len, dtype=dtype, eager=eager))


def close_llm(llm: Any, *, timeout: float = 10.0) -> None:
    """Stop an offline engine's processes and threads now and free it.

    `shutdown()` only signals vLLM's output thread (`EngineCoreOutputQueueThread`, a daemon);
    it does not wait for it. When the thread is still unwinding at interpreter exit, freeing
    the last outputs' tensors there re-takes the GIL during finalisation, Python ends the thread
    with `pthread_exit` inside a C++ destructor and the process aborts ("terminate called
    without an active exception", exit 134) after the work is done: 5 of 8 `check-vllm` runs
    here. Joining the thread first makes the exit clean.
    """
    import gc

    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None:
        core.shutdown()
        thread = getattr(core, "output_queue_thread", None)
        if thread is not None and thread.is_alive():
            thread.join(timeout)
    del llm
    gc.collect()


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
