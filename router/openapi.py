"""The published OpenAPI document says what the running router enforces.

FastAPI derives the schema from the pydantic models, which know the static rules (types, the
text pattern of `router.text_rules`). What depends on the running configuration is added per
request of `/openapi.json`: the text length (`max_text_chars`), the batch size (`max_batch`),
the intents feedback may name (served and pending: they change with a reload or a taxonomy
change), and the answers the traffic middleware gives before any handler runs (408, 413, 429).
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from router.runtime import Runtime

_BODY_ERRORS = {
    "408": "The request body did not arrive within `body_timeout_s`.",
    "413": "The request body is larger than `max_body_bytes`.",
    "429": "Too many requests in flight; see Retry-After.",
}


def install_openapi(app: FastAPI, runtime: Runtime) -> None:
    base: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not base:
            base.update(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    summary=app.summary,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return _with_runtime(copy.deepcopy(base), runtime)

    app.openapi = openapi  # type: ignore[method-assign]


def _with_runtime(schema: dict[str, Any], rt: Runtime) -> dict[str, Any]:
    settings = rt.settings
    components = schema.get("components", {}).get("schemas", {})
    text = components.get("RouteRequest", {}).get("properties", {}).get("text")
    if text is not None:
        text["maxLength"] = settings.max_text_chars
    texts = components.get("BatchRouteRequest", {}).get("properties", {}).get("texts")
    if texts is not None:
        texts["maxItems"] = settings.max_batch
        texts.get("items", {})["maxLength"] = settings.max_text_chars
    intent = components.get("FeedbackRequest", {}).get("properties", {}).get("correct_intent")
    if intent is not None and rt.feedback_intents:
        intent["enum"] = sorted(rt.feedback_intents)
    for path in schema.get("paths", {}).values():
        for method, operation in path.items():
            if method in ("post", "put", "patch"):
                responses = operation.setdefault("responses", {})
                for code, why in _BODY_ERRORS.items():
                    responses.setdefault(
                        code,
                        {
                            "description": why,
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
                            },
                        },
                    )
    return schema
