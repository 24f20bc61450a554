"""The intent-discovery tables (router.store.models: `discovery_runs`, `proposals`,
`proposal_members`): what the discovery job reads from the request log and writes, and what the
API and the inbox read and change (router.discovery, router.routes.discover).

A proposal keeps its id across runs while its cluster grows; its members are requests (one per
distinct text), each `member`, `confirmed` (given to the proposal's intent as feedback) or
`removed` (a reviewer said it does not belong; a later run never adds it back).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from sqlalchemy import ColumnElement, Connection, Engine, and_, exists, func, or_, select, update

from router.store.feedback import insert_ignore
from router.store.models import discovery_runs, feedback, proposal_members, proposals, requests
from router.store.queries import as_utc as utc
from router.store.queries import labelled_texts, normalise_text

ProposalStatus = Literal["open", "named", "merged", "dismissed"]
PROPOSAL_STATUSES: tuple[str, ...] = get_args(ProposalStatus)
MemberState = Literal["member", "confirmed", "removed"]
SCAN_LIMIT = 50_000  # unrouted requests a run reads at most (the newest)


class ProposalNotFound(LookupError):
    """No proposal with this id."""


@dataclass(frozen=True)
class UnroutedQuery:
    """One distinct unrouted text: its newest request, and how many requests asked it."""

    request_id: str
    text: str
    created_at: datetime
    intent: str  # what the model answered
    confidence: float
    requests: int = 1


@dataclass(frozen=True)
class Member:
    request_id: str
    state: MemberState
    similarity: float
    text: str | None = None
    created_at: datetime | None = None
    predicted_intent: str | None = None


@dataclass
class Proposal:
    id: str
    status: ProposalStatus
    intent: str | None
    size: int
    previous_size: int | None
    dismissed_size: int | None
    keywords: list[str]
    examples: list[str]
    nearest_intent: str | None
    nearest_similarity: float | None
    centroid: list[float]
    model_version: str
    created_at: datetime
    updated_at: datetime
    last_run_id: str
    members: list[Member] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(get_args(MemberState), 0)
        for m in self.members:
            out[m.state] += 1
        return out


@dataclass(frozen=True)
class RunRecord:
    id: str
    started_at: datetime
    finished_at: datetime
    since: datetime
    until: datetime
    model_version: str
    requests: int
    unrouted: int
    candidates: int
    clustered: int
    proposals_open: int

    @property
    def unrouted_share(self) -> float | None:
        return self.unrouted / self.requests if self.requests else None


def new_id() -> str:
    return str(uuid.uuid4())


# -- what a run reads ---------------------------------------------------------------------------


def unrouted_queries(
    engine: Engine,
    since: datetime,
    until: datetime,
    *,
    oos_labels: Sequence[str] = ("oos",),
    below_confidence: float | None = None,
    below_margin: float | None = None,
    limit: int = SCAN_LIMIT,
) -> tuple[int, int, list[UnroutedQuery]]:
    """(requests with a text in [since, until), of them unrouted, the distinct unrouted texts).

    Unrouted: sent to the fallback, answered with an out-of-scope label, or (when given) under
    `below_confidence` top-1 or `below_margin` top-1 minus top-2. Texts someone already labelled
    (feedback on any request with that text) are left out; duplicates collapse onto the newest."""
    r = requests
    window = and_(r.c.text.is_not(None), r.c.created_at >= utc(since), r.c.created_at < utc(until))
    conditions: list[ColumnElement[bool]] = [r.c.fallback.is_(True), r.c.intent.in_(list(oos_labels))]
    if below_confidence is not None:
        conditions.append(r.c.confidence < below_confidence)
    if below_margin is not None:
        conditions.append(
            and_(r.c.top2_confidence.is_not(None), r.c.confidence - r.c.top2_confidence < below_margin)
        )
    unrouted = and_(window, or_(*conditions))
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(r).where(window)).scalar_one()
        count = conn.execute(select(func.count()).select_from(r).where(unrouted)).scalar_one()
        rows = conn.execute(
            select(r.c.id, r.c.text, r.c.created_at, r.c.intent, r.c.confidence)
            .where(unrouted)
            .where(~exists().where(feedback.c.request_id == r.c.id))
            .order_by(r.c.created_at.desc(), r.c.id.desc())
            .limit(limit)
        ).all()
        labelled = labelled_texts(conn)
    by_text: dict[str, list[Any]] = {}
    for row in rows:
        key = normalise_text(row.text)
        if key not in labelled:
            by_text.setdefault(key, []).append(row)
    out = [
        UnroutedQuery(
            first.id, first.text, utc(first.created_at), first.intent, float(first.confidence), len(group)
        )
        for first, group in ((group[0], group) for group in by_text.values())
    ]
    return int(total), int(count), out


# -- proposals ----------------------------------------------------------------------------------


def load_proposals(
    engine: Engine,
    statuses: Iterable[str] | None = None,
    *,
    with_texts: bool = False,
    ids: Iterable[str] | None = None,
) -> list[Proposal]:
    """Proposals (all, or those of `statuses` / `ids`), largest first, each with its members
    (most similar first; with their texts and answers when `with_texts`)."""
    p = proposals
    query = select(p).order_by(p.c.size.desc(), p.c.created_at, p.c.id)
    if statuses is not None:
        query = query.where(p.c.status.in_(list(statuses)))
    if ids is not None:
        query = query.where(p.c.id.in_(list(ids)))
    with engine.connect() as conn:
        found = [_proposal(row) for row in conn.execute(query).all()]
        if not found:
            return []
        by_id = {x.id: x for x in found}
        m, r = proposal_members, requests
        member_query = (
            select(m, r.c.text, r.c.created_at.label("asked_at"), r.c.intent)
            .join(r, r.c.id == m.c.request_id)
            .where(m.c.proposal_id.in_(list(by_id)))
            .order_by(m.c.similarity.desc(), m.c.request_id)
        )
        for row in conn.execute(member_query).all():
            by_id[row.proposal_id].members.append(
                Member(
                    row.request_id,
                    row.state,
                    float(row.similarity),
                    row.text if with_texts else None,
                    utc(row.asked_at) if with_texts else None,
                    row.intent if with_texts else None,
                )
            )
    return found


def get_proposal(engine: Engine, proposal_id: str) -> Proposal:
    found = load_proposals(engine, ids=[proposal_id], with_texts=True)
    if not found:
        raise ProposalNotFound(proposal_id)
    return found[0]


def _proposal(row: Any) -> Proposal:
    return Proposal(
        id=row.id,
        status=row.status,
        intent=row.intent,
        size=int(row.size),
        previous_size=row.previous_size,
        dismissed_size=row.dismissed_size,
        keywords=list(row.keywords or []),
        examples=list(row.examples or []),
        nearest_intent=row.nearest_intent,
        nearest_similarity=row.nearest_similarity,
        centroid=list(row.centroid or []),
        model_version=row.model_version,
        created_at=utc(row.created_at),
        updated_at=utc(row.updated_at),
        last_run_id=row.last_run_id,
    )


def save_proposal(conn: Connection, proposal: Proposal, members: Sequence[Member], now: datetime) -> None:
    """Insert or update `proposal` (its columns as given) and add `members` it lacks; members it
    has keep their state (a removed one stays removed, a confirmed one confirmed)."""
    values = {
        "status": proposal.status,
        "intent": proposal.intent,
        "size": proposal.size,
        "previous_size": proposal.previous_size,
        "dismissed_size": proposal.dismissed_size,
        "keywords": proposal.keywords,
        "examples": proposal.examples,
        "nearest_intent": proposal.nearest_intent,
        "nearest_similarity": proposal.nearest_similarity,
        "centroid": proposal.centroid,
        "model_version": proposal.model_version,
        "last_run_id": proposal.last_run_id,
        "updated_at": now,
    }
    changed = conn.execute(update(proposals).where(proposals.c.id == proposal.id).values(**values)).rowcount
    if not changed:
        conn.execute(proposals.insert().values(id=proposal.id, created_at=proposal.created_at, **values))
    if members:
        conn.execute(
            insert_ignore(conn, proposal_members),
            [
                {
                    "proposal_id": proposal.id,
                    "request_id": m.request_id,
                    "state": m.state,
                    "similarity": m.similarity,
                    "added_at": now,
                }
                for m in members
            ],
        )


def set_status(
    engine: Engine,
    proposal_id: str,
    status: ProposalStatus,
    *,
    intent: str | None = None,
    dismissed_size: int | None = None,
) -> None:
    values: dict[str, Any] = {"status": status, "updated_at": datetime.now(UTC)}
    if intent is not None:
        values["intent"] = intent
    if dismissed_size is not None:
        values["dismissed_size"] = dismissed_size
    with engine.begin() as conn:
        changed = conn.execute(
            update(proposals).where(proposals.c.id == proposal_id).values(**values)
        ).rowcount
    if not changed:
        raise ProposalNotFound(proposal_id)


def set_member_state(engine: Engine, proposal_id: str, request_ids: Sequence[str], state: MemberState) -> int:
    """Set the state of these members of the proposal; returns how many it has of them."""
    if not request_ids:
        return 0
    m = proposal_members
    with engine.begin() as conn:
        return int(
            conn.execute(
                update(m)
                .where(m.c.proposal_id == proposal_id, m.c.request_id.in_(list(request_ids)))
                .values(state=state)
            ).rowcount
        )


# -- runs ---------------------------------------------------------------------------------------


def record_run(conn: Connection, run: RunRecord) -> None:
    conn.execute(discovery_runs.insert().values(**run.__dict__))


def count_open(conn: Connection) -> int:
    return int(
        conn.execute(
            select(func.count()).select_from(proposals).where(proposals.c.status == "open")
        ).scalar_one()
    )


def last_run(engine: Engine) -> RunRecord | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(discovery_runs).order_by(discovery_runs.c.started_at.desc()).limit(1)
        ).first()
    if row is None:
        return None
    values = dict(row._mapping)
    for key in ("started_at", "finished_at", "since", "until"):
        values[key] = utc(values[key])
    return RunRecord(**values)


def open_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return count_open(conn)
