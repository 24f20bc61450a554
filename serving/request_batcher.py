"""Request batching for an engine that has no scheduler of its own (ONNX Runtime).

vLLM's scheduler batches the texts of all concurrent requests; an ONNX Runtime session runs one
call at a time. `RequestBatcher` gives it the same: concurrent `submit` calls queue, one
collector task on the event loop takes them into a batch, runs it in one worker thread (the
event loop keeps serving meanwhile), and hands each caller its rows.

When a batch starts:
- at once when its texts reach `max_batch`, and at once while the worker was busy (what queued
  during a run is the next batch: under load batches grow by themselves, and a lone request
  waits for nobody);
- otherwise after at most `max_wait_s` for as many requests as the previous batch held: the
  callers just answered tend to come back together (a load generator's or a client pool's
  connections), and a few milliseconds' wait makes one batch of them instead of a batch of one
  followed by a batch of the rest. After a batch of one request nothing waits.

A request larger than `max_batch` runs as its own batch. `observer(n)` is called on the event
loop with each batch's number of texts. A caller that gives up (its timeout, a cancelled task)
leaves the queue; a batch already running is not interrupted, its rows are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from serving.engine import BatchSizeObserver, EngineError

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 32  # texts; the export's speed measurement runs batches of this size too
DEFAULT_MAX_WAIT_S = 0.003


@dataclass
class _Request:
    texts: list[str]
    future: asyncio.Future[np.ndarray]


class RequestBatcher:
    """Batch concurrent calls of `run(texts) -> (len(texts), C) array` into one worker thread."""

    def __init__(
        self,
        run: Callable[[list[str]], np.ndarray],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        name: str = "batcher",
    ) -> None:
        self._run = run
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max(0.0, max_wait_s)
        self.observer: BatchSizeObserver | None = None
        self.batches = 0  # batches run so far (tests, debugging)
        self._name = name
        self._queue: deque[_Request] = deque()
        self._queued_texts = 0
        self._expected = 1  # requests in the previous batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._observer_failed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def submit(self, texts: Sequence[str]) -> np.ndarray:
        """This call's rows, once the batch that carries it has run."""
        if self._closed:
            raise EngineError(f"the {self._name} engine is closed")
        loop = asyncio.get_running_loop()
        arrived = self._start(loop)
        request = _Request(list(texts), loop.create_future())
        self._queue.append(request)
        self._queued_texts += len(request.texts)
        arrived.set()
        return await request.future

    def _start(self, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
        """The collector for this event loop (a new one if the engine moved to another loop)."""
        if self._loop is not loop or self._task is None or self._task.done() or self._arrived is None:
            self._loop = loop
            self._arrived = asyncio.Event()
            self._task = loop.create_task(self._collect(self._arrived), name=f"{self._name}-collector")
        return self._arrived

    async def _collect(self, arrived: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            if not self._queue:
                arrived.clear()
                await arrived.wait()
                continue
            await self._fill(arrived, loop)
            batch = self._take()
            if batch:
                await self._run_batch(batch, loop)

    async def _fill(self, arrived: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
        """Wait (at most `max_wait_s`) for as many requests as the previous batch had."""
        if self._expected <= 1 or self.max_wait_s <= 0:
            return
        deadline = loop.time() + self.max_wait_s
        while len(self._queue) < self._expected and self._queued_texts < self.max_batch:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            arrived.clear()
            try:
                async with asyncio.timeout(remaining):
                    await arrived.wait()
            except TimeoutError:
                return

    def _take(self) -> list[_Request]:
        """The next batch from the queue's head: whole requests, up to `max_batch` texts."""
        batch: list[_Request] = []
        texts = 0
        while self._queue:
            request = self._queue[0]
            if request.future.done():  # its caller gave up
                self._queue.popleft()
                self._queued_texts -= len(request.texts)
                continue
            if batch and texts + len(request.texts) > self.max_batch:
                break
            self._queue.popleft()
            self._queued_texts -= len(request.texts)
            batch.append(request)
            texts += len(request.texts)
        return batch

    async def _run_batch(self, batch: list[_Request], loop: asyncio.AbstractEventLoop) -> None:
        texts = [t for r in batch for t in r.texts]
        self._observe(len(texts))
        self.batches += 1
        self._expected = len(batch)
        try:
            probs = await loop.run_in_executor(self._executor, self._run, texts)
        except asyncio.CancelledError:  # closed while the batch ran: its callers get the error
            for r in batch:
                if not r.future.done():
                    r.future.set_exception(EngineError(f"the {self._name} engine is closed"))
            raise
        except Exception as err:
            failure = EngineError(f"{self._name} failed to classify: {type(err).__name__}: {err}")
            for r in batch:
                if not r.future.done():
                    r.future.set_exception(failure)
            return
        start = 0
        for r in batch:
            rows = probs[start : start + len(r.texts)]
            start += len(r.texts)
            if not r.future.done():
                r.future.set_result(rows)

    def _observe(self, n: int) -> None:
        observer = self.observer
        if observer is None:
            return
        try:
            observer(n)
        except Exception:  # a metrics failure must not fail the batch
            if not self._observer_failed:
                log.exception("batch size observer failed; further failures are silent")
            self._observer_failed = True

    async def close(self) -> None:
        """Fail what is queued with `EngineError`, stop the collector and the worker thread (a
        batch running in it finishes there; its callers were answered or have given up)."""
        if self._closed:
            return
        self._closed = True
        while self._queue:
            request = self._queue.popleft()
            if not request.future.done():
                request.future.set_exception(EngineError(f"the {self._name} engine is closed"))
        self._queued_texts = 0
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await task
        self._executor.shutdown(wait=False, cancel_futures=True)
