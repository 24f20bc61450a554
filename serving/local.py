"""In-process vLLM engine: `AsyncLLM` with the pooling runner, the default behind the router.

Every text is its own vLLM request, submitted concurrently, so vLLM's scheduler batches texts
from all in-flight HTTP requests together (continuous batching) instead of this code batching
per call. This is the hot path, so per text it does only: tokenize (inline, truncated exactly
like training: `truncation=True, max_length=info.max_length`), submit, await one output.

Texts are rendered with vLLM's own renderer on the event loop rather than passed as raw strings:
raw strings take a deprecated path that hops to a tokenizer thread per text; measured here that
cost more front-end CPU per query than tokenizing inline (short queries tokenize in ~0.1 ms).

Engine batch sizes come from a vLLM stat logger: after every engine step `AsyncLLM` calls
`record(scheduler_stats, iteration_stats)`; for a classifier each request finishes in the step
that computes it (the pooling runner does not chunk prompts), so
`len(iteration_stats.finished_requests)` is the step's batch size. vLLM's own Prometheus stat
logger, which it adds whenever stats are on, is removed again (see `_without_vllm_prometheus`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, Self

import numpy as np
import torch
from vllm import AsyncEngineArgs, PoolingParams
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.metrics.loggers import PrometheusStatLogger, StatLoggerBase
from vllm.v1.metrics.prometheus import unregister_vllm_metrics

from serving.engine import BatchSizeObserver, EngineError, probe
from serving.model_dir import ModelInfo
from serving.offline import engine_kwargs

log = logging.getLogger(__name__)

# A hot swap loads the new engine while the old one still serves and holds its memory; vLLM
# refuses to start an engine when less than its `gpu_memory_utilization` share is free, so at
# its default of 0.9 the second engine could never start. A live rollout holds the champion and
# the challenger, and a hot swap a third engine meanwhile: three at 0.3 fit with room for the CUDA
# contexts; a classifier needs little KV cache (short prompts, no generation): a 1B Llama's bf16
# weights are ~2.5 GB and 0.3 of an 80 GB GPU leaves ~21 GB of KV cache.
HOT_SWAP_GPU_SHARE = 0.3


class _BatchSink:
    """Where the stat logger sends batch sizes; the router swaps the observer at any time."""

    observer: BatchSizeObserver | None = None


class _BatchSizeLogger(StatLoggerBase):
    """A vLLM stat logger that forwards each engine step's batch size to `sink.observer`."""

    def __init__(self, sink: _BatchSink) -> None:
        self.sink = sink
        self.failed = False

    def record(
        self,
        scheduler_stats: Any,
        iteration_stats: Any,
        mm_cache_stats: Any = None,
        engine_idx: int = 0,
    ) -> None:
        observer = self.sink.observer
        if observer is None or iteration_stats is None:
            return
        n = len(iteration_stats.finished_requests)
        if not n:
            return
        try:
            observer(n)
        except Exception:  # raising here would kill vLLM's output handler, and the engine
            if not self.failed:
                log.exception("batch size observer failed; further failures are silent")
            self.failed = True

    def log_engine_initialized(self) -> None:
        pass


