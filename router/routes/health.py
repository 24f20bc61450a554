"""Probes: `/livez` and `/readyz` (not counted as traffic)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from router.deps import RuntimeDep
from router.schemas import Health

router = APIRouter(tags=["operations"])


@router.get("/livez", response_model=Health, response_model_exclude_none=True)
async def livez() -> Health:
    """The process is up and serving HTTP (says nothing about the model)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(rt: RuntimeDep) -> JSONResponse:
    """200 once the model is loaded and answers; 503 while loading, after a failure, or when
    the engine stops answering, and from SIGTERM on (shutting down)."""
    model = rt.model
    if rt.shutdown_deadline is not None:
        return _health(503, "stopping", None if model is None else model.info.version, "shutting down")
    if model is None:
        status, reason = ("failed", rt.load_error) if rt.load_error else ("loading", "model loading")
        return _health(503, status, reason=reason)
    if not await rt.readiness.ready(model.engine):
        return _health(503, "unavailable", model.info.version, "the engine is not answering")
    return _health(200, "ready", model.info.version)


def _health(code: int, status: str, version: str | None = None, reason: str | None = None) -> JSONResponse:
    body = Health(status=status, model_version=version, reason=reason).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=code)
