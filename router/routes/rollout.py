"""`/v1/admin/rollout`: a challenger's live rollout (serving.rollout): status and history, start a
shadow or a canary, stop it (a canary stopped is a rollback), promote by hand.

Admin token as the other admin endpoints. The registry holds the state; every replica follows it
within its `registry_poll_s` (router.registry_watch), this one included. A share outside its range
is 422 naming the field; a canary with no challenger in shadow, a second canary, or a shadow while
another rollout runs is 409 saying what is running.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from router.deps import RuntimeDep, require_admin
from router.errors import ApiError, field_error
from router.routes.admin import ERRORS, _corrupt, _registry
from serving.registry import RegistryCorrupt, RegistryError
from serving.rollout import RolloutConflict, finish, history, read_rollout, start_canary, start_shadow

router = APIRouter(prefix="/v1/admin/rollout", tags=["admin"], dependencies=[Depends(require_admin)])


class ShadowRequest(BaseModel):
    version: str = Field(
        "challenger",
        min_length=1,
        max_length=64,
        pattern=r"^(v[0-9]{4,}|[0-9]+|challenger)$",
        description="The version to shadow the champion with (default: the registry's challenger).",
    )
    shadow_share: float = Field(1.0, gt=0, le=1, description="Share of requests it classifies in shadow.")


class CanaryRequest(BaseModel):
    share: float = Field(..., gt=0, lt=1, description="Share of requests the challenger answers.")


class StopRequest(BaseModel):
    outcome: Literal["stopped", "rolled_back", "promoted"] = Field(
        "stopped",
        description="stopped / rolled_back: the champion stays; promoted: the challenger becomes it.",
    )
    reason: str = Field("", max_length=500)


class RolloutResponse(BaseModel):
    rollout: dict[str, Any] | None
    served_by_this_replica: dict[str, Any]
    history: list[dict[str, Any]]


async def _change(rt: RuntimeDep, change: Any) -> None:
    registry = _registry(rt)
    try:
        await asyncio.to_thread(change, registry)
    except RegistryCorrupt as err:
        raise _corrupt(err) from None
    except RolloutConflict as err:
        raise ApiError(409, str(err)) from None
    except RegistryError as err:
        raise field_error("version", str(err), "unknown_version") from None


async def _status(rt: RuntimeDep) -> RolloutResponse:
    registry = _registry(rt)
    try:
        state, past = await asyncio.gather(
            asyncio.to_thread(read_rollout, registry), asyncio.to_thread(history, registry)
        )
    except RegistryCorrupt as err:
        raise _corrupt(err) from None
    live = rt.rollout
    return RolloutResponse(
        rollout=state.to_json() if state else None,
        served_by_this_replica={
            "champion": rt.model.info.version if rt.model else None,
            "challenger": live.second.info.version if live.second else None,
            "stage": live.state.stage if live.state else None,
        },
        history=past[-50:],
    )


@router.get("", response_model=RolloutResponse, responses=ERRORS)
async def status(rt: RuntimeDep) -> RolloutResponse:
    """The registry's rollout, what this replica serves, and the last 50 transitions."""
    return await _status(rt)


@router.post("/shadow", response_model=RolloutResponse, responses=ERRORS)
async def shadow(rt: RuntimeDep, body: ShadowRequest) -> RolloutResponse:
    """Put a challenger in shadow beside the champion."""
    await _change(
        rt,
        lambda r: start_shadow(
            r, body.version, shadow_share=body.shadow_share, by="admin", reason="admin API"
        ),
    )
    return await _status(rt)


@router.post("/canary", response_model=RolloutResponse, responses=ERRORS)
async def canary(rt: RuntimeDep, body: CanaryRequest) -> RolloutResponse:
    """Let the challenger in shadow answer a share of requests."""
    await _change(rt, lambda r: start_canary(r, body.share, by="admin", reason="admin API"))
    return await _status(rt)


@router.post("/stop", response_model=RolloutResponse, responses=ERRORS)
async def stop(rt: RuntimeDep, body: StopRequest | None = None) -> RolloutResponse:
    """End the rollout: stop or roll back (the champion stays), or promote the challenger."""
    body = body or StopRequest(outcome="stopped", reason="")
    await _change(rt, lambda r: finish(r, body.outcome, by="admin", reason=body.reason or "admin API"))
    return await _status(rt)
