"""`TrafficMiddleware`: the in-flight bound (429) and the request metrics, as pure ASGI."""

from __future__ import annotations

import json
from time import perf_counter
from typing import Any

from router.errors import error_body
from router.metrics import ENDPOINTS, OTHER, UNCOUNTED
from router.runtime import ENGINE_S, ESCALATION_S, T0, Runtime

_ENDPOINTS = frozenset(ENDPOINTS)


class TrafficMiddleware:
    """Pure ASGI (no per-request task or body copy): in-flight bound -> 429, request metrics.

    Probes and /metrics pass straight through, uncounted and never refused.
    """

    def __init__(self, app: Any, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        self.limit = runtime.settings.max_in_flight
        self.retry_after = str(runtime.settings.retry_after_s).encode()
        self.metrics = runtime.metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in UNCOUNTED:
            await self.app(scope, receive, send)
            return
        t0 = perf_counter()
        endpoint = path if path in _ENDPOINTS else OTHER
        rt = self.runtime
        if rt.in_flight >= self.limit:
            await self._reject(send)
            self.metrics.observe_request(endpoint, 429, perf_counter() - t0)
            return
        rt.in_flight += 1
        scope[T0] = t0
        status = 500

        async def send_observed(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            rt.in_flight -= 1
            elapsed = perf_counter() - t0
            self.metrics.observe_request(endpoint, status, elapsed)
            engine_s = scope.get(ENGINE_S)
            if engine_s is not None and endpoint == "/v1/route":  # the LLM's time is not ours either
                waited = engine_s + scope.get(ESCALATION_S, 0.0)
                self.metrics.overhead.observe(max(0.0, elapsed - waited))

    async def _reject(self, send: Any) -> None:
        detail = f"too many requests in flight (limit {self.limit}); retry later"
        body = json.dumps(error_body(detail)).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", self.retry_after),
        ]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})
