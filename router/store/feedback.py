"""Feedback rows: what `POST /v1/feedback` and `switchboard feedback import` store, and the one
function that stores them, idempotently (the request log's writer task calls it in its batches).

A feedback id is derived from its idempotency key (the client's `Idempotency-Key` header, else
the payload), so a repeat on any router replica finds and returns the same row; the same key
with a different payload is a conflict.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Connection, Insert, Table, insert, select

from router.store.models import feedback as feedback_table
from router.store.models import requests as requests_table

_FEEDBACK_NAMESPACE = uuid.UUID("6f0c1d2e-5b7a-4c1e-9a43-3f2b7d9e8a10")


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


def insert_ignore(conn: Connection, table: Table) -> Insert:
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
    inserted = conn.execute(insert_ignore(conn, feedback_table).values(values)).rowcount
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
