"""Feedback in a real store, logged as the router logs it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert

from router.store.db import create_db_engine, migrate
from router.store.models import feedback, requests


def store_feedback(url: str, items: list[tuple[str, str, str]]) -> None:
    """Log requests and their feedback, as the router does (text, predicted, corrected)."""
    engine = create_db_engine(url)
    migrate(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for i, (text, predicted, correct) in enumerate(items):
            rid = str(uuid.uuid4())
            at = now + timedelta(milliseconds=i)
            conn.execute(
                insert(requests).values(
                    id=rid,
                    created_at=at,
                    text=text,
                    intent=predicted,
                    confidence=0.5,
                    route="x",
                    fallback=False,
                    model_version="v0001",
                    latency_ms=1.0,
                )
            )
            conn.execute(
                insert(feedback).values(
                    id=str(uuid.uuid4()),
                    idempotency_key=rid,
                    payload_hash="h",
                    request_id=rid,
                    correct_intent=correct,
                    predicted_intent=predicted,
                    agree=predicted == correct,
                    created_at=at,
                )
            )
    engine.dispose()
