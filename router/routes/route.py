"""`POST /v1/route` and `POST /v1/route/batch`: classify, apply the policy, log, answer.

The response is built as the `RouteResult` schema (the one definition the OpenAPI schema
shows) and serialised by pydantic-core straight to JSON bytes; the handlers return that as a
ready `Response`, so FastAPI does not validate and serialise it a second time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from router.deps import RuntimeDep
from router.errors import field_error
from router.schemas import (
    BatchRouteRequest,
    BatchRouteResponse,
    ErrorResponse,
    RouteRequest,
    RouteResult,
)

router = APIRouter(prefix="/v1", tags=["routing"])

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": why}
    for code, why in {
        422: "Invalid body: the field is named (too long, empty, wrong type, invalid JSON).",
        429: "Too many requests in flight; see Retry-After.",
        503: "Model loading or engine unavailable; see Retry-After.",
        504: "The request timed out.",
    }.items()
}


def _json(content: BaseModel) -> Response:
    return Response(content.model_dump_json(), media_type="application/json")


def _check_lengths(field: str, texts: Sequence[str], limit: int) -> None:
    for i, text in enumerate(texts):
        if len(text) > limit:
            name = field if field == "text" else f"{field}[{i}]"
            raise field_error(
                name,
                f"longer than the limit of {limit} characters ({len(text)} given)",
                "text_too_long",
            )


@router.post("/route", response_model=RouteResult, responses=ERRORS)
async def route_query(body: RouteRequest, request: Request, rt: RuntimeDep) -> Response:
    """Route one query: intent, route (or the fallback route), confidence and top-k; in cascade
    mode an unsure query is answered by the escalation LLM (see `escalation`)."""
    # inline, not a sub-dependency: this is the hot path; during a rollout the challenger may
    # answer (canary) and the other model classifies in shadow after the answer (router.shadow)
    model, shadow = rt.rollout.pick(body.metadata)
    _check_lengths("text", (body.text,), rt.settings.max_text_chars)
    scope = request.scope
    probs = await rt.classify(model, (body.text,), scope)
    decisions = model.policy.decide_batch(probs)
    escalations = await rt.escalate(model, decisions, (body.text,), scope) if model.escalator else None
    results = rt.record(model, decisions, (body.text,), body.metadata, scope, escalations)
    if shadow is not None:
        rt.rollout.shadow(shadow, (body.text,), results)
    return _json(results[0])


@router.post("/route/batch", response_model=BatchRouteResponse, responses=ERRORS)
async def route_batch(body: BatchRouteRequest, request: Request, rt: RuntimeDep) -> Response:
    """Route several queries in one engine call; results are in input order."""
    model, shadow = rt.rollout.pick(None)
    limit = rt.settings.max_batch
    if len(body.texts) > limit:
        raise field_error(
            "texts",
            f"more than the limit of {limit} texts ({len(body.texts)} given)",
            "too_many_texts",
        )
    _check_lengths("texts", body.texts, rt.settings.max_text_chars)
    rt.metrics.batch_size.observe(len(body.texts))
    scope = request.scope
    probs = await rt.classify(model, body.texts, scope)
    decisions = model.policy.decide_batch(probs)
    escalations = await rt.escalate(model, decisions, body.texts, scope) if model.escalator else None
    results = rt.record(model, decisions, body.texts, None, scope, escalations)
    if shadow is not None:
        rt.rollout.shadow(shadow, body.texts, results)
    return _json(BatchRouteResponse(results=results))
