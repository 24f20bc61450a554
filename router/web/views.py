"""What the review inbox shows: the queue's filters, the intents to choose from, the header's
numbers. Plain functions over the runtime and the store (`router.store.queries`)."""

from __future__ import annotations

import asyncio
from collections.abc import Container, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import cast, get_args
from urllib.parse import urlencode

from router.runtime import Runtime
from router.store.audit import AccuracyEstimate, audit_accuracy
from router.store.discovery import open_count
from router.store.models import NAME_LENGTH
from router.store.queries import QueueItem, ReviewStats, ReviewStrategy, review_queue, review_stats
from router.text_rules import storable_problem

PAGE_ITEMS = 10  # items on one page; the count of those left runs to QUEUE_MAX
QUEUE_MAX = 1000
STRATEGIES: tuple[str, ...] = get_args(ReviewStrategy)
PROPOSAL_FILTERS = ("open", "named", "merged", "dismissed", "all")  # `GET /v1/discover`'s statuses
MEMBERS_SHOWN = 200  # a proposal's queries on its page (most similar first); "confirm all" takes every one


@dataclass(frozen=True)
class Filters:
    """The queue's controls; they travel in the page's URL (no texts in it, only these values)."""

    strategy: ReviewStrategy = "uncertainty"
    route: str | None = None
    intent: str | None = None
    model_version: str | None = None
    since: date | None = None

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> tuple[Filters, list[str]]:
        errors = []
        strategy = params.get("strategy") or "uncertainty"
        if strategy not in STRATEGIES:
            errors.append(f"unknown strategy {strategy!r}; showing uncertainty")
            strategy = "uncertainty"
        names: dict[str, str | None] = {}
        for key in ("route", "intent", "model_version"):
            value = (params.get(key) or "").strip() or None
            if value is not None and (len(value) > NAME_LENGTH or storable_problem(value)):
                errors.append(f"{key}: not a valid name; ignored")
                value = None
            names[key] = value
        since = None
        if params.get("since"):
            try:
                since = date.fromisoformat(params["since"])
            except ValueError:
                errors.append("since: not a date (YYYY-MM-DD); ignored")
        return cls(cast(ReviewStrategy, strategy), since=since, **names), errors

    def query(self) -> str:
        values = {
            "strategy": self.strategy if self.strategy != "uncertainty" else None,
            "route": self.route,
            "intent": self.intent,
            "model_version": self.model_version,
            "since": self.since.isoformat() if self.since else None,
        }
        return urlencode({k: v for k, v in values.items() if v})

    def since_utc(self) -> datetime | None:
        return datetime.combine(self.since, time(), UTC) if self.since else None


@dataclass(frozen=True)
class Choice:
    name: str
    route: str
    status: str


def choices(rt: Runtime) -> list[Choice]:
    """The intents feedback may name (served and pending), with their routes."""
    model = rt.model
    served_routes = model.policy.routes if model is not None else {}
    out = []
    for intent in rt.taxonomy.intents:
        if intent.status == "retiring":
            continue
        route = served_routes.get(intent.name) or intent.route or ""
        if intent.status == "renaming" and intent.renamed_to:
            out.append(Choice(intent.renamed_to, route, "renaming"))
        else:
            out.append(Choice(intent.name, route, intent.status))
    return out


def out_of_scope_label(rt: Runtime) -> str | None:
    """The label "not an intent of ours" stores: the model's out-of-scope label (`oos_labels`),
    or a pending intent with one of those names; None when there is neither."""
    model = rt.model
    served = model.policy.oos_labels if model is not None else ()
    for label in (*served, *rt.settings.oos_labels):
        if label in rt.feedback_intents:
            return label
    return None


def today() -> datetime:
    return datetime.combine(datetime.now(UTC).date(), time(), UTC)


async def queue(rt: Runtime, filters: Filters, skipped: Container[str] = ()) -> list[QueueItem]:
    if rt.db is None:
        return []
    items = await asyncio.to_thread(
        review_queue,
        rt.db,
        strategy=filters.strategy,
        limit=QUEUE_MAX,
        since=filters.since_utc(),
        model_version=filters.model_version,
        route=filters.route,
        intent=filters.intent,
    )
    return [item for item in items if item.request_id not in skipped]


async def live_accuracy(rt: Runtime) -> AccuracyEstimate | None:
    """The served model's accuracy on its labelled audit items (None before any)."""
    if rt.db is None or rt.model is None:
        return None
    estimates = await asyncio.to_thread(audit_accuracy, rt.db, window=rt.settings.accuracy_window)
    return estimates.get(rt.model.info.version)


async def stats(rt: Runtime, reviewer: str) -> ReviewStats | None:
    if rt.db is None:
        return None
    return await asyncio.to_thread(
        review_stats,
        rt.db,
        intents=[i.name for i in rt.taxonomy.pending],
        reviewer=reviewer,
        today=today(),
        accuracy_window=rt.settings.accuracy_window,
        traffic_window=rt.settings.drift_window,
    )


def left(items: list[QueueItem]) -> str:
    return f"{len(items)}+" if len(items) >= QUEUE_MAX else str(len(items))


def done_message(params: Mapping[str, str]) -> str | None:
    done, name = params.get("done"), params.get("name", "")
    if done == "labelled" and name:
        return f"Saved: {name}."
    if done == "skipped":
        return "Skipped: it stays in the queue for others."
    if done == "added" and name:
        return f"Added the pending intent {name}: it is in the list of intents now."
    if done == "unskipped":
        return "Your skipped items are back in the queue."
    return None


async def open_proposals(rt: Runtime) -> int | None:
    """How many proposed intents wait for a decision (the tab's count); None without a store."""
    if rt.db is None:
        return None
    return await asyncio.to_thread(open_count, rt.db)


def _count(params: Mapping[str, str], key: str) -> int:
    try:
        return max(int(params.get(key, "0")), 0)
    except ValueError:
        return 0


def _queries(n: int) -> str:
    return f"{n} {'query' if n == 1 else 'queries'}"


def proposal_done_message(params: Mapping[str, str]) -> str | None:
    """What a decision on a proposed intent did, from the redirect's `done`, `name` and `n` (a count)."""
    done, name, n = params.get("done"), params.get("name", ""), _count(params, "n")
    confirmed = f" {_queries(n)} confirmed as its examples." if n else ""
    if done == "named" and name:
        return f"Named it {name}: a pending intent now.{confirmed}"
    if done == "merged" and name:
        return f"Merged into {name}.{confirmed}"
    if done == "confirmed" and name:
        return f"Confirmed {_queries(n)} as {name}."
    if done == "removed":
        return f"Removed {_queries(n)}: a later run will not add them back."
    if done == "dismissed":
        return "Dismissed: it stays hidden unless a later run finds it much larger."
    return None
