"""Follow the registry's champion: every replica serves a promotion (or rollback) on its own.

With `registry_poll_s` > 0 each router replica reads `REGISTRY/aliases.json` (a small file, one
read per interval) and, when the `champion` alias has moved since it last looked and the router
does not serve that version already, swaps to it exactly as `POST /v1/admin/reload` would (same
lock, same zero-downtime swap). So a `switchboard retrain` or `models promote|rollback` run by any
process, such as the nightly CronJob, reaches every replica within one interval, instead of the
one replica a `curl` of the Service happened to hit.

It acts on *changes* of the alias only: a router started on an explicit `model_dir`, or moved to
another version with `/v1/admin/reload {"version": ...}`, keeps serving it until the champion
next changes. A champion that fails to load is logged and counted
(`switchboard_model_reloads_total{outcome="failed"}`), the old model keeps serving, and the load is
retried with a doubling back-off (at most every `MAX_BACKOFF_S`) until it works or the champion
moves on. An unreadable registry is logged (once per distinct error) and retried each interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from router.promotion import PromotionController
from router.runtime import Runtime
from serving.registry import Registry, RegistryError
from serving.rollout import read_rollout

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 300.0


def _champion(registry: Registry) -> str | None:
    champion = registry.aliases().get("champion")
    return str(champion) if champion else None


def _served_version(rt: Runtime, registry: Registry) -> str | None:
    """The registry version the router serves (its model dir is one of the registry's), else None."""
    model_dir = rt.settings.model_dir
    if model_dir is None:
        return None
    path = Path(model_dir).resolve()
    return path.name if path.parent == registry.versions_dir.resolve() else None


class ChampionWatch:
    """One replica's watch of the champion alias; `run()` is the background task."""

    def __init__(self, rt: Runtime) -> None:
        if rt.settings.registry_dir is None or not rt.settings.registry_poll_s:
            raise ValueError("the champion watch needs registry_dir and registry_poll_s > 0")
        self.rt = rt
        self.registry = Registry(rt.settings.registry_dir)
        self.interval_s = float(rt.settings.registry_poll_s)
        # the champion last acted on: what the router was started with, when it came from the
        # registry; else the first champion read (an explicit model_dir is left alone)
        self.seen: str | None = _served_version(rt, self.registry)
        self._started = self.seen is not None
        self._last_error: str | None = None
        self.controller = PromotionController(rt, self.registry) if rt.settings.rollout_auto else None
        self._failures = 0
        self._retry_at = 0.0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except Exception:  # never let one bad look end the watch: the replica would stop following
                log.exception("registry watch: a look failed; looking again in %.1f s", self.interval_s)

    async def follow_rollout(self) -> None:
        """Follow the registry's rollout; with `rollout_auto`, decide on its evidence, and follow
        again at once when that changed it (a promoted challenger is adopted, not reloaded)."""
        for _ in range(2):
            try:
                rollout = await asyncio.to_thread(read_rollout, self.registry)
            except (RegistryError, OSError) as err:
                log.error("registry watch: cannot read the rollout, keeping the current one: %s", err)
                return
            async with self.rt.change_lock:
                await self.rt.rollout.follow(rollout, self.registry)
            if self.controller is None or rollout is None:
                return
            try:
                decision = await self.controller.tick()
            except Exception as err:  # a database hiccup: decide at the next look
                log.warning("rollout decision postponed: %s: %s", type(err).__name__, err)
                return
            if decision is None or decision.action == "wait":
                return

    async def check(self) -> str | None:
        """One look at the registry: the rollout first (a challenger loaded, dropped, or adopted
        as champion: router.shadow), then the champion alias; swaps when the champion moved.
        Returns the version swapped to."""
        await self.follow_rollout()
        try:
            champion = await asyncio.to_thread(_champion, self.registry)
        except (RegistryError, OSError) as err:
            if str(err) != self._last_error:
                log.error("registry watch: cannot read the champion, still serving: %s", err)
                self._last_error = str(err)
            return None
        self._last_error = None
        if not self._started:
            self.seen, self._started = champion, True
            return None
        if champion is None or champion == self.seen:
            return None
        if time.monotonic() < self._retry_at:
            return None
        async with self.rt.change_lock:  # admin reload/rollback and this never overlap
            if _served_version(self.rt, self.registry) == champion:
                self.seen, self._failures = champion, 0  # e.g. an admin rollback loaded it already
                return None
            try:
                loaded = self.rt.rollout.take(champion)  # promoted by another replica: adopt it
                if loaded is not None:
                    await self.rt.adopt(loaded)
                else:
                    target = await asyncio.to_thread(self.registry.get, champion)
                    await self.rt.swap(target.path)
            except Exception as err:
                self._failures += 1
                backoff = min(self.interval_s * 2**self._failures, MAX_BACKOFF_S)
                self._retry_at = time.monotonic() + backoff
                log.error(
                    "registry watch: champion %s failed to load, still serving %s (retry in %.1f s): %s: %s",
                    champion, self.rt.model.info.version if self.rt.model else "none", backoff,
                    type(err).__name__, err,
                )  # fmt: skip
                return None
        log.info("registry watch: now serving the new champion %s", champion)
        self.seen, self._failures, self._retry_at = champion, 0, 0.0
        return champion
