"""`GET /v1/review`: the review queue, the logged requests most worth a person's labelling time.

Admin only (the bearer token of `/v1/admin/*`: 404 when no token is configured, 401 / 403), as
the items are customer texts; for the same reason the answer is marked `Cache-Control: no-store`.
The query (`router.store.queries.review_queue`) runs in a worker thread on the app's database
engine, and needs no model: it answers while a model loads.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BeforeValidator

from router.deps import RuntimeDep, require_admin
from router.errors import unavailable
from router.schemas import ErrorResponse, ReviewAlternative, ReviewItem, ReviewResponse
from router.store.models import NAME_LENGTH
from router.store.queries import REVIEW_LIMIT_MAX, QueueItem, ReviewStrategy, review_queue

router = APIRouter(prefix="/v1", tags=["review"])


def _iso_8601(value: Any) -> Any:
    """Pydantic would also read `since=0.5` as a Unix time; the API promises ISO 8601 only."""
    if isinstance(value, str) and value.strip().lstrip("+-").replace(".", "", 1).isdigit():
        raise ValueError("must be an ISO 8601 date or date-time, e.g. 2026-11-30T12:00:00Z")
    return value


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": why}
    for code, why in {
        401: "No admin token sent.",
        403: "Wrong admin token.",
        404: "Admin endpoints are off (no admin_token configured).",
        422: "A query parameter is invalid; the field is named.",
        503: "The store is not open (starting or shutting down).",
    }.items()
}
Filter = Annotated[str | None, Query(min_length=1, max_length=NAME_LENGTH)]


@router.get(
    "/review",
    response_model=ReviewResponse,
    responses=ERRORS,
    dependencies=[Depends(require_admin)],
)
async def review(
    rt: RuntimeDep,
    response: Response,
    strategy: Annotated[
        ReviewStrategy,
        Query(
            description="uncertainty: smallest top-1 minus top-2 margin first; diverse: the "
            "uncertainty order taken round-robin over the predicted intents (at most "
            "ceil(limit / intents) of one intent); fallback: sent to "
            "the fallback route, newest first; disagreement: overruled by the escalation LLM, "
            "newest first; random: a seeded sample (the control group); audit: the random audit "
            "sample live accuracy is estimated from, exactly those; shadow_disagreement: the model "
            "in shadow answered another intent, newest first (a rollout's evidence)."
        ),
    ] = "uncertainty",
    limit: Annotated[int, Query(ge=1, le=REVIEW_LIMIT_MAX, description="Items at most.")] = 50,
    since: Annotated[
        datetime | None,
        BeforeValidator(_iso_8601),
        Query(description="Only requests logged at or after this time (ISO 8601 date or date-time)."),
    ] = None,
    model_version: Filter = None,
    route: Filter = None,
    intent: Annotated[
        str | None, Query(min_length=1, max_length=NAME_LENGTH, description="The predicted intent.")
    ] = None,
    seed: Annotated[int, Query(description="The random strategy's seed.")] = 0,
) -> ReviewResponse:
    """Requests without feedback whose text was logged, best first for the strategy; duplicates
    (same text up to case, spacing and end punctuation) are one item with every request id. Only
    the newest 50,000 matching requests are ranked."""
    response.headers["Cache-Control"] = "no-store"
    db = rt.db
    if db is None:
        raise unavailable("the request log is not open", rt.settings.retry_after_s)
    items = await asyncio.to_thread(
        review_queue,
        db,
        strategy=strategy,
        limit=limit,
        since=since,
        model_version=model_version,
        route=route,
        intent=intent,
        seed=seed,
    )
    return ReviewResponse(strategy=strategy, items=[_schema(item) for item in items])


def _schema(item: QueueItem) -> ReviewItem:
    return ReviewItem(
        request_id=item.request_id,
        text=item.text,
        predicted_intent=item.predicted_intent,
        confidence=item.confidence,
        margin=item.margin,
        alternatives=[ReviewAlternative.model_validate(a) for a in item.alternatives],
        route=item.route,
        fallback=item.fallback,
        fallback_reason=item.fallback_reason,
        escalation=item.escalation,
        model_version=item.model_version,
        created_at=item.created_at,
        count=item.count,
        request_ids=item.request_ids,
    )
