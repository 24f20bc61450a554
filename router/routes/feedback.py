"""`POST /v1/feedback`: the correct intent for a routed request, stored idempotently.

The correct intent is one the served model knows or one added since and pending (the registry's
taxonomy, `switchboard intents`): feedback naming a pending intent is how its training examples
are collected (stored with `agree` false: the model could not have said it).

`check_intent` and `record_feedback` are the one path feedback takes into the store (idempotency,
agree/disagree, the metrics): the review inbox (`router.web`) stores its labels through them too."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Response

from router.deps import IdempotencyKey, ModelDep, RuntimeDep
from router.errors import field_error, timed_out, unavailable
from router.runtime import LoadedModel, Runtime
from router.schemas import ErrorResponse, FeedbackRequest
from router.store import FeedbackItem, FeedbackRow, LogClosed, feedback_item

router = APIRouter(prefix="/v1", tags=["feedback"])

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No routed request has this request_id."},
    409: {"model": ErrorResponse, "description": "The Idempotency-Key was used for other feedback."},
    422: {
        "model": ErrorResponse,
        "description": "Unknown intent (the valid ones are listed) or an invalid body.",
    },
    503: {"model": ErrorResponse, "description": "Model loading or store shutting down."},
    504: {"model": ErrorResponse, "description": "The store did not answer in time."},
}


@router.post("/feedback", status_code=201, response_model=FeedbackRow, responses=ERRORS)
async def post_feedback(
    body: FeedbackRequest,
    response: Response,
    rt: RuntimeDep,
    model: ModelDep,
    idempotency_key: IdempotencyKey = None,
) -> FeedbackRow:
    """Record the correct intent for a request. A repeat (same body, or same Idempotency-Key)
    stores nothing new and returns the first one, marked by `Idempotent-Replayed: true`."""
    check_intent(rt, model, body.correct_intent)
    item = feedback_item(body.request_id, body.correct_intent, body.source, body.comment, idempotency_key)
    row, created = await record_feedback(rt, item)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return row


def check_intent(rt: Runtime, model: LoadedModel, correct_intent: str) -> None:
    """422 unless feedback may name `correct_intent` (a served intent or a pending one)."""
    if correct_intent not in rt.feedback_intents:  # the served intents and the pending ones
        valid = rt.taxonomy.feedback_labels() or list(model.policy.labels)
        pending = [i.name for i in rt.taxonomy.pending]
        note = f" (pending: {', '.join(pending)})" if pending else ""
        raise field_error(
            "correct_intent",
            f"unknown intent {correct_intent!r}; valid intents: {', '.join(valid)}{note}",
            "unknown_intent",
            allowed=valid,
        )


async def record_feedback(rt: Runtime, item: FeedbackItem) -> tuple[FeedbackRow, bool]:
    """Store `item` through the request log's writer: the row and whether it is new (False: a
    replay of stored feedback). 404 for an unknown request, 409 for a reused key, 503 / 504."""
    assert rt.log is not None  # set in the lifespan before any request
    try:
        async with asyncio.timeout(rt.settings.request_timeout_s):
            result = await rt.log.submit_feedback(item)
    except TimeoutError:
        raise timed_out(rt.settings.request_timeout_s) from None
    except LogClosed:
        raise unavailable("the feedback store is shutting down", rt.settings.retry_after_s) from None
    if result.status == "not_found":
        raise field_error(
            "request_id", f"no routed request with id {item.request_id!r}", "not_found", status=404
        )
    if result.status == "conflict" or result.row is None:
        raise field_error(
            "Idempotency-Key",
            "this key was already used for different feedback",
            "idempotency_key_reused",
            status=409,  # the request is valid; it conflicts with what the key already stored
        )
    row = result.row
    if result.status == "created":
        rt.metrics.observe_feedback(row.agree)
        rt.quality.observe_feedback(row.predicted_intent, row.agree)
    return row, result.status == "created"
