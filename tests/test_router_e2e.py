"""The router end to end: `switchboard serve` as a real process, the real vLLM engine on a tiny
exported MiniLM, the request log on SQLite and on PostgreSQL.

One server per backend is shared by the tests of this module (loading vLLM is the slow part);
the SIGTERM test stops it, and any test after it gets a fresh one.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from support import Server, pg_schema

from router.store import create_db_engine
from router.store.models import feedback as feedback_table
from router.store.models import requests as requests_table

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
QUERIES = [
    "why is my bill higher this month",
    "no signal on my phone since yesterday",
    "I want to cancel my contract",
    "can I add another line for my son",
    "my broadband keeps dropping out",
    "I can't log in to the app",
]


# -- database backends -----------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('router-db') / 'requests.db'}"
        return
    with pg_schema() as url:
        yield url


def db_scalar(url: str, query: Any) -> Any:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(query).scalar()
    finally:
        engine.dispose()


def logged_ids(url: str, ids: list[str]) -> set[str]:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            found: set[str] = set()
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                found |= set(
                    conn.execute(select(requests_table.c.id).where(requests_table.c.id.in_(chunk))).scalars()
                )
            return found
    finally:
        engine.dispose()


def wait_logged(url: str, ids: list[str], timeout_s: float = 10.0) -> set[str]:
    """The background writer commits within its linger; poll instead of sleeping blindly."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = logged_ids(url, ids)
        if len(found) == len(set(ids)) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


# -- the server process ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(
    router_model: Path, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    srv = Server(router_model, database_url, tmp_path_factory.mktemp("router-logs") / "server")
    try:
        yield srv.ensure_running()
    finally:
        srv.stop()


# -- tests -------------------------------------------------------------------------------------


