"""The request log writer: routed requests are queued in memory and written in batches.

Why a background writer: a database round trip per routed query would cost more than the
whole rest of the router, so `/v1/route` only appends a record to an asyncio queue
(sub-microsecond) and to the on-disk spool (one `write()`), and answers. One writer task drains
the queue: it lingers a few milliseconds after the first record so concurrent requests share a
transaction, then inserts everything queued (one executemany per table) in a worker thread, off
the event loop.

Guarantees:
- Nothing accepted is dropped: when the database is unavailable (`faults.is_transient`: lost
  or refused connections, admin shutdown, a read-only standby after a failover, locks) the
  batch is retried with backoff; the queue is bounded, and when it is full the router answers
  503 instead of accepting what it cannot store.
- A process killed while rows wait (SIGKILL, OOM) loses none of them: each row is in the spool
  (`spool.Spool`) before its answer is sent, and the next start replays the spool.
- One bad row never costs the batch: a batch the database rejects is bisected to the rows it
  refuses (about 2·log2(n) transactions per bad row, never one per row); such a row is stored
  repaired (`faults.repaired`: NUL and lone surrogates replaced, non-finite JSON numbers nulled)
  and only if that is refused too is it spilled: logged as a JSON line at ERROR and counted
  (`on_spill`).
- `close()` drains the queue before returning, which is what graceful shutdown awaits, within
  the time it is given, not longer: rows still unwritten then stay in the spool for the next
  start (without a spool they are spilled to the server log).
- Each request is written once: inserts use ON CONFLICT DO NOTHING on the primary key, so
  retrying a batch whose commit outcome is unknown, or replaying the spool, cannot duplicate rows.
- Feedback goes through the same FIFO queue, so it is written after the request it refers to
  even when that request is still buffered; its caller waits for the commit (feedback is rare,
  and a 201 should mean stored). Its id is derived from the idempotency key, so a repeat on
  any router replica finds and returns the same row.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from router.store.faults import is_transient, repaired, repaired_fields
from router.store.feedback import FeedbackItem, FeedbackResult, insert_ignore, store_feedback
from router.store.models import requests as requests_table
from router.store.models import shadow_answers as shadow_table
from router.store.records import RequestRecord, ShadowRecord
from router.store.spool import Spool

log = logging.getLogger(__name__)

T = TypeVar("T")


def new_request_id() -> str:
    """A UUIDv7 (time-ordered, so index inserts stay at the right edge of the B-tree)."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10))
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # RFC 4122 variant
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class LogClosed(RuntimeError):
    """The log is shut down, or could not store the item before the shutdown deadline."""


@dataclass
class WriterHooks:
    """Callbacks for metrics, so the store does not depend on the metrics module."""

    on_flush: Callable[[int, float], None] = lambda rows, seconds: None
    on_error: Callable[[], None] = lambda: None
    # rows given up to the server log: reason "rejected" (the database refuses even the repaired
    # row), "shutdown" (unwritten at the deadline, no spool) or "error" (a bug in the writer)
    on_spill: Callable[[int, str], None] = lambda rows, reason: None
    on_repair: Callable[[int], None] = lambda rows: None  # rows stored with bad values replaced
    on_spool_error: Callable[[], None] = lambda: None  # the spool could not be written


_STOP = object()


class _Rejected(Exception):
    """The database refused the data of a batch (not its availability)."""

    def __init__(self, err: BaseException) -> None:
        super().__init__(str(err))
        self.err = err


