"""`LoadedModel`: one served model (engine, policy, labels, escalator) and the `Usage` that lets a
swap wait for the calls in flight on it before closing it. Shared by the runtime and the rollout's
challenger (router.shadow)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from router.escalation import Escalator
from router.policy import Policy
from serving.engine import Engine
from serving.model_dir import ModelInfo

log = logging.getLogger(__name__)


class Usage:
    """Engine calls in flight on one model, so a hot swap can wait for them before closing it."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def acquire(self) -> None:
        self.count += 1
        self._idle.clear()

    def release(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def drained(self) -> None:
        await self._idle.wait()


@dataclass(frozen=True)
class LoadedModel:
    engine: Engine
    info: ModelInfo
    policy: Policy
    labels: frozenset[str]
    escalator: Escalator | None = None  # cascade mode: the LLM for unsure queries
    usage: Usage = field(default_factory=Usage, compare=False)

    async def close(self) -> None:
        if self.escalator is not None:
            await self.escalator.close()
        await self.engine.close()

    async def close_when_drained(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) for the calls in flight on this model, then close it."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.usage.drained()
        except TimeoutError:
            log.warning("closing model %s with calls still in flight", self.info.version)
        await self.close()
