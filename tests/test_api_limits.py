"""Hostile input at the edge: the admin token, texts the store cannot keep, body size and
nesting limits, slow clients, probe storms, and a published schema that says all of it.

Each test injects the fault the review found (docs/RELIABILITY.md) and shows the router answers
with a 4xx JSON body naming the field, or keeps serving others. The app runs on the keyword
FakeEngine (the limits sit in front of any engine); the slow-client test runs it under a real
uvicorn server on a socket, since partial bodies only exist on a real connection.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from support.fakes import FakeEngine, make_settings, run, serving

from router.app import build_app
from router.devserver import free_port
from router.settings import Settings, SettingsError, load_settings
from router.text_rules import STORABLE_PATTERN, TEXT_PATTERN

TOKEN = "limits-admin-token-0123456789"


# -- 1. the admin token ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("", "must not be empty or blank"),
        ("   ", "must not be empty or blank"),
        ("short-token", "use at least 16"),
        (" padded-token-0123456789 ", "whitespace"),
    ],
)
def test_a_weak_admin_token_is_a_settings_error(token: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as err:
        load_settings(admin_token=token)
    assert "admin_token" in str(err.value)
    assert not token.strip() or token.strip() not in str(err.value)  # the secret is never echoed


def test_an_empty_admin_token_from_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_ADMIN_TOKEN", "")
    with pytest.raises(SettingsError, match=r"SWITCHBOARD_ADMIN_TOKEN.*must not be empty"):
        load_settings()


@pytest.mark.parametrize("header", ["Bearer ", "Bearer", "Bearer    ", "Basic " + TOKEN, "", TOKEN])
def test_an_empty_or_foreign_bearer_value_is_401(tmp_path: Path, header: str) -> None:
    settings = make_settings(tmp_path, admin_token=TOKEN)

    async def scenario() -> None:
        async with serving(settings) as client:
            r = await client.post("/v1/admin/reload", headers={"Authorization": header})
            if header.startswith("Basic") or header == TOKEN:
                assert r.status_code in (401, 403), r.text  # credentials, but not ours
            else:
                assert r.status_code == 401, r.text
                assert r.headers["www-authenticate"] == "Bearer"
            assert r.json()["detail"]
            ok = await client.get("/v1/review", headers={"Authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200

    run(scenario())


# -- 3. texts the store cannot keep ---------------------------------------------------------------

BAD_TEXTS = {
    "lone surrogate": ("why \ud800 charged", "invalid_characters"),
    "NUL": ("card\x00blocked", "invalid_characters"),
    "escape": ("\x1b[31mhello", "invalid_characters"),
    "C1 control": ("refund\x85please", "invalid_characters"),
    "whitespace only": (" \t\n ", "blank_text"),
    "zero-width only": ("\u200b\u200d\ufeff", "blank_text"),
    "bidi controls only": ("\u202e\u2066 \u2069", "blank_text"),
}


@pytest.mark.parametrize("case", sorted(BAD_TEXTS))
def test_text_the_store_cannot_keep_is_422_naming_text(tmp_path: Path, case: str) -> None:
    text, kind = BAD_TEXTS[case]

    async def scenario() -> None:
        engine = FakeEngine()
        async with serving(make_settings(tmp_path), engine) as client:
            calls = engine.calls
            for path, payload, field in (
                ("/v1/route", {"text": text}, "text"),
                ("/v1/route/batch", {"texts": ["fine", text]}, "texts[1]"),
            ):
                # json.dumps writes a lone surrogate as the escape \ud800, as a client would
                r = await client.post(
                    path, content=json.dumps(payload), headers={"content-type": "application/json"}
                )
                assert r.status_code == 422, r.text
                error = r.json()["errors"][0]
                assert (error["field"], error["type"]) == (field, kind), error
            assert engine.calls == calls  # refused before the engine, so never a 503 to retry

    run(scenario())


def test_unusual_but_real_text_is_routed(tmp_path: Path) -> None:
    texts = ["bill\tplease\r\n", "ﾌｧｸｼﾐﾘ 請求書 💳", "\u200bbill", "שלום bill", "e\u0301 bill"]

    async def scenario() -> None:
        async with serving(make_settings(tmp_path)) as client:
            r = await client.post("/v1/route/batch", json={"texts": texts})
            assert r.status_code == 200, r.text

    run(scenario())


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ('{"text": "bill", "metadata": {"score": NaN}}', "metadata", "finite"),
        ('{"text": "bill", "metadata": {"score": Infinity}}', "metadata", "finite"),
        ('{"text": "bill", "metadata": {"ch\\u0000": "chat"}}', "metadata", "control character"),
        ('{"text": "bill", "metadata": {"channel": "chat\\u0000"}}', "metadata", "control character"),
        ('{"text": "bill", "metadata": {"channel": "' + "x" * 513 + '"}}', "metadata", "longer than 512"),
        ('{"text": "bill", "metadata": {"' + "k" * 65 + '": 1}}', "metadata", "1 to 64 characters"),
    ],
)
def test_metadata_the_store_cannot_keep_is_422(
    tmp_path: Path, payload: str, field: str, message: str
) -> None:
    async def scenario() -> None:
        async with serving(make_settings(tmp_path)) as client:
            r = await client.post("/v1/route", content=payload, headers={"content-type": "application/json"})
            assert r.status_code == 422, r.text
            error = r.json()["errors"][0]
            assert error["field"] == field and message in error["message"], error

    run(scenario())


def test_feedback_fields_the_store_cannot_keep_are_422(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(make_settings(tmp_path)) as client:
            rid = (await client.post("/v1/route", json={"text": "bill"})).json()["request_id"]
            for field, value in (
                ("source", "agent\x00"),
                ("comment", "bad \ud800"),
                ("correct_intent", "no\x07"),
            ):
                payload = {"request_id": rid, "correct_intent": "no_signal", field: value}
                r = await client.post(
                    "/v1/feedback", content=json.dumps(payload), headers={"content-type": "application/json"}
                )
                assert r.status_code == 422 and r.json()["errors"][0]["field"] == field, r.text

    run(scenario())


# -- 4. body size and nesting -----------------------------------------------------------------------


def test_a_body_over_the_limit_is_413_before_it_is_parsed(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_body_bytes=4096)
    big = json.dumps({"texts": ["bill " * 200] * 8})  # ~8 KB

    async def scenario() -> None:
        engine = FakeEngine()
        async with serving(settings, engine) as client:
            r = await client.post(
                "/v1/route/batch", content=big, headers={"content-type": "application/json"}
            )
            assert r.status_code == 413, r.text
            assert r.json()["errors"][0]["field"] == "body" and "max_body_bytes" in r.json()["detail"]
            assert r.headers["connection"] == "close"

            async def chunks() -> object:  # no Content-Length: counted while it streams
                for _ in range(10):
                    yield b" " * 1000

            r = await client.post("/v1/route", content=chunks(), headers={"content-type": "application/json"})
            assert r.status_code == 413 and "more than" in r.json()["detail"], r.text
            ok = await client.post("/v1/route", json={"text": "bill"})
            assert ok.status_code == 200
            scrape = (await client.get("/metrics")).text
            assert 'endpoint="/v1/route/batch",status="413"' in scrape

    run(scenario())


def test_deeply_nested_json_is_422_naming_the_body(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(make_settings(tmp_path)) as client:
            for payload in (
                "[" * 100_000 + "]" * 100_000,
                '{"text": "bill", "metadata": ' + "[" * 50_000 + "]" * 50_000 + "}",
            ):
                r = await client.post(
                    "/v1/route", content=payload, headers={"content-type": "application/json"}
                )
                assert r.status_code == 422, r.text[:300]
                assert r.json()["errors"][0]["field"] in ("body", "metadata"), r.text[:300]
                assert r.json()["errors"][0]["message"]

    run(scenario())


# -- 5. slow clients and probes -----------------------------------------------------------------------


@contextmanager
def uvicorn_serving(settings: Settings, engine: FakeEngine) -> Iterator[str]:
    """The app under a real uvicorn server on a free port (in a thread); yields its base URL."""

    async def factory(_: Settings) -> FakeEngine:
        return engine

    port = free_port()
    app = build_app(settings, engine_factory=factory)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_slow_clients_hold_no_slot_and_get_408(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_in_flight=2, body_timeout_s=1.5)
    with uvicorn_serving(settings, FakeEngine()) as base:
        port = int(base.rsplit(":", 1)[1])
        slow = []
        for _ in range(12):  # six times the in-flight bound: headers and a tenth of the body
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(
                b"POST /v1/route HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n" + b'{"text": "'
            )
            slow.append(sock)
        time.sleep(0.3)
        started = time.perf_counter()
        r = httpx.post(f"{base}/v1/route", json={"text": "my bill"}, timeout=5)
        assert r.status_code == 200, r.text  # a normal client is served while 12 trickle
        assert time.perf_counter() - started < 1.0
        for sock in slow:
            answer = sock.recv(4096).decode()
            assert answer.startswith("HTTP/1.1 408"), answer[:200]
            assert '"field": "body"' in answer and "body_timeout_s" in answer
            sock.close()
        assert httpx.post(f"{base}/v1/route", json={"text": "my bill"}, timeout=5).status_code == 200


class CountingEngine(FakeEngine):
    def __init__(self) -> None:
        super().__init__()
        self.ready_calls = 0

    async def ready(self) -> bool:
        self.ready_calls += 1
        await asyncio.sleep(0.05)  # a real check classifies: it takes a while
        return await super().ready()


def test_a_probe_storm_runs_one_engine_check(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, ready_cache_s=60)
    engine = CountingEngine()

    async def scenario() -> None:
        async with serving(settings, engine) as client:
            before = engine.ready_calls
            answers = await asyncio.gather(*(client.get("/readyz") for _ in range(50)))
            assert {r.status_code for r in answers} == {200}
            assert engine.ready_calls - before <= 1  # at most one check; the rest share or reuse it

    run(scenario())


# -- the published schema says what is enforced -------------------------------------------------------


def test_the_openapi_schema_states_the_limits(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_text_chars=300, max_batch=7)

    async def scenario() -> None:
        async with serving(settings) as client:
            schema = (await client.get("/openapi.json")).json()
            parts = schema["components"]["schemas"]
            text = parts["RouteRequest"]["properties"]["text"]
            assert text["maxLength"] == 300 and text["minLength"] == 1 and text["pattern"] == TEXT_PATTERN
            texts = parts["BatchRouteRequest"]["properties"]["texts"]
            assert texts["maxItems"] == 7 and texts["items"]["maxLength"] == 300
            intent = parts["FeedbackRequest"]["properties"]["correct_intent"]
            assert intent["enum"] == sorted(["bill_explanation", "no_signal", "cancel_service", "oos"])
            assert parts["FeedbackRequest"]["properties"]["source"]["anyOf"][0]["pattern"] == STORABLE_PATTERN
            for path in ("/v1/route", "/v1/route/batch", "/v1/feedback"):
                assert {"408", "413", "422", "429"} <= set(schema["paths"][path]["post"]["responses"])

    run(scenario())