class RequestLog:
    """Owns the queue and the writer task; `start()` in the app lifespan, `close()` at exit."""

    def __init__(
        self,
        engine: Engine,
        *,
        linger_s: float = 0.05,
        batch_max: int = 1000,
        queue_max: int = 100_000,
        hooks: WriterHooks | None = None,
        spool: Spool | None = None,
    ) -> None:
        self.engine = engine
        self.linger_s = linger_s
        self.batch_max = batch_max
        self.queue_max = queue_max
        self.hooks = hooks or WriterHooks()
        self.spool = spool
        self._queue: asyncio.Queue[Any] = asyncio.Queue()  # bounded by hand: see log()
        self._urgent = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._deadline = float("inf")
        self._in_flight: list[Any] = []  # the batch being written (spilled if cut off)
        self._keep_spool = False  # rows were given up unwritten: the spool must keep them

    @property
    def backlog(self) -> int:
        """Records accepted but not yet committed (queued; the batch in flight excluded)."""
        return self._queue.qsize()

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def full(self) -> bool:
        return self._queue.qsize() >= self.queue_max

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="request-log")

    def log(self, record: RequestRecord) -> None:
        """Queue one routed request; never blocks, never touches the database. With a spool,
        the row is written to it first (to the kernel: it survives the process)."""
        if self._closing:
            raise LogClosed("the request log is shut down")
        spool = self.spool
        if spool is not None and not spool.failed:
            try:
                spool.append((record,))
            except OSError as err:  # disk full...: keep serving from memory, loudly
                spool.failed = True
                self._keep_spool = True
                self.hooks.on_spool_error()
                log.error(
                    "request log: spool %s not writable, rows are in memory only: %s", spool.directory, err
                )
        self._queue.put_nowait(record)

    def log_shadow(self, record: ShadowRecord) -> bool:
        """Queue a shadow answer (after its request, so FIFO writes it second); not spooled. False
        when it cannot be taken (shutting down, or the queue is full: customers' rows come first)."""
        if self._closing or self.full:
            return False
        self._queue.put_nowait(record)
        return True

    async def submit_feedback(self, item: FeedbackItem) -> FeedbackResult:
        """Queue feedback and wait until it is committed (or found to be a repeat)."""
        if self._closing:
            raise LogClosed("the request log is shut down")
        item.future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(item)
        self._urgent.set()
        return await asyncio.shield(item.future)  # a client timeout must not lose the write

    async def replay(self) -> int:
        """Store the rows of spool segments left by processes that died (before serving);
        returns how many rows were replayed. Idempotent: rows already stored are skipped by
        ON CONFLICT DO NOTHING."""
        if self.spool is None:
            return 0
        total = 0
        for path, records in self.spool.orphans():
            try:
                for start in range(0, len(records), self.batch_max):
                    await self._store(records[start : start + self.batch_max])
            except BaseException:
                self.spool.abandon(path)
                raise
            if self._keep_spool:  # cut off by a shutdown: keep the file for the next start
                self.spool.abandon(path)
                break
            self.spool.release(path)
            total += len(records)
            log.info("request log: replayed %d rows from spool segment %s", len(records), path.name)
        return total

    async def close(self, timeout_s: float = 30.0) -> None:
        """Write everything queued, then stop, within `timeout_s` in all: rows still unwritten
        then stay in the spool for the next start (without a spool they are logged as JSON at
        ERROR level). Idempotent."""
        if self._task is None:
            return
        self._closing = True
        self._deadline = time.monotonic() + timeout_s
        self._queue.put_nowait(_STOP)
        self._urgent.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), max(timeout_s, 0.001))
        except TimeoutError:  # a write blocked past the deadline (its thread is abandoned)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            left = [*self._in_flight, *(i for i in self._drain_all() if i is not _STOP)]
            self._give_up(left, "shutdown deadline passed")
        self._task = None
        if self.spool is not None:
            kept = self.spool.close(keep=self._keep_spool or self.spool.pending_rows > 0)
            if kept:
                log.error(
                    "request log: %d rows not written to the database; kept in the spool %s "
                    "and replayed at the next start",
                    kept, self.spool.directory,
                )  # fmt: skip

    # -- writer task ----------------------------------------------------------------------

    async def _run(self) -> None:
        stop = False
        while not stop:
            first = await self._queue.get()
            batch = [] if first is _STOP else [first]
            stop = first is _STOP
            if not stop and not self._closing and self.linger_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), self.linger_s)
            self._urgent.clear()
            while len(batch) < self.batch_max and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is _STOP:
                    stop = True
                    continue
                batch.append(item)
            if stop:  # closing: take what is left too (nothing should arrive after _STOP)
                batch += [i for i in self._drain_all() if i is not _STOP]
            spool = self.spool
            if spool is not None and spool.sync_due():
                await _in_thread(spool.sync)
            if not batch:
                continue
            self._in_flight = batch
            try:
                for start in range(0, len(batch), self.batch_max):
                    await self._store(batch[start : start + self.batch_max])
            except Exception:  # a bug here must not stop the log for good
                log.exception("request log: unexpected writer error")
                self._keep_spool = True  # spilled below, and replayed from the spool
                self._spill(batch, "writer error", "error")
            finally:
                self._in_flight = []
            if spool is not None and not self._keep_spool:
                spool.done(sum(isinstance(i, RequestRecord) for i in batch))

    def _drain_all(self) -> list[Any]:
        items = []
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        return items

    async def _store(self, items: list[Any], *, top: bool = True) -> None:
        """Write `items` (in order), retrying while the database is unavailable; when it
        rejects the data, bisect to the refused rows and store them repaired or spill them."""
        try:
            await self._commit(items)
        except _Rejected as rejected:
            if len(items) == 1:
                await self._store_alone(items[0], rejected.err)
                return
            if top:
                log.warning("request log: batch of %d rejected (%s); isolating the bad rows",
                            len(items), _brief(rejected.err))  # fmt: skip
            middle = len(items) // 2
            await self._store(items[:middle], top=False)  # in order: feedback after its request
            await self._store(items[middle:], top=False)

    async def _store_alone(self, item: Any, err: BaseException) -> None:
        fixed = repaired(item)
        if fixed is not item:
            try:
                await self._commit([fixed])
            except _Rejected as again:
                err = again.err
            else:
                what = type(item).__name__
                row_id = getattr(item, "id", None) or getattr(item, "request_id", None) or item.feedback_id
                log.warning(
                    "request log: %s %s stored with %s repaired (the database refused them: %s)",
                    what, row_id, ", ".join(repaired_fields(item, fixed)), _brief(err),
                )  # fmt: skip
                self.hooks.on_repair(1)
                return
        self._spill([item], f"rejected by the database: {_brief(err)}", "rejected")

    async def _commit(self, items: list[Any]) -> None:
        """One transaction for `items`, retried with backoff while the database is unavailable
        (until the shutdown deadline: then the items are given up). Raises `_Rejected` when the
        database refuses the data."""
        records = [i for i in items if isinstance(i, RequestRecord)]
        feedback = [i for i in items if isinstance(i, FeedbackItem)]
        shadows = [i for i in items if isinstance(i, ShadowRecord)]
        delay = 0.05
        while True:
            started = time.perf_counter()
            try:
                results = await _in_thread(self._attempt, records, feedback, shadows)
            except Exception as err:
                self.hooks.on_error()
                if not is_transient(err):
                    raise _Rejected(err) from err
                if time.monotonic() + delay > self._deadline:
                    self._give_up(items, f"database unavailable at shutdown: {_brief(err)}")
                    return
                log.warning("request log: database unavailable (%s); retrying", _brief(err))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self.hooks.on_flush(len(items), time.perf_counter() - started)
            for item, result in zip(feedback, results, strict=True):
                if item.future is not None and not item.future.done():
                    item.future.set_result(result)
            return

    def _give_up(self, items: Sequence[Any], why: str) -> None:
        """Shutdown cut these off: requests stay in the spool (replayed at the next start), or
        without one go to the server log; waiting feedback callers get an error."""
        self._keep_spool = True
        if self.spool is not None and not self.spool.failed:
            for item in items:
                if isinstance(item, FeedbackItem) and item.future is not None and not item.future.done():
                    item.future.set_exception(LogClosed(f"feedback not stored: {why}"))
            self._spill([i for i in items if not isinstance(i, RequestRecord)], why, "shutdown")
            return
        self._spill(items, why, "shutdown")

    def _spill(self, items: Sequence[Any], why: str, reason: str) -> None:
        """Last resort: rows the database would not take go to the log as JSON lines."""
        if items:
            self.hooks.on_spill(len(items), reason)
        for item in items:
            if isinstance(item, RequestRecord):
                log.error("request log: unwritten request (%s): %s", why, json.dumps(item._asdict()))
            elif isinstance(item, ShadowRecord):
                log.warning("request log: unwritten shadow answer (%s): %s", why, json.dumps(item._asdict()))
            elif isinstance(item, FeedbackItem):
                if item.future is not None and not item.future.done():
                    item.future.set_exception(LogClosed(f"feedback not stored: {why}"))
                fields = {k: v for k, v in vars(item).items() if k != "future"}
                log.error("request log: unwritten feedback (%s): %s", why, json.dumps(fields))

    # -- database side (worker thread) ---------------------------------------------------

    def _attempt(
        self,
        records: Sequence[RequestRecord],
        feedback: Sequence[FeedbackItem],
        shadows: Sequence[ShadowRecord] = (),
    ) -> list[FeedbackResult]:
        try:
            return self._write(records, feedback, shadows)
        except Exception as err:
            if is_transient(err) and self.engine.dialect.name != "sqlite":
                # the pooled connections may be dead, or open on a server that is read-only
                # since a failover: reconnect (through DNS / the virtual IP) on the retry
                with contextlib.suppress(Exception):
                    self.engine.dispose()
            raise

    def _write(
        self,
        records: Sequence[RequestRecord],
        feedback: Sequence[FeedbackItem],
        shadows: Sequence[ShadowRecord] = (),
    ) -> list[FeedbackResult]:
        with self.engine.begin() as conn:
            if records:
                conn.execute(insert_ignore(conn, requests_table), [_row(r) for r in records])
            if shadows:
                conn.execute(insert_ignore(conn, shadow_table), [_shadow_row(r) for r in shadows])
            return [store_feedback(conn, item) for item in feedback]


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a fresh daemon thread. Not `asyncio.to_thread`: the default executor's
    threads are joined at interpreter exit, so one write stuck on an unreachable database
    would keep a stopped router from exiting past its shutdown budget."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def work() -> None:
        try:
            result: Any = fn(*args)
            ok = True
        except BaseException as err:
            result, ok = err, False
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, ok, result)

    threading.Thread(target=work, name="request-log-write", daemon=True).start()
    return await future


def _row(r: RequestRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "created_at": datetime.fromtimestamp(r.ts, UTC),
        "text": r.text,
        "intent": r.intent,
        "confidence": r.confidence,
        "route": r.route,
        "fallback": r.fallback,
        "fallback_reason": r.reason,
        "model_version": r.model_version,
        "latency_ms": r.latency_ms,
        "meta": r.meta,
        "escalation": r.escalation,
        "escalation_model": r.escalation_model,
        "top2_confidence": r.top2_confidence,
        "alternatives": r.alternatives,
        "audit": r.audit,
    }


def _shadow_row(r: ShadowRecord) -> dict[str, Any]:
    row = r._asdict()
    row["created_at"] = datetime.fromtimestamp(row.pop("ts"), UTC)
    return row


def _brief(err: BaseException) -> str:
    orig = err.orig if isinstance(err, DBAPIError) else err
    first = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {first[0] if first else ''}"
