"""The request log writer: routed requests are queued in memory and written in batches.

Why a background writer: a database round trip per routed query would cost more than the
whole rest of the router, so `/v1/route` only appends a record to an asyncio queue
(sub-microsecond) and answers. One writer task drains the queue: it lingers a few
milliseconds after the first record so concurrent requests share a transaction, then inserts
everything queued (one executemany per table) in a worker thread, off the event loop.

Guarantees:
- Nothing accepted is dropped: transient database errors are retried with backoff (the queue
  is bounded; when it is full the router answers 503 instead of accepting what it cannot
  store), and `close()` drains the queue before returning, which is what graceful shutdown
  (SIGTERM) awaits. Rows that still cannot be written when the shutdown deadline passes are
  logged as JSON lines at ERROR, never silently discarded.
- Each request is written once: inserts use ON CONFLICT DO NOTHING on the primary key, so
  retrying a batch whose commit outcome is unknown cannot duplicate rows.
- Feedback goes through the same FIFO queue, so it is written after the request it refers to
  even when that request is still buffered; its caller waits for the commit (feedback is rare,
  and a 201 should mean stored). Its id is derived from the idempotency key, so a repeat on
  any router replica finds and returns the same row.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from sqlalchemy import Connection, Engine, Insert, Table, insert, select
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError

from router.store.models import feedback as feedback_table
from router.store.models import requests as requests_table

log = logging.getLogger(__name__)

_FEEDBACK_NAMESPACE = uuid.UUID("6f0c1d2e-5b7a-4c1e-9a43-3f2b7d9e8a10")


def new_request_id() -> str:
    """A UUIDv7 (time-ordered, so index inserts stay at the right edge of the B-tree)."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10))
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # RFC 4122 variant
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class RequestRecord(NamedTuple):
    """One routed query, as the router hands it to the log (timestamp as epoch seconds)."""

    id: str
    ts: float
    text: str | None
    intent: str
    confidence: float
    route: str
    fallback: bool
    reason: str | None
    model_version: str
    latency_ms: float
    meta: dict[str, Any] | None
    escalation: str | None = None  # outcome, when the query was escalated (cascade mode)
    escalation_model: str | None = None
    top2_confidence: float | None = None  # the second-highest probability (None: one-label model)
    alternatives: list[dict[str, Any]] | None = None  # top-k [{"intent", "probability"}]


@dataclass(frozen=True)
class FeedbackRow:
    """A stored feedback row; also the body `POST /v1/feedback` answers with (one definition)."""

    feedback_id: str
    request_id: str
    correct_intent: str
    predicted_intent: str
    agree: bool
    source: str | None
    comment: str | None
    created_at: datetime


@dataclass(frozen=True)
class FeedbackResult:
    status: Literal["created", "replayed", "not_found", "conflict"]
    row: FeedbackRow | None = None


@dataclass
class FeedbackItem:
    request_id: str
    correct_intent: str
    source: str | None
    comment: str | None
    key: str
    payload_hash: str
    ts: float = field(default_factory=time.time)
    future: asyncio.Future[FeedbackResult] | None = None

    @property
    def feedback_id(self) -> str:
        return str(uuid.uuid5(_FEEDBACK_NAMESPACE, self.key))


def feedback_item(
    request_id: str,
    correct_intent: str,
    source: str | None = None,
    comment: str | None = None,
    idempotency_key: str | None = None,
) -> FeedbackItem:
    """Feedback with its idempotency key: the client's `Idempotency-Key` header when given,
    else the payload itself (so an identical repeat is recognised without a header)."""
    payload = json.dumps([request_id, correct_intent, source, comment], ensure_ascii=False)
    payload_hash = hashlib.sha256(payload.encode()).hexdigest()
    key = f"h:{idempotency_key}" if idempotency_key else f"p:{payload_hash}"
    return FeedbackItem(request_id, correct_intent, source, comment, key, payload_hash)


class LogClosed(RuntimeError):
    """The log is shut down, or could not store the item before the shutdown deadline."""


@dataclass
class WriterHooks:
    """Callbacks for metrics, so the store does not depend on the metrics module."""

    on_flush: Callable[[int, float], None] = lambda rows, seconds: None
    on_error: Callable[[], None] = lambda: None


