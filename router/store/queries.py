"""Reads of the request log and feedback tables, for the commands that learn from them.

The writer (`router.store.writer`) owns every write; what reads the tables for other purposes
lives here, so no other package reaches into the router's tables: `switchboard retrain` reads
the feedback with `feedback_rows` (and for self-training the unlabelled texts with
`unlabelled_texts`) and hands plain rows to `training.retrain`; `GET /v1/review`,
`switchboard review export` and the review inbox read the review queue with `review_queue`, and
the inbox's header reads `review_stats`.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from sqlalchemy import Connection, Engine, Row, Select, exists, func, select

from router.store.db import create_db_engine
from router.store.models import feedback, requests, shadow_answers

ReviewStrategy = Literal[
    "uncertainty", "diverse", "fallback", "disagreement", "random", "audit", "shadow_disagreement"
]
REVIEW_STRATEGIES: tuple[str, ...] = get_args(ReviewStrategy)
REVIEW_LIMIT_MAX = 1000
SCAN_LIMIT = 50_000  # candidate rows a review query reads at most (the newest that match)


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


def unlabelled_texts(
    database_url: str, *, since: datetime | None = None, limit: int = SCAN_LIMIT
) -> list[str]:
    """Texts of logged requests nobody gave feedback on (from `since` on), newest first, one per
    normalised text, at most `limit` rows read: what `switchboard retrain --self-train` offers
    the champion to label. A text with feedback on any of its requests is left out."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    r = requests
    query = (
        select(r.c.text)
        .where(r.c.text.is_not(None))
        .where(~exists().where(feedback.c.request_id == r.c.id))
        .order_by(r.c.created_at.desc(), r.c.id.desc())
        .limit(limit)
    )
    if since is not None:
        query = query.where(r.c.created_at >= as_utc(since))
    with _connected(database_url) as engine, engine.connect() as conn:
        texts = conn.execute(query).scalars().all()
        labelled = labelled_texts(conn)
    unique: dict[str, str] = {}
    for text in texts:
        key = normalise_text(text)
        if key not in labelled:
            unique.setdefault(key, text)
    return list(unique.values())


# -- the review queue ---------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueItem:
    """One distinct text waiting for a person: the request shown, and every request with the same
    (normalised) text among the candidates."""

    request_id: str
    text: str
    predicted_intent: str  # the answer given (the escalation LLM's, when it overruled the model)
    confidence: float  # the tuned model's top-1 probability
    margin: float | None  # confidence - top2_confidence; None when top-2 was not logged
    alternatives: list[dict[str, Any]]  # top-k [{"intent", "probability"}]; [] before rev. 0003
    route: str
    fallback: bool
    fallback_reason: str | None
    model_version: str
    created_at: datetime
    escalation: str | None
    request_ids: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.request_ids)


def normalise_text(text: str) -> str:
    """The duplicate key of a query: Unicode-compatibility folded (NFKC), case-folded, whitespace
    collapsed, punctuation at either end stripped. "Why is my BILL so high??" and "why is my bill
    so high" are one text; a text of punctuation only keeps its punctuation."""
    folded = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    start, end = 0, len(folded)
    while start < end and _edge(folded[start]):
        start += 1
    while end > start and _edge(folded[end - 1]):
        end -= 1
    return folded[start:end] or folded


def _edge(char: str) -> bool:
    return char.isspace() or unicodedata.category(char)[0] in "PS"  # punctuation, symbols


_QUEUE_COLUMNS = (
    "id", "text", "intent", "confidence", "top2_confidence", "alternatives", "route", "fallback",
    "fallback_reason", "model_version", "created_at", "escalation",
)  # fmt: skip


