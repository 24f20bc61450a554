"""ONNX Runtime engine: the small encoders served on the CPU at the hardware's speed.

The model directory's ONNX export (`serving.onnx_model`: fp32, or int8 where it passed the
quality rule) runs in one ONNX Runtime session; concurrent `classify` calls are batched by
`serving.request_batcher` (vLLM's scheduler does that for the local engine) and each batch runs
in one worker thread, so the event loop keeps serving. Start-up reads the tokenizer and the
ONNX file (well under a second for MiniLM), measures nothing, and loads no torch, transformers or
vLLM: `pip install ".[serve,onnx]"` is the whole install.

Texts are truncated to `ModelInfo.max_length` tokens as at training time, and the probabilities
are the softmax of the exported classifier's logits, columns in `info.labels` order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Self

import numpy as np

from serving.engine import BatchSizeObserver, EngineError, probe
from serving.hardware import available_cpus
from serving.model_dir import ModelDirError, ModelInfo
from serving.onnx_model import OnnxClassifier, served_onnx_file
from serving.request_batcher import DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT_S, RequestBatcher

log = logging.getLogger(__name__)


class OnnxEngine:
    """`Engine` over an ONNX Runtime session with request batching."""

    kind = "onnx"

    def __init__(
        self,
        info: ModelInfo,
        classifier: OnnxClassifier,
        *,
        timeout_s: float = 30.0,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
    ) -> None:
        self.info = info
        self.classifier = classifier
        self._timeout_s = timeout_s
        self._batcher = RequestBatcher(
            classifier.probabilities, max_batch=max_batch, max_wait_s=max_wait_s, name="ONNX Runtime"
        )

    @classmethod
    async def open(
        cls,
        info: ModelInfo,
        *,
        timeout_s: float = 30.0,
        threads: int = 0,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
    ) -> Self:
        """Load the export the model directory's report chose (in a thread: the loop serves on).

        `threads`: the session's intra-op threads; 0: one fewer than the cores this process may use
        (at least 1), leaving one to the event loop that parses, answers and logs every request, as
        vLLM's CPU engine reserves one for its front end. On the 2-core host of docs/BENCHMARKS.md
        the router at concurrency 32 answered 309 and 292 req/s with one thread against 253 and 249
        with two. `ModelDirError` when the directory has no servable ONNX export; `EngineError`
        when ONNX Runtime cannot load it or it does not answer with one column per label."""
        onnx_file = served_onnx_file(info.model_dir)
        threads = threads or max(1, available_cpus() - 1)
        try:
            classifier = await asyncio.to_thread(
                OnnxClassifier, info.model_dir, onnx_file, max_length=info.max_length, threads=threads
            )
        except ModelDirError:
            raise
        except Exception as err:
            raise EngineError(
                f"ONNX Runtime could not load {onnx_file}: {type(err).__name__}: {err}"
            ) from err
        if classifier.num_classes not in (None, len(info.labels)):
            raise EngineError(
                f"{onnx_file} answers {classifier.num_classes} classes, the model directory has "
                f"{len(info.labels)} labels: export it again (switchboard models export-onnx)"
            )
        log.info(
            "ONNX Runtime engine: %s, %d intra-op threads, batches of up to %d texts",
            onnx_file.name, classifier.threads, max_batch,
        )  # fmt: skip
        return cls(info, classifier, timeout_s=timeout_s, max_batch=max_batch, max_wait_s=max_wait_s)

    @property
    def batch_size_observer(self) -> BatchSizeObserver | None:
        """Called on the event loop with the number of texts in each batch the session runs."""
        return self._batcher.observer

    @batch_size_observer.setter
    def batch_size_observer(self, observer: BatchSizeObserver | None) -> None:
        self._batcher.observer = observer

    @property
    def batches(self) -> int:
        return self._batcher.batches

    async def classify(self, texts: Sequence[str]) -> np.ndarray:
        if self._batcher.closed:
            raise EngineError("the engine is closed")
        if not texts:
            return np.zeros((0, len(self.info.labels)), dtype=np.float32)
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._batcher.submit(texts)
        except TimeoutError:
            raise EngineError(f"ONNX Runtime did not answer within {self._timeout_s:g} s") from None

    async def ready(self) -> bool:
        return not self._batcher.closed and await probe(self, log)

    async def close(self) -> None:
        """Stop batching; queued calls fail with `EngineError`. Idempotent."""
        await self._batcher.close()
