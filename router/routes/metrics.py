"""`GET /metrics`: the Prometheus text exposition of this router's registry (not counted as traffic)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from router.deps import RuntimeDep
from router.metrics import CONTENT_TYPE_LATEST

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(rt: RuntimeDep) -> Response:
    """Prometheus text exposition of this router's registry."""
    return Response(rt.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
