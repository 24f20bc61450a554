"""In-process vLLM engine: `AsyncLLM` with the pooling runner, the default behind the router.

Every text is its own vLLM request, submitted concurrently, so vLLM's scheduler batches texts
from all in-flight HTTP requests together (continuous batching) instead of this code batching
per call. This is the hot path, so per text it does only: tokenize (inline, truncated exactly
like training: `truncation=True, max_length=info.max_length`), submit, await one output.

Texts are rendered with vLLM's own renderer on the event loop rather than passed as raw strings:
raw strings go through a deprecated path that hops to a tokenizer thread per text, which costs
more CPU than the tokenization itself for short queries.

Engine batch sizes come from a vLLM stat logger: after every engine step `AsyncLLM` calls
`record(scheduler_stats, iteration_stats)`; for a classifier each request finishes in the step
that computes it, so `len(iteration_stats.finished_requests)` is the step's batch size.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from serving.engine import BatchSizeObserver, EngineError, ModelInfo
from serving.offline import engine_kwargs

log = logging.getLogger(__name__)

PROBE_TEXT = "hello"


class _BatchSink:
    """Where the stat logger sends batch sizes; the router swaps the observer at any time."""

    observer: BatchSizeObserver | None = None


def _batch_logger_factory(sink: _BatchSink) -> Any:
    """A per-engine vLLM stat logger factory that forwards step batch sizes to `sink.observer`.

    Imported lazily: `vllm` is heavy and `serving.engine` must stay importable without it.
    """
    from vllm.v1.metrics.loggers import StatLoggerBase

    class BatchSizeLogger(StatLoggerBase):
        def __init__(self) -> None:
            self.failed = False

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            observer = sink.observer
            if observer is None or iteration_stats is None:
                return
            n = len(iteration_stats.finished_requests)
            if not n:
                return
            try:
                observer(n)
            except Exception:  # an exception here would kill vLLM's output handler
                if not self.failed:
                    log.exception("batch size observer failed; further failures are silent")
                self.failed = True

        def log_engine_initialized(self) -> None:
            pass

    return lambda vllm_config, engine_index: BatchSizeLogger()


class LocalEngine:
    """`Engine` over an in-process `AsyncLLM` (its EngineCore runs in a child process)."""

    def __init__(self, info: ModelInfo, llm: Any, *, timeout_s: float, sink: _BatchSink) -> None:
        from vllm import PoolingParams

        self.info = info
        self._llm = llm
        self._timeout_s = timeout_s
        self._sink = sink
        self._closed = False
        # built once: vLLM clones params per request, and the tokenize params never change
        self._params = PoolingParams(task="classify", use_activation=True)
        self._tok_params = llm.renderer.default_cmpl_tok_params.with_kwargs(
            truncation=True, max_length=info.max_length
        )
        self._ids = itertools.count()
        self._id_prefix = f"sb{os.getpid()}-{id(self):x}-"

    @classmethod
    async def open(
        cls,
        info: ModelInfo,
        *,
        dtype: str = "auto",
        eager: bool = False,
        timeout_s: float = 30.0,
        overrides: dict[str, Any] | None = None,
    ) -> LocalEngine:
        """Load the model; runs vLLM's blocking start-up in a thread so the event loop serves on."""
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        kwargs = engine_kwargs(
            info.model_dir, max_model_len=info.max_length, dtype=dtype, eager=eager
        )
        kwargs["disable_log_stats"] = True  # no periodic log lines; our stat logger still runs
        kwargs.update(overrides or {})
        sink = _BatchSink()
        try:
            llm = await asyncio.to_thread(
                AsyncLLM.from_engine_args,
                AsyncEngineArgs(**kwargs),
                stat_loggers=[_batch_logger_factory(sink)],
            )
        except Exception as err:
            raise EngineError(f"vLLM could not load {info.model_dir}: {err}") from err
        return cls(info, llm, timeout_s=timeout_s, sink=sink)

    @property
    def batch_size_observer(self) -> BatchSizeObserver | None:
        """Called with the number of requests in each vLLM engine step (scheduler batch)."""
        return self._sink.observer

    @batch_size_observer.setter
    def batch_size_observer(self, observer: BatchSizeObserver | None) -> None:
        self._sink.observer = observer

    async def classify(self, texts: Sequence[str]) -> np.ndarray:
        if self._closed:
            raise EngineError("the engine is closed")
        if not texts:
            return np.zeros((0, len(self.info.labels)), dtype=np.float32)
        try:
            async with asyncio.timeout(self._timeout_s):
                inputs = self._llm.renderer.render_cmpl(
                    [{"prompt": t} for t in texts], self._tok_params
                )
                if len(inputs) == 1:
                    rows = [await self._encode(inputs[0])]
                else:
                    rows = await _gather_or_cancel([self._encode(x) for x in inputs])
        except TimeoutError:
            raise EngineError(f"vLLM did not answer within {self._timeout_s:g} s") from None
        except Exception as err:
            raise EngineError(f"vLLM failed to classify: {type(err).__name__}: {err}") from err
        return torch.stack(rows).float().numpy()

    async def _encode(self, engine_input: Any) -> torch.Tensor:
        final = None
        request_id = f"{self._id_prefix}{next(self._ids)}"
        async for output in self._llm.encode(engine_input, self._params, request_id=request_id):
            final = output
        if final is None:
            raise EngineError(f"vLLM returned no output for request {request_id}")
        return final.outputs.data

    async def ready(self) -> bool:
        if self._closed or self._llm is None or self._llm.errored:
            return False
        try:
            probs = await self.classify([PROBE_TEXT])
        except EngineError as err:
            log.warning("engine not ready: %s", err)
            return False
        return probs.shape == (1, len(self.info.labels))

    async def close(self) -> None:
        """Stop the EngineCore process; in-flight `classify` calls fail with `EngineError`.

        `shutdown()` joins the child process, so it runs in a thread: a hot swap closing the old
        engine must not stall requests already served by the new one.
        """
        if self._closed:
            return
        self._closed = True
        llm, self._llm = self._llm, None  # let AsyncLLM.__del__ run now, not at interpreter exit
        await asyncio.to_thread(llm.shutdown)


async def _gather_or_cancel(coros: list[Any]) -> list[torch.Tensor]:
    """`gather`, but a failure cancels the siblings (so vLLM aborts them) instead of leaking."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
