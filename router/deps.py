"""FastAPI dependencies, as `Annotated` types the handlers declare (resolved per request).

They are `async def` on purpose: FastAPI runs plain `def` dependencies in a worker thread,
and two thread hops per request would cost more than the rest of the router's work.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

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