def test_route_batch_intents_and_the_log_row(server: Server) -> None:
    with server.client() as client:
        intents = client.get("/v1/intents").raise_for_status().json()
        route_of = {i["intent"]: i["route"] for i in intents["intents"]}
        assert route_of["bill_explanation"] == "billing"  # the route map shipped with the model
        r = client.post("/v1/route", json={"text": QUERIES[0], "metadata": {"channel": "chat"}})
        assert r.status_code == 200, r.text
        one = r.json()
        assert one["intent"] in route_of and one["route"] == route_of[one["intent"]]
        assert one["model_version"] == intents["model_version"] and one["latency_ms"] > 0
        probs = [a["probability"] for a in one["alternatives"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)
        assert abs(probs[0] - one["confidence"]) < 1e-6
        batch = client.post("/v1/route/batch", json={"texts": QUERIES}).raise_for_status().json()
        assert len(batch["results"]) == len(QUERIES)
        # the batch agrees with single requests on the same text
        again = client.post("/v1/route", json={"text": QUERIES[0]}).json()
        assert again["intent"] == batch["results"][0]["intent"]
        assert abs(again["confidence"] - batch["results"][0]["confidence"]) < 1e-3

    ids = [one["request_id"], *(x["request_id"] for x in batch["results"])]
    assert wait_logged(server.database_url, ids) == set(ids)
    engine = create_db_engine(server.database_url)
    with engine.connect() as conn:
        row = (
            conn.execute(select(requests_table).where(requests_table.c.id == one["request_id"]))
            .mappings()
            .one()
        )
    engine.dispose()
    assert row["text"] == QUERIES[0] and row["intent"] == one["intent"] and row["route"] == one["route"]
    assert abs(row["confidence"] - one["confidence"]) < 1e-6 and row["fallback"] is False
    assert row["model_version"] == one["model_version"] and row["meta"] == {"channel": "chat"}
    assert row["latency_ms"] == pytest.approx(one["latency_ms"]) and row["created_at"] is not None


def test_feedback_is_idempotent_even_for_a_buffered_request(server: Server) -> None:
    with server.client() as client:
        routed = client.post("/v1/route", json={"text": QUERIES[1]}).json()
        # posted at once: the request is most likely still in the writer's buffer
        fb = {"request_id": routed["request_id"], "correct_intent": "no_signal", "source": "agent"}
        first = client.post("/v1/feedback", json=fb)
        assert first.status_code == 201, first.text
        assert first.json()["predicted_intent"] == routed["intent"]
        assert first.json()["agree"] == (routed["intent"] == "no_signal")
        repeat = client.post("/v1/feedback", json=fb)
        assert repeat.status_code == 201 and repeat.json() == first.json()
        assert repeat.headers["Idempotent-Replayed"] == "true"

        keyed_body = {"request_id": routed["request_id"], "correct_intent": "payment_issue"}
        key = {"Idempotency-Key": f"ticket-{uuid.uuid4()}"}
        keyed = client.post("/v1/feedback", json=keyed_body, headers=key)
        assert keyed.status_code == 201
        assert client.post("/v1/feedback", json=keyed_body, headers=key).json() == keyed.json()
        reused = client.post("/v1/feedback", json={**keyed_body, "correct_intent": "add_line"}, headers=key)
        assert reused.status_code == 409 and reused.json()["errors"][0]["field"] == "Idempotency-Key"

        unknown = client.post("/v1/feedback", json={**fb, "request_id": str(uuid.uuid4())})
        assert unknown.status_code == 404 and unknown.json()["errors"][0]["field"] == "request_id"
        bad_intent = client.post("/v1/feedback", json={**fb, "correct_intent": "weather"}).json()
        assert bad_intent["errors"][0]["field"] == "correct_intent"
        assert "bill_explanation" in bad_intent["errors"][0]["allowed"]
        assert "valid intents:" in bad_intent["detail"]

    count = (
        select(func.count())
        .select_from(feedback_table)
        .where(feedback_table.c.request_id == routed["request_id"])
    )
    assert db_scalar(server.database_url, count) == 2


BAD = [
    ("/v1/route", {"text": ""}, "text"),
    ("/v1/route", {"text": " \n\t "}, "text"),
    ("/v1/route", {"text": "x" * 2001}, "text"),
    ("/v1/route", {"text": ["a list"]}, "text"),
    ("/v1/route", {"text": 1}, "text"),
    ("/v1/route", {"metadata": {}}, "text"),
    ("/v1/route", {"text": "ok", "metadata": {"nested": {"a": 1}}}, "metadata"),
    ("/v1/route", "just a string", "body"),
    ("/v1/route/batch", {"texts": []}, "texts"),
    ("/v1/route/batch", {"texts": ["ok"] * 65}, "texts"),
    ("/v1/route/batch", {"texts": ["ok", ""]}, "texts[1]"),
    ("/v1/route/batch", {"texts": ["ok", "y" * 2001]}, "texts[1]"),
    ("/v1/route/batch", {"text": "ok"}, "texts"),
    ("/v1/feedback", {"correct_intent": "no_signal"}, "request_id"),
    ("/v1/feedback", {"request_id": "r", "correct_intent": 3}, "correct_intent"),
]


def test_every_bad_input_is_a_4xx_json_error_naming_the_field(server: Server) -> None:
    before = db_scalar(server.database_url, select(func.count()).select_from(requests_table))
    with server.client() as client:
        for path, payload, field_name in BAD:
            r = client.post(path, json=payload)
            assert r.status_code == 422, (payload, r.text)
            body = r.json()
            assert body["errors"][0]["field"] == field_name, (payload, body)
            assert "Traceback" not in r.text
        assert (
            "limit of 2000 characters" in client.post("/v1/route", json={"text": "x" * 2001}).json()["detail"]
        )
        assert (
            "limit of 64 texts" in client.post("/v1/route/batch", json={"texts": ["a"] * 65}).json()["detail"]
        )
        for raw in (b'{"text": "unterminated', b"not json", b""):
            r = client.post("/v1/route", content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body", r.text
        assert client.get("/v1/nothing").status_code == 404
        assert client.get("/v1/route").status_code == 405
    time.sleep(0.3)  # anything wrongly accepted would have been written by now
    assert db_scalar(server.database_url, select(func.count()).select_from(requests_table)) == before


def test_200_concurrent_requests_all_answered_and_logged_once(server: Server) -> None:
    before = db_scalar(server.database_url, select(func.count()).select_from(requests_table))

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120, limits=limits) as client:
            return await asyncio.gather(
                *(
                    client.post("/v1/route", json={"text": f"{QUERIES[i % len(QUERIES)]} #{i}"})
                    for i in range(200)
                )
            )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 200
    ids = [r.json()["request_id"] for r in responses]
    assert len(set(ids)) == 200
    assert wait_logged(server.database_url, ids) == set(ids)
    time.sleep(0.3)
    after = db_scalar(server.database_url, select(func.count()).select_from(requests_table))
    assert after - before == 200  # each logged exactly once, nothing else written


def test_metrics_after_traffic(server: Server) -> None:
    with server.client() as client:
        routed = [client.post("/v1/route", json={"text": q}).json() for q in QUERIES]
        client.post("/v1/route/batch", json={"texts": QUERIES[:3]})
        client.post("/v1/route", json={"text": ""})
        correct = routed[2]["intent"]
        client.post("/v1/feedback", json={"request_id": routed[2]["request_id"], "correct_intent": correct})
        for _ in range(5):
            client.get("/livez")
            client.get("/readyz")
            client.get("/metrics")
        page = client.get("/metrics")
    assert page.headers["content-type"].startswith("text/plain")
    samples = [s for fam in text_string_to_metric_families(page.text) for s in fam.samples]

    def value(name: str, **labels: str) -> float:
        hits = [
            s.value
            for s in samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        assert hits, f"missing {name} {labels}"
        return float(sum(hits))

    names = {s.name for s in samples}
    assert value("switchboard_http_requests_total", endpoint="/v1/route", status="200") >= len(QUERIES)
    assert value("switchboard_http_requests_total", endpoint="/v1/route", status="422") >= 1
    assert value("switchboard_http_requests_total", endpoint="/v1/feedback", status="201") >= 1
    endpoints = {s.labels["endpoint"] for s in samples if s.name == "switchboard_http_requests_total"}
    assert not endpoints & {"/livez", "/readyz", "/metrics"}
    assert value("switchboard_request_duration_seconds_count", endpoint="/v1/route") >= len(QUERIES)
    assert value("switchboard_request_duration_seconds_bucket", endpoint="/v1/route", le="10.0") >= len(
        QUERIES
    )
    assert value("switchboard_engine_duration_seconds_count") >= len(QUERIES) + 1
    assert value("switchboard_router_overhead_seconds_count") >= len(QUERIES)
    assert value("switchboard_confidence_count") >= len(QUERIES) + 3
    assert value("switchboard_routed_queries_total") >= len(QUERIES) + 3
    assert {"switchboard_fallbacks_total", "switchboard_feedback_total"} <= names
    assert value("switchboard_feedback_total", verdict="agree") >= 1
    assert 0.0 < value("switchboard_reviewed_agreement") <= 1.0
    assert value("switchboard_reviewed_agreement_samples") >= 1
    assert value("switchboard_model_info", version=routed[0]["model_version"], engine="local") == 1
    assert value("switchboard_ready") == 1
    assert value("switchboard_in_flight_requests") == 0
    assert value("switchboard_engine_batch_size_count") >= 1  # vLLM scheduler steps observed
    assert value("switchboard_request_log_rows_total") >= len(QUERIES)
    assert value("switchboard_request_log_errors_total") == 0


def test_sigterm_during_traffic_loses_no_logged_request(server: Server) -> None:
    server.ensure_running()
    answered: list[str] = []

    async def worker(client: httpx.AsyncClient, n: int) -> None:
        i = 0
        while True:
            try:
                r = await client.post(
                    "/v1/route", json={"text": f"{QUERIES[(n + i) % len(QUERIES)]} {n}.{i}"}
                )
            except httpx.TransportError:
                return  # the server has stopped accepting
            if r.status_code != 200:
                return
            answered.append(r.json()["request_id"])
            i += 1

    async def traffic() -> None:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
            tasks = [asyncio.create_task(worker(client, n)) for n in range(16)]
            while len(answered) < 100:
                await asyncio.sleep(0.01)
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)  # mid-traffic
            await asyncio.wait_for(asyncio.gather(*tasks), 90)

    asyncio.run(traffic())
    assert server.proc is not None
    assert server.proc.wait(timeout=90) == 0, server.log_tail()
    log = server.log_tail()
    assert "unwritten" not in log and "Traceback" not in log, log
    assert len(answered) >= 100
    assert logged_ids(server.database_url, answered) == set(answered)  # no wait: flushed at exit
