"""The engine interface the router talks to.

Three implementations sit behind `Engine`: the in-process vLLM `AsyncLLM` (`serving.local`, the
default: vLLM batches concurrent requests continuously), a remote `vllm serve --runner pooling`
reached over HTTP (`serving.remote`, for many replicas behind a load balancer), and ONNX Runtime
in-process (`serving.onnx_engine`: the small encoders on a CPU, batched by
`serving.request_batcher`). The router only sees `classify`, `ready`, `close`, `info` and
`batch_size_observer`, so it cannot tell them apart; each also names its `kind` (`local`,
`remote`, `onnx`) for the `engine` label of `switchboard_model_info`.
`serving.factory.open_engine` picks one; `serving.model_dir` reads the facts all report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from serving.model_dir import ModelInfo

BatchSizeObserver = Callable[[int], None]


class EngineError(RuntimeError):
    """The engine cannot answer: not loaded, shut down, remote unreachable, timed out.

    The message is meant for logs and operators; the router maps it to a 503 without details.
    """


@runtime_checkable
class Engine(Protocol):
    """What the router needs from an inference engine.

    `batch_size_observer`, when set, is called from the event loop with the number of requests
    in each engine step (local engine: vLLM's scheduler batches, across all concurrent
    `classify` calls; ONNX engine: the texts of each batch it runs). The remote engine cannot
    see the server's scheduler and never calls it.
    """

    info: ModelInfo
    batch_size_observer: BatchSizeObserver | None

    async def classify(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), len(info.labels)) float32 probabilities, rows in input order."""
        ...

    async def ready(self) -> bool:
        """True when the model is loaded and answers a probe classification; never raises."""
        ...

    async def close(self) -> None:
        """Release the engine (processes, connections); idempotent."""
        ...


PROBE_TEXT = "hello"


async def probe(engine: Engine, log: logging.Logger, what: str = "engine") -> bool:
    """`ready()` for the in-process engines: a probe classification answers one row per label."""
    try:
        probs = await engine.classify([PROBE_TEXT])
    except EngineError as err:
        log.warning("%s not ready: %s", what, err)
        return False
    return probs.shape == (1, len(engine.info.labels))
