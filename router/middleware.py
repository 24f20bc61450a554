"""`TrafficMiddleware`: the body limits (413, 408), the in-flight bound (429) and the request
metrics, as pure ASGI.

A request's body is read *before* it takes one of the `max_in_flight` slots, within
`body_timeout_s` and `max_body_bytes`: a client that trickles its body (or never sends it) is
answered 408 and holds no slot meanwhile, and an oversized body is refused with 413 from its
`Content-Length`, or as soon as the bytes received pass the limit, before anything is parsed.
"""

from __future__ import annotations

import asyncio
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
        self.max_body = runtime.settings.max_body_bytes
        self.body_timeout_s = runtime.settings.body_timeout_s
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
        if scope.get("method") in _WITH_BODY:
            body, refusal = await self._read_body(scope, receive)
            if refusal is not None:
                status, detail, kind = refusal
                if status:  # 0: the client went away; nobody to answer
                    await _send_error(send, status, detail, kind, close=True)
                self.metrics.observe_request(endpoint, status or 499, perf_counter() - t0)
                return
            receive = _replay(body, receive)
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
        await _send_error(send, 429, detail, None, retry_after=self.retry_after)

    async def _read_body(
        self, scope: dict[str, Any], receive: Any
    ) -> tuple[bytes, tuple[int, str, str] | None]:
        """(the whole body, None) or (b"", (status, detail, error type)); status 0: disconnected."""
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body:
            return b"", (413, self._too_large(declared), "body_too_large")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return b"", (0, "client disconnected", "disconnect")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        return b"", (413, self._too_large(size, at_least=True), "body_too_large")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks), None
        except TimeoutError:
            detail = f"the request body did not arrive within {self.body_timeout_s:g} s (body_timeout_s)"
            return b"", (408, detail, "body_timeout")

    def _too_large(self, size: int, *, at_least: bool = False) -> str:
        more = "more than " if at_least else ""
        return f"the request body is {more}{size} bytes; the limit is {self.max_body} (max_body_bytes)"


_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


def _content_length(scope: dict[str, Any]) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(body: bytes, receive: Any) -> Any:
    """A `receive` that hands the app the body already read, then the client's own messages
    (a disconnect) after it."""
    done = False

    async def replay() -> dict[str, Any]:
        nonlocal done
        if not done:
            done = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # type: ignore[no-any-return]

    return replay


async def _send_error(
    send: Any,
    status: int,
    detail: str,
    kind: str | None,
    *,
    retry_after: bytes | None = None,
    close: bool = False,
) -> None:
    errors = [{"field": "body", "message": detail, "type": kind}] if kind else []
    body = json.dumps(error_body(detail, errors)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", retry_after))
    if close:  # the rest of the body may still be on its way: do not keep the connection
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
