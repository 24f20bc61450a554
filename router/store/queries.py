"""Reads of the request log and feedback tables, for the commands that learn from them.

The writer (`router.store.writer`) owns every write; what reads the tables for other purposes
lives here, so no other package reaches into the router's tables: `switchboard retrain` reads
the feedback with `feedback_rows` and hands plain rows to `training.retrain`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Row, select

from router.store.db import create_db_engine
from router.store.models import feedback, requests


def feedback_rows(
    database_url: str, *, since: datetime | None = None
) -> Sequence[Row[str, str, str, datetime, str | None, str]]:
    """Every feedback row (from `since` on), oldest first, joined with its request: `request_id`,
    `correct_intent`, `predicted_intent`, `created_at`, `text` (None when texts are not stored)
    and `model_version`."""
    engine = create_db_engine(database_url)
    query = (
        select(
            feedback.c.request_id,
            feedback.c.correct_intent,
            feedback.c.predicted_intent,
            feedback.c.created_at,
            requests.c.text,
            requests.c.model_version,
        )
        .join(requests, feedback.c.request_id == requests.c.id)
        .order_by(feedback.c.created_at)
    )
    if since is not None:
        query = query.where(feedback.c.created_at >= since)
    try:
        with engine.connect() as conn:
            return conn.execute(query).all()
    finally:
        engine.dispose()
