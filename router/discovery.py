"""The intent-discovery job's bookkeeping (`switchboard intents discover`, a CronJob beside the
retrain, runs it: router.cli.intents): what the router could not route, grouped into proposed
new intents kept in the database.

The job runs off the request path, with the training stack (the champion's encoder,
scikit-learn); this module holds its store side, so the router never imports training:
1. read the window's unrouted queries from the request log (router.store.discovery: fell back,
   out of scope, or under the optional confidence / margin cut; labelled texts and duplicates
   left out);
2. embed them with the champion's own pooled embedding and cluster them (training.discovery:
   HDBSCAN, noise left out), each cluster with its representative queries, keywords and nearest
   existing intent (the champion's `fewshot.json` examples give each intent's centroid);
3. match each cluster to the proposals already stored, so a proposal keeps its id while it grows:
   the same cluster if at least `same_overlap` of the smaller one's members are shared, or (same
   encoder only) if their centroids' cosine is at least `same_similarity`;
4. write: new proposals open; a matched one takes the new size (the old one is its trend) and
   any new members; a dismissed one opens again once it has grown `regrow_factor` times its
   size at dismissal; a run row records the window's unrouted share (`switchboard_unrouted_share`).

The router's API and inbox only read and act on what this writes (router.routes.discover).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
from sqlalchemy import Engine

from router.store.discovery import (
    Member,
    Proposal,
    RunRecord,
    UnroutedQuery,
    count_open,
    load_proposals,
    new_id,
    record_run,
    save_proposal,
)

log = logging.getLogger(__name__)


class FoundCluster(Protocol):
    """A cluster as training.discovery finds it (the router does not import training)."""

    members: list[int]
    similarity: list[float]
    centroid: np.ndarray
    examples: list[str]
    keywords: list[str]
    nearest_intent: str | None
    nearest_similarity: float | None


@dataclass
class DiscoverOptions:
    since: datetime
    until: datetime
    min_size: int = 10  # members a cluster needs to be proposed
    min_samples: int | None = None  # HDBSCAN's density neighbourhood; None: min_size
    dims: int = 10  # PCA dimensions the clustering sees
    below_confidence: float | None = None  # also unrouted: top-1 under this
    below_margin: float | None = None  # also unrouted: top-1 minus top-2 under this
    oos_labels: tuple[str, ...] = ("oos",)
    regrow_factor: float = 2.0  # a dismissed proposal opens again at this multiple of its size
    same_overlap: float = 0.5
    same_similarity: float = 0.9


@dataclass
class DiscoverySummary:
    run: RunRecord
    created: list[str] = field(default_factory=list)
    grown: list[str] = field(default_factory=list)  # matched an earlier proposal
    reopened: list[str] = field(default_factory=list)  # dismissed, grown past the factor

    def to_json(self) -> dict[str, Any]:
        run = self.run
        return {
            "run_id": run.id,
            "since": run.since.isoformat(),
            "until": run.until.isoformat(),
            "model_version": run.model_version,
            "requests": run.requests,
            "unrouted": run.unrouted,
            "unrouted_share": run.unrouted_share,
            "candidates": run.candidates,
            "clustered": run.clustered,
            "proposals_open": run.proposals_open,
            "created": self.created,
            "grown": self.grown,
            "reopened": self.reopened,
        }


def record(
    engine: Engine,
    queries: Sequence[UnroutedQuery],
    clusters: Sequence[FoundCluster],
    counts: tuple[int, int],
    model_version: str,
    opts: DiscoverOptions,
    started: datetime,
) -> DiscoverySummary:
    """Write one run: `clusters` (of `queries`, the window's distinct unrouted texts, by index)
    matched to the stored proposals, and the run row; `counts`: (requests, unrouted) in the window."""
    existing = load_proposals(engine)
    changed: dict[str, list[str]] = {"created": [], "grown": [], "reopened": []}
    now = datetime.now(UTC)
    run_id = new_id()
    taken: set[str] = set()
    with engine.begin() as conn:
        for cluster in clusters:
            members = [
                Member(queries[i].request_id, "member", sim)
                for i, sim in zip(cluster.members, cluster.similarity, strict=True)
            ]
            same = _match(cluster, members, existing, model_version, opts, taken)
            proposal = _updated(same, cluster, members, model_version, run_id, now, opts, changed)
            save_proposal(conn, proposal, members, now)
        run = RunRecord(
            id=run_id,
            started_at=started,
            finished_at=datetime.now(UTC),
            since=opts.since,
            until=opts.until,
            model_version=model_version,
            requests=counts[0],
            unrouted=counts[1],
            candidates=len(queries),
            clustered=sum(len(c.members) for c in clusters),
            proposals_open=count_open(conn),  # this transaction's proposals included
        )
        record_run(conn, run)
    return DiscoverySummary(run, **changed)


def _match(
    cluster: FoundCluster,
    members: list[Member],
    existing: list[Proposal],
    model_version: str,
    opts: DiscoverOptions,
    taken: set[str],
) -> Proposal | None:
    """The stored proposal this cluster continues, if any (each matched at most once a run)."""
    ids = {m.request_id for m in members}
    best, best_share = None, 0.0
    for p in existing:
        if p.id in taken or not p.members:
            continue
        shared = len(ids & {m.request_id for m in p.members})
        share = shared / min(len(ids), len(p.members))
        if share > best_share:
            best, best_share = p, share
    if best is None or best_share < opts.same_overlap:
        best = None
        centroid = cluster.centroid
        for p in existing:
            if p.id in taken or p.model_version != model_version or len(p.centroid) != len(centroid):
                continue
            similarity = float(np.dot(np.asarray(p.centroid, dtype=np.float32), centroid))
            if similarity >= opts.same_similarity:
                best = p
                break
    if best is not None:
        taken.add(best.id)
    return best


def _updated(
    same: Proposal | None,
    cluster: FoundCluster,
    members: list[Member],
    model_version: str,
    run_id: str,
    now: datetime,
    opts: DiscoverOptions,
    changed: dict[str, list[str]],
) -> Proposal:
    removed = {m.request_id for m in same.members if m.state == "removed"} if same else set()
    size = sum(m.request_id not in removed for m in members)
    fresh = Proposal(
        id=new_id(), status="open", intent=None, size=size, previous_size=None, dismissed_size=None,
        keywords=cluster.keywords, examples=cluster.examples, nearest_intent=cluster.nearest_intent,
        nearest_similarity=cluster.nearest_similarity,
        centroid=[round(float(x), 6) for x in cluster.centroid], model_version=model_version,
        created_at=now, updated_at=now, last_run_id=run_id,
    )  # fmt: skip
    if same is None:
        changed["created"].append(fresh.id)
        return fresh
    status = same.status
    if status == "dismissed" and same.dismissed_size and size >= opts.regrow_factor * same.dismissed_size:
        status = "open"
        changed["reopened"].append(same.id)
    changed["grown"].append(same.id)
    return replace(
        fresh, id=same.id, status=status, intent=same.intent, previous_size=same.size,
        dismissed_size=same.dismissed_size, created_at=same.created_at,
    )  # fmt: skip