class LocalEngine:
    """`Engine` over an in-process `AsyncLLM` (its EngineCore runs in a child process)."""

    kind = "local"  # the `engine` label of switchboard_model_info

    def __init__(self, info: ModelInfo, llm: AsyncLLM, *, timeout_s: float, sink: _BatchSink) -> None:
        self.info = info
        self._llm: AsyncLLM | None = llm  # None once closed
        self._timeout_s = timeout_s
        self._sink = sink
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
        gpu_memory_utilization: float = HOT_SWAP_GPU_SHARE,
    ) -> Self:
        """Load the model; runs vLLM's blocking start-up in a thread so the event loop serves on.

        On a GPU it takes `gpu_memory_utilization` of the memory (default: small enough for two
        engines during a hot swap)."""
        share = gpu_memory_utilization
        kwargs = cls.engine_kwargs(info, dtype=dtype, eager=eager, gpu_memory_utilization=share)
        kwargs["disable_log_stats"] = True  # no periodic log lines; our stat logger still runs
        kwargs.update(overrides or {})
        sink = _BatchSink()
        llm: AsyncLLM | None = None
        try:
            llm = _without_vllm_prometheus(
                await asyncio.to_thread(
                    AsyncLLM.from_engine_args,
                    AsyncEngineArgs(**kwargs),
                    stat_loggers=[lambda vllm_config, engine_index: _BatchSizeLogger(sink)],
                )
            )
            return cls(info, llm, timeout_s=timeout_s, sink=sink)
        except Exception as err:
            if llm is not None:  # loaded, but the engine refused it (labels, prompt): stop it
                llm.shutdown()
            if isinstance(err, EngineError):
                raise
            raise EngineError(f"vLLM could not load {info.model_dir}: {err}") from err
        finally:
            llm = None  # nothing here may outlive `close()` holding the engine

    @classmethod
    def engine_kwargs(
        cls, info: ModelInfo, *, dtype: str, eager: bool, gpu_memory_utilization: float
    ) -> dict[str, Any]:
        """vLLM's engine arguments for this kind of model (here: a pooling classifier)."""
        return engine_kwargs(
            info.model_dir,
            max_model_len=info.max_length,
            dtype=dtype,
            eager=eager,
            gpu_memory_utilization=gpu_memory_utilization,
        )

    @property
    def batch_size_observer(self) -> BatchSizeObserver | None:
        """Called with the number of requests in each vLLM engine step (scheduler batch)."""
        return self._sink.observer

    @batch_size_observer.setter
    def batch_size_observer(self, observer: BatchSizeObserver | None) -> None:
        self._sink.observer = observer

    async def classify(self, texts: Sequence[str]) -> np.ndarray:
        llm = self._llm
        if llm is None:
            raise EngineError("the engine is closed")
        if not texts:
            return np.zeros((0, len(self.info.labels)), dtype=np.float32)
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._probabilities(llm, texts)
        except TimeoutError:
            raise EngineError(f"vLLM did not answer within {self._timeout_s:g} s") from None
        except EngineError:
            raise
        except Exception as err:  # EngineDeadError, a closed engine, a vLLM validation error
            raise EngineError(f"vLLM failed to classify: {type(err).__name__}: {err}") from err

    async def _probabilities(self, llm: AsyncLLM, texts: Sequence[str]) -> np.ndarray:
        """(N, C) float32 probabilities of non-empty `texts`; `classify` adds the timeout and errors."""
        inputs = llm.renderer.render_cmpl([{"prompt": t} for t in texts], self._tok_params)
        if len(inputs) == 1:
            rows = [await self._encode(llm, inputs[0])]
        else:
            rows = await _gather_or_cancel([self._encode(llm, x) for x in inputs])
        return torch.stack(rows).float().numpy()

    async def _encode(self, llm: AsyncLLM, engine_input: Any) -> torch.Tensor:
        final = None
        request_id = f"{self._id_prefix}{next(self._ids)}"
        async for output in llm.encode(engine_input, self._params, request_id=request_id):
            final = output
        if final is None:
            raise EngineError(f"vLLM returned no output for request {request_id}")
        return final.outputs.data

    async def ready(self) -> bool:
        if self._llm is None or self._llm.errored:
            return False
        return await probe(self, log)

    async def close(self) -> None:
        """Stop the EngineCore process; in-flight `classify` calls fail with `EngineError`.

        vLLM's `shutdown()` waits for its processes to exit (about 5 s on CPU), so it runs in a
        thread: a hot swap closing the old engine must not stall requests on the new one.
        """
        llm, self._llm = self._llm, None
        if llm is None:
            return
        # stop vLLM's output handler first, or it logs the dying EngineCore as an error
        handler = getattr(llm, "output_handler", None)
        if handler is not None and not handler.done():
            handler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await handler
        await _in_own_thread(llm.shutdown)


def _without_vllm_prometheus(llm: AsyncLLM) -> AsyncLLM:
    """Drop the Prometheus stat logger vLLM adds next to ours.

    It records ~20 series per request on the event loop (measured ~30 us/query, as much as all
    of vLLM's output processing) into prometheus_client's global registry, which the router
    does not export. If vLLM's internals move, this does nothing and the logger stays.
    """
    loggers = getattr(getattr(llm, "logger_manager", None), "stat_loggers", None)
    if isinstance(loggers, list):
        loggers[:] = [x for x in loggers if not isinstance(x, PrometheusStatLogger)]
        unregister_vllm_metrics()
    return llm


async def _in_own_thread(fn: Callable[[], object] | None) -> None:
    """Run `fn` in a new thread and wait for it without blocking the event loop.

    Not `asyncio.to_thread`: its pooled thread still referenced the AsyncLLM after `close()`
    returned, so the engine's `__del__` ran later, at interpreter exit, and printed an error.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def run() -> None:
        nonlocal fn
        try:
            if fn is not None:
                fn()
        except Exception:
            log.exception("vLLM shutdown failed")
        finally:
            fn = None  # drop the engine before waking the caller, not after
            with contextlib.suppress(RuntimeError):  # the loop closed: the caller gave up waiting
                loop.call_soon_threadsafe(done.set_result, None)

    threading.Thread(target=run, name="vllm-shutdown", daemon=True).start()
    await done


async def _gather_or_cancel(coros: list[Any]) -> list[torch.Tensor]:
    """`gather`, but a failure cancels the siblings (so vLLM aborts them) instead of leaking."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
