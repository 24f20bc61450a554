"""`POST /v1/admin/reload` and `/v1/admin/rollback`: change the served model without downtime;
`/v1/admin/intents`: the registry's intent taxonomy (list, add, rename, retire).

Protected by a bearer token from settings (`admin_token`); with no token configured the
endpoints answer 404, so a deployment that never set one exposes nothing. Missing credentials
are 401, wrong ones 403. A model that fails to load leaves the old one serving (503, reported).

Model changes are serialised (`Runtime.change_lock`, shared with the startup load and the
registry watcher): concurrent calls run one after the other, never two loads at once. A rollback
loads the previous champion first and moves the registry's `champion` alias only once it serves,
so a version that cannot load leaves both the registry and the router as they were. `version` is
a version name, number or alias, never a path (422); a corrupt registry file is 409 naming it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from router.deps import RuntimeDep, require_admin
from router.errors import ApiError, field_error, unavailable
from router.schemas import (
    AddIntentRequest,
    ErrorResponse,
    RenameIntentRequest,
    TaxonomyIntent,
    TaxonomyResponse,
)
from serving import taxonomy
from serving.registry import Registry, RegistryCorrupt, RegistryError

router = APIRouter(prefix="/v1/admin", tags=["admin"])


Admin = Depends(require_admin)
ERRORS: dict[int | str, dict[str, object]] = {
    c: {"model": ErrorResponse} for c in (401, 403, 404, 409, 422, 503)
}


class ReloadRequest(BaseModel):
    version: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^(v[0-9]{4,}|[0-9]+|champion|challenger)$",
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


def _corrupt(err: RegistryCorrupt) -> ApiError:
    """A registry file the registry cannot read: the operator's problem, named, not a 500."""
    return ApiError(
        409,
        f"model registry unreadable: {err}",
        [{"field": "registry", "message": str(err), "type": "registry_corrupt"}],
    )


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
    async with rt.change_lock:
        if rt.settings.registry_dir is None:
            if version is not None:
                raise field_error(  # a valid request this router's configuration cannot serve
                    "version", "needs a model registry (registry_dir)", "no_registry", status=409
                )
            if rt.settings.model_dir is None:
                raise ApiError(409, "nothing to reload: no model_dir and no registry")
            return await _swap(rt, rt.settings.model_dir)
        registry = _registry(rt)
        try:
            target = await asyncio.to_thread(registry.get, version or "champion")
        except RegistryCorrupt as err:
            raise _corrupt(err) from None
        except RegistryError as err:
            raise field_error("version", str(err), "unknown_version") from None
        return await _swap(rt, target.path)


@router.post("/rollback", response_model=ReloadResponse, responses=ERRORS, dependencies=[Admin])
async def rollback(rt: RuntimeDep) -> ReloadResponse:
    """Serve the previous champion, then make it the registry's champion again.

    The order matters: the registry is changed only once the previous champion serves, and only
    if the champion is still the one this rollback started from; otherwise the router goes back
    to what it served before (409), so registry and router never disagree."""
    async with rt.change_lock:
        registry = _registry(rt)
        try:
            champion, target = await asyncio.to_thread(registry.rollback_target)
        except RegistryCorrupt as err:
            raise _corrupt(err) from None
        except RegistryError as err:
            raise ApiError(409, str(err)) from None
        before = rt.settings.model_dir
        answer = await _swap(rt, target.path)  # 503 if it cannot load: nothing was written
        try:
            await asyncio.to_thread(registry.rollback, expected_champion=champion)
        except RegistryError as err:
            detail = f"rollback not recorded in the registry: {err}"
            if before is not None:
                back = await _swap(rt, before)
                detail += f"; serving {back.model_version} again"
            raise ApiError(409, detail) from None
        return answer


# -- intents: the taxonomy beside the registry's versions (serving.taxonomy) ------------------


def _taxonomy_response(registry: Registry, tax: taxonomy.Taxonomy) -> TaxonomyResponse:
    return TaxonomyResponse(
        champion=registry.aliases().get("champion"),
        intents=[
            TaxonomyIntent(
                name=i.name,
                status=i.status,
                route=i.route,
                description=i.description,
                renamed_to=i.renamed_to,
            )
            for i in tax.intents
        ],
    )


def _read_taxonomy(registry: Registry) -> TaxonomyResponse:
    return _taxonomy_response(registry, registry.taxonomy())


async def _change(
    rt: RuntimeDep, change: Callable[[taxonomy.Changes, taxonomy.Taxonomy], None]
) -> TaxonomyResponse:
    """Apply a taxonomy change under the registry's lock (in a thread: it is file I/O), then let
    the runtime re-read which intents feedback may name."""
    registry = _registry(rt)
    try:
        tax = await asyncio.to_thread(registry.change_taxonomy, change)
    except taxonomy.TaxonomyError as err:
        raise _taxonomy_error(err) from None
    except RegistryError as err:
        raise ApiError(409, str(err)) from None
    rt.refresh_intents()
    return _taxonomy_response(registry, tax)


def _taxonomy_error(err: taxonomy.TaxonomyError) -> ApiError:
    if err.code == "unknown_intent":
        return field_error(err.field, str(err), err.code, status=404)
    if err.code == "bad_file":
        return ApiError(409, str(err))
    return field_error(err.field, str(err), err.code)


@router.get("/intents", response_model=TaxonomyResponse, responses=ERRORS, dependencies=[Admin])
async def list_taxonomy(rt: RuntimeDep) -> TaxonomyResponse:
    """Every intent: served by the champion, pending (added, not trained yet), retiring or renaming."""
    registry = _registry(rt)
    try:
        return await asyncio.to_thread(_read_taxonomy, registry)
    except RegistryCorrupt as err:
        raise _corrupt(err) from None
    except (RegistryError, taxonomy.TaxonomyError) as err:
        raise ApiError(409, str(err)) from None


@router.post(
    "/intents", status_code=201, response_model=TaxonomyResponse, responses=ERRORS, dependencies=[Admin]
)
async def add_intent(rt: RuntimeDep, body: AddIntentRequest) -> TaxonomyResponse:
    """Add a pending intent: feedback may name it at once; `switchboard retrain` trains it once it
    has enough examples. Returns the taxonomy after the change."""
    return await _change(rt, lambda c, t: taxonomy.add(c, t, body.name, body.route, body.description))


@router.post(
    "/intents/{name}/rename", response_model=TaxonomyResponse, responses=ERRORS, dependencies=[Admin]
)
async def rename_intent(rt: RuntimeDep, name: str, body: RenameIntentRequest) -> TaxonomyResponse:
    """Rename an intent: a pending one at once, a served one at the next retrain (its examples
    are relabelled and its head row kept); feedback names the new name from now on."""
    return await _change(rt, lambda c, t: taxonomy.rename(c, t, name, body.new_name))


@router.post(
    "/intents/{name}/retire", response_model=TaxonomyResponse, responses=ERRORS, dependencies=[Admin]
)
async def retire_intent(rt: RuntimeDep, name: str) -> TaxonomyResponse:
    """Retire an intent: a pending one is dropped at once, a served one by the next retrain;
    feedback may no longer name it."""
    return await _change(rt, lambda c, t: taxonomy.retire(c, t, name))
