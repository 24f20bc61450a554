"""`/readyz`'s engine check, shared and cached.

An orchestrator probes every few seconds per replica, and a load balancer may probe too. Each
probe running its own classification would be traffic outside the `max_in_flight` bound, and a
burst of probes could queue work on a slow engine. So one check runs at a time (probes that
arrive meanwhile wait for its answer) and its answer stands for `ttl_s` seconds; a swapped-in
engine is checked afresh.
"""

from __future__ import annotations

import asyncio
import math
from time import monotonic

from serving.engine import Engine


class ReadinessCheck:
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self.checks = 0  # engine checks run (probes answered from the cache do not count)
        self._lock = asyncio.Lock()
        self._engine: Engine | None = None
        self._ready = False
        self._at = -math.inf

    def _fresh(self, engine: Engine) -> bool:
        return engine is self._engine and monotonic() - self._at < self.ttl_s

    async def ready(self, engine: Engine) -> bool:
        if self._fresh(engine):
            return self._ready
        async with self._lock:
            if not self._fresh(engine):  # a probe ahead of us in the lock may have just checked
                ready = await engine.ready()
                self._engine, self._ready, self._at = engine, ready, monotonic()
                self.checks += 1
            return self._ready