def review_queue(
    engine_or_url: Engine | str,
    *,
    strategy: ReviewStrategy = "uncertainty",
    limit: int = 50,
    since: datetime | None = None,
    model_version: str | None = None,
    route: str | None = None,
    intent: str | None = None,
    seed: int = 0,
    scan_limit: int = SCAN_LIMIT,
) -> list[QueueItem]:
    """Logged requests worth a person's time: no feedback yet, text stored, matching the filters
    (`since`: created at or after; `model_version`, `route`, `intent`: equal), best first.

    - `uncertainty`: smallest margin (top-1 minus top-2 probability) first; rows logged without
      a top-2 probability (before schema revision 0003, or a one-label model) last.
    - `diverse`: the uncertainty order spread over the predicted intents: the least certain item
      of every intent, those in margin order, then every intent's second, and so on. Plain margin
      order fills a batch with the few intents a weak model confuses most; this takes at most
      ceil(limit / intents) of one predicted intent (a per-intent cap, as cluster-margin sampling
      caps each cluster: Citovsky et al. 2021).
    - `fallback`: requests the policy sent to the fallback route, newest first.
    - `disagreement`: requests the escalation LLM overruled (cascade mode), newest first.
    - `random`: a seeded random sample, the control group: each candidate is ranked by a hash of
      its id and `seed`, so one seed gives the same order for the same rows, and a new row does
      not reshuffle the others.
    - `shadow_disagreement`: requests where the model in shadow (a challenger, or the champion
      beside a canary) answered another intent than the customer got, newest first: the
      evidence a rollout's paired test needs (`router.store.evidence`).
    - `audit`: the requests the router marked for audit when it answered them (`audit_rate`),
      newest first, exactly those: no de-duplication, no scan limit, a text labelled on another
      request still offered (live accuracy is estimated from these, `router.store.audit`).

    Texts that are equal after `normalise_text` are one item: the first in the strategy's order
    is shown, `request_ids` lists every candidate with that text. A text with feedback on any of
    its requests is labelled already and is left out with all its copies. At most `limit` items
    (1..1000).

    The work is bounded: only the newest `scan_limit` candidate rows (default 50,000) that match
    the strategy and the filters are read and ranked, so on a larger log the uncertainty and
    random orders are those of the most recent traffic. Narrow it with `since` and the filters.
    """
    if strategy not in REVIEW_STRATEGIES:
        raise ValueError(f"unknown review strategy {strategy!r} (one of {', '.join(REVIEW_STRATEGIES)})")
    if not 1 <= limit <= REVIEW_LIMIT_MAX:
        raise ValueError(f"limit must be between 1 and {REVIEW_LIMIT_MAX}, not {limit}")
    if scan_limit < 1:
        raise ValueError(f"scan_limit must be at least 1, not {scan_limit}")
    r = requests
    if strategy == "audit":
        return _audit_queue(engine_or_url, limit, since, model_version, route, intent)
    query = (
        select(*(r.c[name] for name in _QUEUE_COLUMNS))
        .where(r.c.text.is_not(None))
        .where(~exists().where(feedback.c.request_id == r.c.id))
        .order_by(r.c.created_at.desc(), r.c.id.desc())
        .limit(scan_limit)
    )
    if strategy == "fallback":
        query = query.where(r.c.fallback.is_(True))
    elif strategy == "disagreement":
        query = query.where(r.c.escalation == "overruled")
    elif strategy == "shadow_disagreement":
        s = shadow_answers
        query = query.where(exists().where(s.c.request_id == r.c.id, s.c.intent != r.c.intent))
    query = _filtered(query, since, model_version, route, intent)
    with _connected(engine_or_url) as engine, engine.connect() as conn:
        rows = conn.execute(query).all()  # newest first
        labelled = labelled_texts(conn)
    # a text a person has labelled once (on any of its requests) needs no second look
    candidates = [item for item in map(_item, rows) if normalise_text(item.text) not in labelled]
    if strategy in ("uncertainty", "diverse"):
        candidates.sort(key=lambda c: (c.margin is None, c.margin or 0.0))  # stable: newest first
    if strategy == "diverse":
        candidates = _spread_over_intents(candidates)
    elif strategy == "random":
        candidates.sort(key=lambda c: hashlib.sha256(f"{seed}:{c.request_id}".encode()).digest())
    return _collapse(candidates, limit)


def _spread_over_intents(ranked: list[QueueItem]) -> list[QueueItem]:
    """`ranked` re-ordered round-robin over predicted intents, keeping each intent's order: every
    intent's first item (in `ranked` order), then every intent's second, and so on. Copies of
    one text share a rank, so duplicates of the same query do not take the places of others."""
    seen: Counter[str] = Counter()
    rank_of_text: dict[str, int] = {}
    keyed = []
    for position, item in enumerate(ranked):
        key = normalise_text(item.text)
        if key not in rank_of_text:
            rank_of_text[key] = seen[item.predicted_intent]
            seen[item.predicted_intent] += 1
        keyed.append((rank_of_text[key], position, item))
    return [item for _, _, item in sorted(keyed, key=lambda k: (k[0], k[1]))]


def _audit_queue(
    engine_or_url: Engine | str,
    limit: int,
    since: datetime | None,
    model_version: str | None,
    route: str | None,
    intent: str | None,
) -> list[QueueItem]:
    r = requests
    query = (
        select(*(r.c[name] for name in _QUEUE_COLUMNS))
        .where(r.c.audit.is_(True), r.c.text.is_not(None))
        .where(~exists().where(feedback.c.request_id == r.c.id))
        .order_by(r.c.created_at.desc(), r.c.id.desc())
        .limit(limit)
    )
    query = _filtered(query, since, model_version, route, intent)
    with _connected(engine_or_url) as engine, engine.connect() as conn:
        rows = conn.execute(query).all()
    items = [_item(row) for row in rows]
    for item in items:
        item.request_ids.append(item.request_id)
    return items


