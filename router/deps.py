"""FastAPI dependencies, as `Annotated` types the handlers declare (resolved per request).

They are `async def` on purpose: FastAPI runs plain `def` dependencies in a worker thread,
and two thread hops per request would cost more than the rest of the router's work.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from router.errors import ApiError
from router.runtime import LoadedModel, Runtime


async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_model(runtime: RuntimeDep) -> LoadedModel:
    """The loaded model, or 503 with Retry-After while it loads (or after it failed to)."""
    return runtime.require_model()


ModelDep = Annotated[LoadedModel, Depends(get_model)]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Makes a retry safe: the same key returns the feedback stored first.",
    ),
]


async def require_admin(
    rt: RuntimeDep, authorization: Annotated[str | None, Header(include_in_schema=False)] = None
) -> None:
    """The admin bearer token (`admin_token`): 404 when none is configured (the endpoints do not
    exist), 401 without credentials, 403 with wrong ones. For `/v1/admin/*` and `/v1/review`."""
    token = rt.settings.admin_token
    if token is None:
        raise ApiError(404, "admin endpoints are off: set admin_token (SWITCHBOARD_ADMIN_TOKEN)")
    scheme, _, value = (authorization or "").strip().partition(" ")
    value = value.strip()
    if not value:  # no header, another scheme's header, or `Bearer` with nothing after it
        raise ApiError(
            401,
            "missing credentials: send Authorization: Bearer <admin token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        value.encode(), token.get_secret_value().encode()
    ):
        raise ApiError(403, "invalid admin token")
