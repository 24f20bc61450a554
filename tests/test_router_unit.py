"""Router unit tests: policy, settings, store writer, API validation and metrics.

A `FakeEngine` stands in for vLLM here, as DESIGN.md allows for pure policy/API tests; the
real engine is exercised in tests/test_router_e2e.py. Everything here runs in seconds.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
import weakref
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import func, select
from support import pg_schema
from support.fakes import LABELS, ROUTES, FakeEngine, Scrape, make_settings, run, serving
from typer.testing import CliRunner

from router.app import build_app
from router.policy import Policy, PolicyError, RouteMap, build_policy, escalation_cutoff, policy_for
from router.settings import Settings, SettingsError, load_settings
from router.store import (
    RequestLog,
    RequestRecord,
    create_db_engine,
    current_revision,
    feedback_item,
    head_revision,
    migrate,
    new_request_id,
)
from router.store.models import feedback as feedback_table
from router.store.models import metadata
from router.store.models import requests as requests_table
from serving.engine import EngineError
from serving.model_dir import ModelDirError, read_model_info


def db_count(settings: Settings, table: Any) -> int:
    engine = create_db_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())
    finally:
        engine.dispose()


# -- policy ------------------------------------------------------------------------------


def policy(**options: Any) -> Policy:
    return Policy(LABELS, RouteMap(dict(ROUTES), "general", "human_review"), **options)


def test_policy_routes_confident_answers_and_falls_back_when_unsure() -> None:
    p = policy(threshold=0.5, margin=0.1)
    sure, low, torn, oos = p.decide_batch(
        np.array(
            [
                [0.9, 0.05, 0.03, 0.02],
                [0.45, 0.2, 0.2, 0.15],
                [0.5, 0.45, 0.03, 0.02],
                [0.02, 0.02, 0.01, 0.95],
            ]
        )
    )
    assert (sure.intent, sure.route, sure.fallback, sure.reason) == (
        "bill_explanation",
        "billing",
        False,
        None,
    )
    assert (low.route, low.reason) == ("human_review", "low_confidence")
    assert (torn.route, torn.reason, torn.intent) == (
        "human_review",
        "ambiguous",
        "bill_explanation",
    )
    assert (oos.route, oos.reason, oos.intent) == ("human_review", "out_of_scope", "oos")
    assert sure.confidence == pytest.approx(0.9)
    assert [a.intent for a in sure.alternatives] == [
        "bill_explanation",
        "no_signal",
        "cancel_service",
    ]
    assert [a.route for a in sure.alternatives] == ["billing", "technical_support", "general"]


def test_policy_default_route_top_k_and_shapes() -> None:
    p = policy(top_k=10)
    d = p.decide(np.array([0.02, 0.03, 0.9, 0.05]))
    assert d.route == "general" and not d.fallback  # unmapped intent -> default route
    assert len(d.alternatives) == len(LABELS)  # top_k is capped at the label count
    assert p.routes["oos"] == "human_review"  # out-of-scope labels always map to the fallback
    assert set(p.route_names) == {"billing", "technical_support", "general", "human_review"}
    with pytest.raises(PolicyError, match=r"shape \(N, 4\)"):
        p.decide_batch(np.ones((2, 3)))
    single = Policy(["only"], RouteMap({"only": "x"})).decide(np.array([1.0]))
    assert (single.route, single.fallback) == ("x", False)


def test_route_map_file_wins_and_bad_files_name_the_problem(tmp_path: Path) -> None:
    good = tmp_path / "routes.yaml"
    good.write_text("default_route: desk\nfallback_route: humans\nroutes:\n  no_signal: network\n")
    p = build_policy(LABELS, routes_file=good, model_routes=ROUTES, model_fallback_route="ignored")
    assert (p.routes["no_signal"], p.routes["bill_explanation"], p.fallback_route) == (
        "network",
        "desk",
        "humans",
    )
    p = build_policy(LABELS, routes_file=None, model_routes=ROUTES, fallback_route="explicit")
    assert (p.routes["no_signal"], p.default_route, p.fallback_route) == (
        "technical_support",
        "general",
        "explicit",
    )
    for content, needle in [
        ("routes: [a, b]\n", "must map intent -> route"),
        ("routes:\n  a: ''\n", "route for intent 'a'"),
        ("rutes: {}\n", "unknown key 'rutes'"),
        ("routes: {a: b\n", "invalid YAML"),
        ("- a\n", "top level must be a mapping"),
    ]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(content)
        with pytest.raises(PolicyError, match=needle):
            RouteMap.load(bad)
    with pytest.raises(PolicyError, match="not found"):
        RouteMap.load(tmp_path / "missing.yaml")
    with pytest.raises(PolicyError, match="confidence_threshold"):
        policy(threshold=1.5)


def test_a_model_with_its_own_out_of_scope_threshold_is_served_at_that_operating_point(
    tmp_path: Path,
) -> None:
    """Unset threshold and margin: a model with an `oos` label and a threshold chosen on
    validation (metrics.json) is served at it, with no margin; other models at 0.5 / 0.1; the
    settings win when set, and escalation follows the threshold in force."""
    model = tmp_path / "model"
    model.mkdir()
    assert "oos" in LABELS
    (model / "config.json").write_text(json.dumps({"id2label": dict(enumerate(LABELS))}))
    (model / "metrics.json").write_text(json.dumps({"oos_threshold": {"threshold": 0.09}}))
    info = read_model_info(model)
    assert info.oos_threshold == 0.09
    own = policy_for(info, make_settings(tmp_path))
    assert (own.threshold, own.margin) == (0.09, 0.0)
    torn = own.decide(np.array([0.36, 0.35, 0.2, 0.09]))
    assert (torn.intent, torn.fallback) == ("bill_explanation", False)  # no margin at this point
    set_ = policy_for(info, make_settings(tmp_path, confidence_threshold=0.6, margin=0.2))
    assert (set_.threshold, set_.margin) == (0.6, 0.2)
    assert escalation_cutoff(make_settings(tmp_path), own) == 0.09
    assert escalation_cutoff(make_settings(tmp_path, escalation_threshold=0.95), own) == 0.95
    # without an out-of-scope label the stored threshold means nothing: the generic point
    in_scope_only = tuple(label for label in LABELS if label != "oos")
    plain = policy_for(replace(info, labels=in_scope_only), make_settings(tmp_path))
    assert (plain.threshold, plain.margin) == (0.5, 0.1)
    (model / "metrics.json").write_text('{"oos_threshold": {"threshold": "high"}}')
    with pytest.raises(ModelDirError, match=r"metrics\.json: unreadable `oos_threshold`"):
        read_model_info(model)


# -- settings ----------------------------------------------------------------------------


def test_settings_layers_env_over_yaml_over_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "settings.yaml"
    cfg.write_text("port: 9000\nmargin: 0.2\nconfidence_threshold: 0.7\n")
    monkeypatch.setenv("SWITCHBOARD_MARGIN", "0.3")
    monkeypatch.setenv("SWITCHBOARD_OOS_LABELS", "oos, other")
    s = load_settings(cfg, port=None, confidence_threshold=0.6)
    assert (s.port, s.margin, s.confidence_threshold) == (9000, 0.3, 0.6)
    assert s.oos_labels == ("oos", "other")
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(cfg))
    assert load_settings().port == 9000


def test_settings_errors_name_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "settings.yaml"
    cfg.write_text("prot: 1\n")
    with pytest.raises(SettingsError, match=r"settings.yaml: unknown setting 'prot'"):
        load_settings(cfg)
    with pytest.raises(SettingsError, match="settings file not found"):
        load_settings(tmp_path / "none.yaml")
    with pytest.raises(SettingsError, match="needs engine_url"):
        load_settings(engine="remote")
    monkeypatch.setenv("SWITCHBOARD_MAX_BATCH", "many")
    with pytest.raises(SettingsError, match=r"'max_batch' \(env SWITCHBOARD_MAX_BATCH\)"):
        load_settings()


# -- store -------------------------------------------------------------------------------


def test_migrations_match_the_table_definitions(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = create_db_engine(f"sqlite:///{tmp_path / 'm.db'}")
    assert migrate(engine) == head_revision() == current_revision(engine)
    migrate(engine)  # a second start is a no-op
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()
    assert diff == []


def record(request_id: str | None = None, intent: str = "no_signal") -> RequestRecord:
    return RequestRecord(
        request_id or new_request_id(), time.time(), "no signal", intent, 0.9, "technical_support",
        False, None, "v1", 1.0, {"channel": "chat"},
    )  # fmt: skip


def test_writer_batches_flushes_on_close_and_serves_buffered_feedback(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    engine = create_db_engine(settings.database_url)
    migrate(engine)
    flushes: list[int] = []

    async def scenario() -> None:
        from router.store import WriterHooks

        log = RequestLog(engine, linger_s=10.0, hooks=WriterHooks(on_flush=lambda n, s: flushes.append(n)))
        log.start()
        ids = [new_request_id() for _ in range(300)]
        for rid in ids:
            log.log(record(rid))
        assert log.backlog >= 299  # the long linger holds them: nothing written yet
        # feedback for a request that is still in the buffer: found, because the queue is FIFO
        first = await log.submit_feedback(feedback_item(ids[-1], "bill_explanation", "agent"))
        assert first.status == "created" and first.row is not None and first.row.agree is False
        again = await log.submit_feedback(feedback_item(ids[-1], "bill_explanation", "agent"))
        assert again.status == "replayed" and again.row == first.row
        keyed = await log.submit_feedback(feedback_item(ids[0], "no_signal", idempotency_key="k-1"))
        assert keyed.status == "created" and keyed.row is not None and keyed.row.agree
        reused = await log.submit_feedback(feedback_item(ids[1], "no_signal", idempotency_key="k-1"))
        assert reused.status == "conflict"
        missing = await log.submit_feedback(feedback_item("no-such-id", "no_signal"))
        assert missing.status == "not_found"
        for _ in range(50):
            log.log(record())
        await log.close()

    run(scenario())
    engine.dispose()
    assert db_count(settings, requests_table) == 350
    assert db_count(settings, feedback_table) == 2
    assert sum(flushes) >= 350 and len(flushes) <= 10  # batched, not a transaction per row


def test_writer_retries_a_failed_transaction_without_loss_or_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    settings = make_settings(tmp_path)
    engine = create_db_engine(settings.database_url)
    migrate(engine)
    log = RequestLog(engine, linger_s=0.0)
    real_write = log._write
    failures = {"left": 2}

    def flaky(records: Any, feedback: Any, shadows: Any = ()) -> Any:
        result = real_write(records, feedback, shadows)  # commits, then "loses the connection"
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("COMMIT", {}, ConnectionError("server closed the connection"))
        return result

    monkeypatch.setattr(log, "_write", flaky)

    async def scenario() -> None:
        log.start()
        for _ in range(40):
            log.log(record())
        await log.close()

    run(scenario())
    engine.dispose()
    assert failures["left"] == 0
    assert db_count(settings, requests_table) == 40  # retried, and ON CONFLICT kept it at once


def test_postgres_store_migrates_logs_and_dedupes_feedback() -> None:
    with pg_schema() as url:
        engine = create_db_engine(url)
        assert engine.url.drivername == "postgresql+psycopg"
        assert migrate(engine) == head_revision()
        migrate(engine)

        async def scenario() -> None:
            log = RequestLog(engine, linger_s=0.001)
            log.start()
            ids = [new_request_id() for _ in range(120)]
            for rid in ids:
                log.log(record(rid))
            created = await log.submit_feedback(feedback_item(ids[7], "no_signal", "qa"))
            replay = await log.submit_feedback(feedback_item(ids[7], "no_signal", "qa"))
            assert (created.status, replay.status) == ("created", "replayed")
            assert replay.row == created.row
            assert (await log.submit_feedback(feedback_item("x", "no_signal"))).status == "not_found"
            await log.close()

        run(scenario())
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(requests_table)).scalar() == 120
            assert conn.execute(select(func.count()).select_from(feedback_table)).scalar() == 1
        engine.dispose()


# -- API -------------------------------------------------------------------------------


def test_route_batch_intents_and_openapi(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)

    async def scenario() -> None:
        async with serving(settings) as client:
            r = await client.post(
                "/v1/route",
                json={"text": "Why is my BILL so high?", "metadata": {"channel": "chat"}},
            )
            assert r.status_code == 200, r.text
            body = r.json()
            assert set(body) == {
                "request_id", "intent", "route", "confidence", "fallback", "alternatives",
                "model_version", "escalation", "latency_ms",
            }  # fmt: skip
            assert body["escalation"] is None  # cascade mode is off by default
            assert (body["intent"], body["route"], body["fallback"]) == (
                "bill_explanation",
                "billing",
                False,
            )
            assert body["model_version"] == "fake-v1" and body["latency_ms"] > 0
            assert len(body["alternatives"]) == 3 and body["alternatives"][0]["probability"] == pytest.approx(
                0.9
            )
            assert r.headers["content-type"] == "application/json"

            r = await client.post("/v1/route/batch", json={"texts": ["no signal", "weather today?", "hmm"]})
            results = r.json()["results"]
            assert [x["route"] for x in results] == [
                "technical_support",
                "human_review",
                "human_review",
            ]
            assert [x["fallback"] for x in results] == [False, True, True]
            assert len({x["request_id"] for x in results}) == 3

            intents = (await client.get("/v1/intents")).json()
            assert intents["fallback_route"] == "human_review"
            assert {i["intent"]: i["route"] for i in intents["intents"]}["oos"] == "human_review"

            schema = (await client.get("/openapi.json")).json()
            assert {"/v1/route", "/v1/route/batch", "/v1/feedback", "/v1/intents"} <= set(schema["paths"])
            assert "RouteResult" in schema["components"]["schemas"]
            assert (await client.get("/livez")).json() == {"status": "ok"}

    run(scenario())
    assert db_count(settings, requests_table) == 4  # flushed at shutdown


BAD_INPUTS = [
    ("/v1/route", {"text": "   \n\t"}, "text", "blank_text"),
    ("/v1/route", {"text": ""}, "text", "blank_text"),
    ("/v1/route", {"text": "x" * 101}, "text", "text_too_long"),
    ("/v1/route", {"text": 42}, "text", "string_type"),
    ("/v1/route", {"text": None}, "text", "string_type"),
    ("/v1/route", {}, "text", "missing"),
    ("/v1/route", {"text": "hi", "metadata": "chat"}, "metadata", "dict_type"),
    ("/v1/route", {"text": "hi", "txt": "typo"}, "txt", "extra_forbidden"),
    ("/v1/route", ["hi"], "body", "model_attributes_type"),
    ("/v1/route/batch", {"texts": []}, "texts", "too_short"),
    ("/v1/route/batch", {"texts": "hi"}, "texts", "list_type"),
    ("/v1/route/batch", {"texts": ["ok", " "]}, "texts[1]", "blank_text"),
    ("/v1/route/batch", {"texts": ["ok", "y" * 101]}, "texts[1]", "text_too_long"),
    ("/v1/route/batch", {"texts": ["a"] * 5}, "texts", "too_many_texts"),
    ("/v1/feedback", {"request_id": "x"}, "correct_intent", "missing"),
    (
        "/v1/feedback",
        {"request_id": "x", "correct_intent": "refund"},
        "correct_intent",
        "unknown_intent",
    ),
]


def test_every_bad_input_is_a_json_error_naming_the_field(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_text_chars=100, max_batch=4)

    async def scenario() -> None:
        async with serving(settings) as client:
            for path, payload, field, kind in BAD_INPUTS:
                r = await client.post(path, json=payload)
                assert r.status_code == 422, (path, payload, r.text)
                body = r.json()
                assert body["errors"][0]["field"] == field, (payload, body)
                assert body["errors"][0]["type"] == kind, (payload, body)
                assert body["detail"].startswith(f"{field}: ")
            assert (
                "limit of 100 characters" in (await client.post("/v1/route", json={"text": "x" * 101})).text
            )
            assert (
                "limit of 4 texts" in (await client.post("/v1/route/batch", json={"texts": ["a"] * 5})).text
            )
            unknown = (
                await client.post("/v1/feedback", json={"request_id": "x", "correct_intent": "nope"})
            ).json()
            assert unknown["errors"][0]["allowed"] == list(LABELS)
            assert "valid intents: bill_explanation, no_signal" in unknown["detail"]

            for raw, ctype in [
                (b'{"text": ', "application/json"),
                (b"text=hi", "application/x-www-form-urlencoded"),
                (b"", "application/json"),
            ]:
                r = await client.post("/v1/route", content=raw, headers={"content-type": ctype})
                assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body", r.text
            assert (
                "invalid JSON"
                in (
                    await client.post("/v1/route", content=b"{", headers={"content-type": "application/json"})
                ).json()["detail"]
            )
            r = await client.post(
                "/v1/feedback",
                json={"request_id": "x", "correct_intent": "oos"},
                headers={"Idempotency-Key": "k" * 300},
            )
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == "Idempotency-Key"
            r = await client.get("/v1/route")
            assert r.status_code == 405 and r.headers["allow"] == "POST"
            assert r.json()["detail"] == "method GET not allowed here; allowed: POST"
            r = await client.get("/nowhere")
            assert r.status_code == 404 and r.json()["detail"] == "Not Found"

    run(scenario())
    assert db_count(settings, requests_table) == 0  # nothing invalid was logged


def test_feedback_is_idempotent_and_checks_the_request(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, log_flush_interval_s=5.0)  # requests stay buffered

    async def scenario() -> None:
        async with serving(settings) as client:
            rid = (await client.post("/v1/route", json={"text": "no signal at home"})).json()["request_id"]
            fb = {"request_id": rid, "correct_intent": "no_signal", "source": "agent"}
            first = await client.post("/v1/feedback", json=fb)
            assert first.status_code == 201, first.text
            assert first.json()["agree"] is True and first.json()["predicted_intent"] == "no_signal"
            assert "idempotent-replayed" not in first.headers
            repeat = await client.post("/v1/feedback", json=fb)
            assert repeat.status_code == 201 and repeat.json() == first.json()
            assert repeat.headers["idempotent-replayed"] == "true"

            headers = {"Idempotency-Key": "ticket-77"}
            fix = {"request_id": rid, "correct_intent": "cancel_service"}
            keyed = await client.post("/v1/feedback", json=fix, headers=headers)
            assert keyed.status_code == 201 and keyed.json()["agree"] is False
            assert keyed.json()["feedback_id"] != first.json()["feedback_id"]
            assert (await client.post("/v1/feedback", json=fix, headers=headers)).json() == keyed.json()
            other = await client.post("/v1/feedback", json={**fix, "correct_intent": "oos"}, headers=headers)
            assert other.status_code == 409 and other.json()["errors"][0]["type"] == "idempotency_key_reused"

            missing = await client.post("/v1/feedback", json={**fb, "request_id": "nope"})
            assert missing.status_code == 404 and missing.json()["errors"][0]["field"] == "request_id"

            m = Scrape((await client.get("/metrics")).text)
            assert m("switchboard_feedback_total", verdict="agree") == 1
            assert m("switchboard_feedback_total", verdict="disagree") == 1
            assert m("switchboard_reviewed_agreement") == 0.5
            assert m("switchboard_reviewed_agreement_samples") == 2

    run(scenario())
    assert db_count(settings, feedback_table) == 2


def test_metrics_exposition_after_traffic(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)

    async def scenario() -> str:
        async with serving(settings) as client:
            for text in ["my bill", "no signal", "weather?", "hmm", "cancel it"]:
                assert (await client.post("/v1/route", json={"text": text})).status_code == 200
            await client.post("/v1/route/batch", json={"texts": ["bill", "bill", "signal"]})
            await client.post("/v1/route", json={"text": " "})
            for _ in range(3):
                await client.get("/livez")
                await client.get("/readyz")
                await client.get("/metrics")
            await asyncio.sleep(0.05)  # let the writer flush
            await asyncio.sleep(0.1)  # the lag watcher's timer is now due ...
            time.sleep(0.3)  # ... and this blocks the event loop past it
            await asyncio.sleep(0.15)
            return (await client.get("/metrics")).text

    m = Scrape(run(scenario()))
    total = "switchboard_http_requests_total"
    assert m(total, endpoint="/v1/route", status="200") == 5
    assert m(total, endpoint="/v1/route", status="422") == 1
    assert m(total, endpoint="/v1/route/batch", status="200") == 1
    assert m.label_values(total, "endpoint") == {"/v1/route", "/v1/route/batch"}  # no probes
    assert m("switchboard_request_duration_seconds_count", endpoint="/v1/route") == 6
    buckets = m.label_values("switchboard_request_duration_seconds_bucket", "le")
    assert {"0.0001", "0.001", "10.0", "+Inf"} <= buckets
    assert m("switchboard_engine_duration_seconds_count") == 6  # the blank text never got there
    assert m("switchboard_router_overhead_seconds_count") == 5
    assert m("switchboard_confidence_count") == 8
    assert m("switchboard_routed_queries_total", route="billing") == 3
    assert m("switchboard_routed_queries_total", route="human_review") == 2
    assert m("switchboard_routed_queries_total", route="general") == 1
    assert m("switchboard_fallbacks_total", reason="out_of_scope") == 1
    assert m("switchboard_fallbacks_total", reason="low_confidence") == 1
    assert m("switchboard_fallbacks_total", reason="ambiguous") == 0
    assert m("switchboard_feedback_total", verdict="agree") == 0
    assert np.isnan(m("switchboard_reviewed_agreement"))
    assert m("switchboard_model_info", version="fake-v1", engine="local") == 1
    assert m("switchboard_ready") == 1
    assert m("switchboard_in_flight_requests") == 0
    assert m("switchboard_engine_batch_size_sum") == 1 + 5 + 3  # warm-up, singles, one batch
    assert m("switchboard_batch_request_size_sum") == 3
    assert m("switchboard_request_log_rows_total") == 8
    assert m("switchboard_request_log_backlog") == 0
    lags = m("switchboard_event_loop_lag_seconds_count")
    assert lags >= 2, lags
    assert m("switchboard_event_loop_lag_seconds_bucket", le="0.1") <= lags - 1  # the 0.3 s stall
    assert m("switchboard_event_loop_lag_seconds_sum") >= 0.15
    assert not any(name.endswith("_created") for name in (s.name for s in m.samples))


def test_overload_answers_429_with_retry_after_and_probes_still_answer(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_in_flight=2, retry_after_s=3)
    engine = FakeEngine()

    async def scenario() -> None:
        async with serving(settings, engine) as client:
            engine.gate = asyncio.Event()
            held = [asyncio.create_task(client.post("/v1/route", json={"text": "bill"})) for _ in range(2)]
            while engine.calls < 3:  # warm-up + the two held requests
                await asyncio.sleep(0.001)
            r = await client.post("/v1/route", json={"text": "bill"})
            assert r.status_code == 429 and r.headers["retry-after"] == "3"
            assert "limit 2" in r.json()["detail"]
            assert (await client.get("/livez")).status_code == 200  # probes are never refused
            m = Scrape((await client.get("/metrics")).text)
            assert m("switchboard_in_flight_requests") == 2
            assert m("switchboard_http_requests_total", endpoint="/v1/route", status="429") == 1
            engine.gate.set()
            responses = await asyncio.wait_for(asyncio.gather(*held), 5)
            assert [r.status_code for r in responses] == [200, 200]

    run(scenario())


def test_timeout_504_engine_failure_503_and_no_traceback(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, request_timeout_s=0.05)
    engine = FakeEngine()

    async def scenario() -> None:
        async with serving(settings, engine) as client:
            engine.delay_s = 0.5
            r = await client.post("/v1/route", json={"text": "bill"})
            assert r.status_code == 504 and r.json()["detail"] == "request timed out after 0.05 s"
            engine.delay_s, engine.fail = 0.0, EngineError("engine core died: secret detail")
            r = await client.post("/v1/route", json={"text": "bill"})
            assert r.status_code == 503 and "retry-after" in r.headers
            assert "secret" not in r.text
            engine.fail = None
            runtime = client.app.state.runtime  # type: ignore[attr-defined]
            wrong = Policy(LABELS[:3], RouteMap({}))  # 3 labels, the engine answers 4: a bug
            runtime.model = replace(runtime.model, policy=wrong)
            r = await client.post("/v1/route", json={"text": "bill"})
            assert r.status_code == 500 and r.json() == {
                "detail": "internal server error",
                "errors": [],
            }
            assert "Traceback" not in r.text

    run(scenario())


def test_not_ready_until_the_model_answers(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, retry_after_s=7, ready_cache_s=0)
    engine = FakeEngine()

    async def scenario() -> None:
        engine.gate = asyncio.Event()  # the warm-up classification hangs until released
        async with serving(settings, engine, wait=False) as client:
            assert (await client.get("/livez")).status_code == 200
            r = await client.get("/readyz")
            assert r.status_code == 503 and r.json()["status"] == "loading"
            r = await client.post("/v1/route", json={"text": "bill"})
            assert r.status_code == 503 and r.headers["retry-after"] == "7"
            engine.gate.set()
            for _ in range(100):
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.01)
            assert (await client.get("/readyz")).json() == {
                "status": "ready",
                "model_version": "fake-v1",
            }
            engine.closed = True
            assert (await client.get("/readyz")).status_code == 503

    run(scenario())


def test_serving_heap_is_frozen_and_a_swapped_out_model_is_still_collected(tmp_path: Path) -> None:
    """The loaded model and libraries are frozen out of the collector (no full-heap GC pauses
    under load); a hot swap thaws first, so the old model's reference cycles are reclaimed."""
    engines: list[weakref.ref[FakeEngine]] = []

    async def factory(_: Settings) -> FakeEngine:
        engine = FakeEngine()
        engine.cycle = engine  # type: ignore[attr-defined]  # only the cyclic collector frees it
        engines.append(weakref.ref(engine))
        return engine

    async def scenario() -> None:
        app = build_app(make_settings(tmp_path), engine_factory=factory)
        runtime = app.state.runtime
        async with app.router.lifespan_context(app):
            for _ in range(200):
                if runtime.model is not None:
                    break
                await asyncio.sleep(0.01)
            assert gc.get_freeze_count() > 10_000
            await runtime.swap(tmp_path)
            assert len(engines) == 2 and runtime.model.engine is engines[1]()
            assert engines[0]() is None, "the swapped-out model must not stay frozen"
            assert gc.get_freeze_count() > 10_000
        assert gc.get_freeze_count() == 0

    assert gc.get_freeze_count() == 0
    run(scenario())


