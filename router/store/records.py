"""`RequestRecord`: one routed query as the router hands it to the request log (and the spool)."""

from __future__ import annotations

from typing import Any, NamedTuple


class RequestRecord(NamedTuple):
    """One routed query, as the router hands it to the log (timestamp as epoch seconds).

    The spool stores it as a JSON array of these fields in this order: add new fields at the
    end, with defaults, so rows spooled by an older version still load."""

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
    audit: bool = False  # in the random audit sample (`audit_rate`) that live accuracy is read from


class ShadowRecord(NamedTuple):
    """The second model's answer to a logged request (`shadow_answers`), written after its request.
    Not spooled: a shadow answer lost in a crash costs one piece of evidence, never a customer's row."""

    request_id: str
    ts: float
    model_version: str
    intent: str
    confidence: float
    fallback: bool
    latency_ms: float