def _filtered(
    query: Select[Any],
    since: datetime | None,
    model_version: str | None,
    route: str | None,
    intent: str | None,
) -> Select[Any]:
    """The review filters: created at or after `since`; version, route, intent equal."""
    r = requests
    if since is not None:
        query = query.where(r.c.created_at >= as_utc(since))
    for column, value in ((r.c.model_version, model_version), (r.c.route, route), (r.c.intent, intent)):
        if value is not None:
            query = query.where(column == value)
    return query


def labelled_texts(conn: Connection) -> set[str]:
    """Normalised texts that have feedback on any of their requests: labelled once, never queued
    or offered again."""
    query = select(requests.c.text).join(feedback, feedback.c.request_id == requests.c.id)
    return {normalise_text(text) for text in conn.execute(query).scalars() if text is not None}


def _collapse(ordered: Sequence[QueueItem], limit: int) -> list[QueueItem]:
    """One item per normalised text, in order; each collects its duplicates' request ids."""
    by_text: dict[str, QueueItem] = {}
    for candidate in ordered:
        first = by_text.setdefault(normalise_text(candidate.text), candidate)
        first.request_ids.append(candidate.request_id)
    return list(by_text.values())[:limit]


def _item(row: Row[Any]) -> QueueItem:
    top2 = row.top2_confidence
    return QueueItem(
        request_id=row.id,
        text=row.text,
        predicted_intent=row.intent,
        confidence=row.confidence,
        margin=None if top2 is None else round(row.confidence - top2, 6),
        alternatives=list(row.alternatives or []),
        route=row.route,
        fallback=row.fallback,
        fallback_reason=row.fallback_reason,
        model_version=row.model_version,
        created_at=as_utc(row.created_at),
        escalation=row.escalation,
    )


def as_utc(value: datetime) -> datetime:
    """Aware UTC: SQLite keeps no zone (everything is written in UTC); naive input means UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@contextmanager
def _connected(engine_or_url: Engine | str) -> Iterator[Engine]:
    if not isinstance(engine_or_url, str):
        yield engine_or_url
        return
    engine = create_db_engine(engine_or_url)
    try:
        yield engine
    finally:
        engine.dispose()


# -- the review inbox's header ------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewStats:
    """What the review inbox shows above the queue, read from the store (so every replica agrees)."""

    # share of the newest `accuracy_window` feedback rows that agree, from every queue: biased to
    # the hard texts the queues pick, so not live accuracy (that is `router.store.audit`)
    agreement: float | None
    agreement_samples: int
    fallback_rate: float | None  # share of the newest `traffic_window` requests that fell back
    fallback_samples: int
    examples: dict[str, int]  # feedback rows naming each of `intents` (0 when none)
    reviewer_today: int  # feedback rows with `source == reviewer` since `today`


def review_stats(
    engine: Engine,
    *,
    intents: Sequence[str] = (),
    reviewer: str | None = None,
    today: datetime | None = None,
    accuracy_window: int = 500,
    traffic_window: int = 2000,
) -> ReviewStats:
    """Reviewed agreement and fallback rate over the newest rows, feedback examples per intent (how
    close a pending intent is to being trainable) and a reviewer's count since `today`."""
    f, r = feedback, requests
    recent_feedback = select(f.c.agree).order_by(f.c.created_at.desc()).limit(accuracy_window).subquery()
    recent_requests = select(r.c.fallback).order_by(r.c.created_at.desc()).limit(traffic_window).subquery()
    with engine.connect() as conn:
        agree = conn.execute(select(recent_feedback.c.agree)).scalars().all()
        fell_back = conn.execute(select(recent_requests.c.fallback)).scalars().all()
        examples = dict.fromkeys(intents, 0)
        if intents:
            by_intent = (
                select(f.c.correct_intent, func.count())
                .where(f.c.correct_intent.in_(list(intents)))
                .group_by(f.c.correct_intent)
            )
            examples.update({name: int(n) for name, n in conn.execute(by_intent).tuples()})
        mine = 0
        if reviewer is not None:
            query = select(func.count()).select_from(f).where(f.c.source == reviewer)
            if today is not None:
                query = query.where(f.c.created_at >= as_utc(today))
            mine = int(conn.execute(query).scalar_one())
    return ReviewStats(
        agreement=sum(map(bool, agree)) / len(agree) if agree else None,
        agreement_samples=len(agree),
        fallback_rate=sum(map(bool, fell_back)) / len(fell_back) if fell_back else None,
        fallback_samples=len(fell_back),
        examples=examples,
        reviewer_today=mine,
    )