def test_a_model_that_fails_to_load_is_reported(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    failures: list[str] = []

    async def scenario() -> None:
        async def broken(_: Settings) -> FakeEngine:
            raise EngineError("weights missing")

        app = build_app(settings, engine_factory=broken)
        app.state.runtime.on_load_failure = failures.append
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://r") as client:
                while not failures:
                    await asyncio.sleep(0.01)
                r = await client.get("/readyz")
                assert r.status_code == 503 and r.json()["status"] == "failed"
                assert "weights missing" in r.json()["reason"]

    run(scenario())
    assert failures == ["EngineError: weights missing"]


# -- CLI -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "no model: pass --model"),
        (["--model", "/nonexistent/model"], "model directory not found"),
        (["--model", "data/sample"], "not a model directory"),
        (["--port", "-1"], "setting 'port'"),
        (["--engine", "remote"], "needs engine_url"),
        (["--config", "/nonexistent.yaml"], "settings file not found"),
    ],
)
def test_serve_rejects_bad_arguments_in_one_line(
    args: list[str], needle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from router.cli import app

    monkeypatch.delenv("SWITCHBOARD_MODEL_DIR", raising=False)
    result = CliRunner().invoke(app, ["serve", *args])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output


def test_serve_reports_a_bad_route_map_or_database_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from router.cli import app

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"id2label": {"0": "a", "1": "b"}}')
    bad_routes = tmp_path / "routes.yaml"
    bad_routes.write_text("routes: [a]\n")
    monkeypatch.setenv("SWITCHBOARD_ROUTES_FILE", str(bad_routes))
    result = CliRunner().invoke(app, ["serve", "--model", str(model)])
    assert result.exit_code == 2 and "must map intent -> route" in result.output, result.output
    monkeypatch.delenv("SWITCHBOARD_ROUTES_FILE")
    monkeypatch.setenv("SWITCHBOARD_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    result = CliRunner().invoke(app, ["serve", "--model", str(model)])
    assert result.exit_code == 2 and "cannot migrate the database" in result.output, result.output
    assert "Traceback" not in result.output
