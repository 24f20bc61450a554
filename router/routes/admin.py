"""`POST /v1/admin/reload` and `/v1/admin/rollback`: change the served model without downtime.

Protected by a bearer token from settings (`admin_token`); with no token configured the
endpoints answer 404, so a deployment that never set one exposes nothing. Missing credentials
are 401, wrong ones 403. A model that fails to load leaves the old one serving (503, reported).
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Header
from pydantic import BaseModel, Field

from router.deps import RuntimeDep
from router.errors import ApiError, field_error, unavailable
from router.schemas import ErrorResponse
from serving.registry import Registry, RegistryError

router = APIRouter(prefix="/v1/admin", tags=["admin"])


async def require_admin(
    rt: RuntimeDep, authorization: Annotated[str | None, Header(include_in_schema=False)] = None
) -> None:
    token = rt.settings.admin_token
    if token is None:
        raise ApiError(404, "admin endpoints are off: set admin_token (SWITCHBOARD_ADMIN_TOKEN)")
    if not authorization:
        raise ApiError(
            401,
            "missing credentials: send Authorization: Bearer <admin token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        value.encode(), token.get_secret_value().encode()
    ):
        raise ApiError(403, "invalid admin token")


Admin = Depends(require_admin)
ERRORS: dict[int | str, dict[str, object]] = {
    c: {"model": ErrorResponse} for c in (401, 403, 404, 409, 422, 503)
}


class ReloadRequest(BaseModel):
    version: str | None = Field(
        None,
        description="Registry version (v0003, 3) or alias; default: the registry's champion, "
        "or the configured model_dir re-read when there is no registry.",
    )


class ReloadResponse(BaseModel):
    model_version: str
    previous_version: str | None
    model_dir: str


def _registry(rt: RuntimeDep) -> Registry:
    if rt.settings.registry_dir is None:
        raise ApiError(409, "no model registry configured (registry_dir / SWITCHBOARD_REGISTRY_DIR)")
    return Registry(rt.settings.registry_dir)


async def _swap(rt: RuntimeDep, model_dir: Path) -> ReloadResponse:
    try:
        new, old = await rt.swap(model_dir)
    except Exception as err:
        current = rt.model.info.version if rt.model else "none"
        raise unavailable(
            f"reload failed, still serving {current}: {type(err).__name__}: {err}", rt.settings.retry_after_s
        ) from None
    return ReloadResponse(
        model_version=new.version,
        previous_version=old.version if old else None,
        model_dir=str(new.model_dir),
    )


@router.post("/reload", response_model=ReloadResponse, responses=ERRORS, dependencies=[Admin])
async def reload(rt: RuntimeDep, body: ReloadRequest | None = None) -> ReloadResponse:
    """Load a model (default: the registry's champion), warm it, switch, free the old one."""
    version = body.version if body else None
    if rt.settings.registry_dir is None:
        if version is not None:
            raise field_error("version", "needs a model registry (registry_dir)", "no_registry")
        if rt.settings.model_dir is None:
            raise ApiError(409, "nothing to reload: no model_dir and no registry")
        return await _swap(rt, rt.settings.model_dir)
    try:
        target = _registry(rt).get(version or "champion")
    except RegistryError as err:
        raise field_error("version", str(err), "unknown_version") from None
    return await _swap(rt, target.path)


@router.post("/rollback", response_model=ReloadResponse, responses=ERRORS, dependencies=[Admin])
async def rollback(rt: RuntimeDep) -> ReloadResponse:
    """Make the previous champion the champion again in the registry, and serve it."""
    try:
        previous = _registry(rt).rollback()
    except RegistryError as err:
        raise ApiError(409, str(err)) from None
    return await _swap(rt, previous.path)
