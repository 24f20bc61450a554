"""Live accuracy on every replica: the audit estimate (`router.store.audit`) re-read from the
database every `live_accuracy_refresh_s` and exported per served model version; in the same loop,
intent discovery's open proposals and unrouted share (`router.store.discovery`).

The database is the one source, so every replica exports the same number for a version, and the
inbox header and the canary decision read the same estimate.
"""

from __future__ import annotations

import asyncio
import logging

from router.runtime import Runtime
from router.store.audit import AccuracyEstimate, audit_accuracy
from router.store.discovery import last_run, open_count

log = logging.getLogger(__name__)


def served_versions(rt: Runtime) -> set[str]:
    """The model versions this replica answers with now."""
    return {rt.model.info.version} if rt.model is not None else set()


async def refresh(rt: Runtime) -> dict[str, AccuracyEstimate]:
    """Read the estimates once and export those of the served versions; returns them all."""
    if rt.db is None:
        return {}
    estimates = await asyncio.to_thread(audit_accuracy, rt.db, window=rt.settings.accuracy_window)
    served = served_versions(rt)
    rt.metrics.set_live_accuracy(e for v, e in estimates.items() if v in served)
    return estimates


async def refresh_discovery(rt: Runtime) -> None:
    """The discovery gauges from the newest run and the proposals table."""
    if rt.db is None:
        return
    run = await asyncio.to_thread(last_run, rt.db)
    rt.metrics.discovery_open.set(await asyncio.to_thread(open_count, rt.db))
    share = run.unrouted_share if run is not None else None
    rt.metrics.unrouted_share.set(float("nan") if share is None else share)
    rt.metrics.discovery_last_run.set(run.started_at.timestamp() if run is not None else 0)


async def watch(rt: Runtime) -> None:
    """The background task: refresh, sleep, repeat; a failed read is logged once per error."""
    last_error: str | None = None
    while True:
        try:
            await refresh(rt)
            await refresh_discovery(rt)
            last_error = None
        except Exception as err:  # a database hiccup must not end the task
            message = f"{type(err).__name__}: {err}"
            if message != last_error:
                log.warning("live accuracy not refreshed: %s", message)
            last_error = message
        await asyncio.sleep(rt.settings.live_accuracy_refresh_s)