_STOP = object()
_TRANSIENT = (OperationalError, DisconnectionError)


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
    ) -> None:
        self.engine = engine
        self.linger_s = linger_s
        self.batch_max = batch_max
        self.queue_max = queue_max
        self.hooks = hooks or WriterHooks()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()  # bounded by hand: see log()
        self._urgent = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._deadline = float("inf")
        self._in_flight: list[Any] = []  # the batch being written (spilled if cut off)

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
        """Queue one routed request; never blocks, never touches the database."""
        if self._closing:
            raise LogClosed("the request log is shut down")
        self._queue.put_nowait(record)

    async def submit_feedback(self, item: FeedbackItem) -> FeedbackResult:
        """Queue feedback and wait until it is committed (or found to be a repeat)."""
        if self._closing:
            raise LogClosed("the request log is shut down")
        item.future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(item)
        self._urgent.set()
        return await asyncio.shield(item.future)  # a client timeout must not lose the write

    async def close(self, timeout_s: float = 30.0) -> None:
        """Write everything queued, then stop; rows still unwritten after `timeout_s` are
        logged as JSON at ERROR level. Idempotent."""
        if self._task is None:
            return
        self._closing = True
        self._deadline = time.monotonic() + timeout_s
        self._queue.put_nowait(_STOP)
        self._urgent.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s + 5)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._spill([*self._in_flight, *self._drain_all()], "shutdown deadline passed")
        self._task = None

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
            if batch:
                self._in_flight = batch
                try:
                    await self._write_with_retry(batch)
                except Exception:  # a bug here must not stop the log for good
                    log.exception("request log: unexpected writer error")
                    self._spill(batch, "writer error")
                finally:
                    self._in_flight = []

    def _drain_all(self) -> list[Any]:
        items = []
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        return items

    async def _write_with_retry(self, batch: list[Any]) -> None:
        records = [i for i in batch if isinstance(i, RequestRecord)]
        feedback = [i for i in batch if isinstance(i, FeedbackItem)]
        delay = 0.05
        while True:
            started = time.perf_counter()
            try:
                results = await asyncio.to_thread(self._write, records, feedback)
            except _TRANSIENT as err:
                self.hooks.on_error()
                if time.monotonic() + delay > self._deadline:
                    self._spill(batch, f"database unavailable at shutdown: {err.__class__.__name__}")
                    return
                log.warning("request log: database unavailable (%s); retrying", _brief(err))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            except Exception:
                # Not a connection problem: a row the database rejects. Write one by one so a
                # single bad row cannot block everything behind it.
                self.hooks.on_error()
                log.exception("request log: batch rejected; writing row by row")
                await self._write_one_by_one(records, feedback)
                return
            self.hooks.on_flush(len(batch), time.perf_counter() - started)
            for item, result in zip(feedback, results, strict=True):
                if item.future is not None and not item.future.done():
                    item.future.set_result(result)
            return

    async def _write_one_by_one(self, records: list[RequestRecord], feedback: list[FeedbackItem]) -> None:
        for record in records:
            try:
                await asyncio.to_thread(self._write, [record], [])
            except Exception as err:
                self._spill([record], _brief(err))
        for item in feedback:
            try:
                (result,) = await asyncio.to_thread(self._write, [], [item])
            except Exception as err:
                self._spill([item], _brief(err))
                continue
            if item.future is not None and not item.future.done():
                item.future.set_result(result)

    def _spill(self, items: Sequence[Any], why: str) -> None:
        """Last resort: rows the database would not take go to the log as JSON lines."""
        for item in items:
            if isinstance(item, RequestRecord):
                log.error("request log: unwritten request (%s): %s", why, json.dumps(item._asdict()))
            elif isinstance(item, FeedbackItem):
                if item.future is not None and not item.future.done():
                    item.future.set_exception(LogClosed(f"feedback not stored: {why}"))
                fields = {k: v for k, v in vars(item).items() if k != "future"}
                log.error("request log: unwritten feedback (%s): %s", why, json.dumps(fields))

    # -- database side (worker thread) ---------------------------------------------------

    def _write(
        self, records: Sequence[RequestRecord], feedback: Sequence[FeedbackItem]
    ) -> list[FeedbackResult]:
        with self.engine.begin() as conn:
            if records:
                conn.execute(_insert_ignore(conn, requests_table), [_row(r) for r in records])
            return [store_feedback(conn, item) for item in feedback]


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
    }


def _insert_ignore(conn: Connection, table: Table) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING where the backend has it (both supported ones do)."""
    name = conn.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()
    return insert(table)


def store_feedback(conn: Connection, item: FeedbackItem) -> FeedbackResult:
    """Store one feedback item on `conn` (in the caller's transaction), idempotently: a repeat
    of its key returns the stored row as `replayed`. The writer task and `switchboard feedback
    import` both store feedback through this one function."""
    existing = _feedback_by_key(conn, item)
    if existing is not None:
        return existing
    predicted = conn.execute(
        select(requests_table.c.intent).where(requests_table.c.id == item.request_id)
    ).scalar_one_or_none()
    if predicted is None:
        return FeedbackResult("not_found")
    row = FeedbackRow(
        feedback_id=item.feedback_id,
        request_id=item.request_id,
        correct_intent=item.correct_intent,
        predicted_intent=predicted,
        agree=predicted == item.correct_intent,
        source=item.source,
        comment=item.comment,
        created_at=datetime.fromtimestamp(item.ts, UTC),
    )
    values = {**_columns(row), "idempotency_key": item.key, "payload_hash": item.payload_hash}
    inserted = conn.execute(_insert_ignore(conn, feedback_table).values(values)).rowcount
    if inserted == 0:  # another replica stored the same key since we looked
        return _feedback_by_key(conn, item) or FeedbackResult("conflict")
    return FeedbackResult("created", row)


def _feedback_by_key(conn: Connection, item: FeedbackItem) -> FeedbackResult | None:
    t = feedback_table
    found = conn.execute(select(t).where(t.c.idempotency_key == item.key)).mappings().one_or_none()
    if found is None:
        return None
    if found["payload_hash"] != item.payload_hash:
        return FeedbackResult("conflict")
    created = found["created_at"]
    if created.tzinfo is None:  # SQLite keeps no zone; everything is written in UTC
        created = created.replace(tzinfo=UTC)
    fields = {k: found[k] for k in FeedbackRow.__dataclass_fields__ if k not in ("feedback_id", "created_at")}
    return FeedbackResult("replayed", FeedbackRow(feedback_id=found["id"], **fields, created_at=created))


def _columns(row: FeedbackRow) -> dict[str, Any]:
    """The feedback table's columns for `row` (its id column is `id`)."""
    values = dict(vars(row))
    values["id"] = values.pop("feedback_id")
    return values


def _brief(err: BaseException) -> str:
    orig = err.orig if isinstance(err, DBAPIError) else err
    first = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {first[0] if first else ''}"
