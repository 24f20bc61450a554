"""Live accuracy that means what it says: the router marks a random share of requests for audit,
the `audit` queue offers exactly those, and live accuracy is estimated from their labels only, per
model version, from the database (metrics, inbox, API all read the same). Real store, fake engine."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from scipy.stats import binomtest
from sqlalchemy import select
from support import pg_schema
from support.fakes import Scrape, make_settings, run, serving
from test_review import AUTH, TOKEN, rec, write

from router import live_accuracy
from router.store import create_db_engine
from router.store.audit import audit_accuracy, estimate
from router.store.models import requests as requests_table
from router.store.queries import review_queue


def _flags(url: str) -> list[bool | None]:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(requests_table.c.audit)).scalars())
    finally:
        engine.dispose()


def test_the_router_marks_a_random_share_for_audit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, audit_rate=0.25)

    async def scenario() -> None:
        async with serving(settings) as client:
            for i in range(400):
                assert (await client.post("/v1/route", json={"text": f"my bill {i}"})).status_code == 200

    run(scenario())
    flags = _flags(settings.database_url)
    assert len(flags) == 400 and None not in flags
    share = sum(flags) / len(flags)
    assert binomtest(sum(flags), len(flags), 0.25).pvalue > 0.001, share  # the asked-for rate
    none = make_settings(tmp_path / "none", audit_rate=0.0)

    async def quiet() -> None:
        async with serving(none) as client:
            for i in range(20):
                await client.post("/v1/route", json={"text": f"x {i}"})

    run(quiet())
    assert not any(_flags(none.database_url))


def _audit_world(url: str) -> dict[str, list[str]]:
    """v1: 10 audited (two share a text), v2: 4 audited; plus unaudited rows."""
    audited_v1 = [rec(f"audit text {i}", minutes=i)._replace(audit=True) for i in range(9)]
    audited_v1.append(rec("audit text 0", minutes=10)._replace(audit=True))  # the same text again
    audited_v2 = [rec(f"v2 text {i}", minutes=20 + i, version="v2")._replace(audit=True) for i in range(4)]
    plain = [rec(f"plain {i}", minutes=30 + i) for i in range(5)]
    rows = audited_v1 + audited_v2 + plain
    # labels: v1 right on 6 of its first 8 audited, v2 right on 1 of 4; a plain row labelled too
    feedback = [(r.id, "no_signal" if i < 6 else "bill_explanation") for i, r in enumerate(audited_v1[:8])]
    feedback += [(r.id, "no_signal" if i == 0 else "cancel_service") for i, r in enumerate(audited_v2)]
    feedback.append((plain[0].id, "cancel_service"))
    write(url, rows, tuple(feedback))
    return {
        "v1_unlabelled": [audited_v1[9].id, audited_v1[8].id],
        "plain": [r.id for r in plain],
    }


def _check_queue_and_estimate(url: str) -> None:
    world = _audit_world(url)
    items = review_queue(url, strategy="audit")
    # exactly the unlabelled audited requests, newest first; a text seen before is offered again
    assert [i.request_id for i in items] == world["v1_unlabelled"]
    assert [i.text for i in items] == ["audit text 0", "audit text 8"]
    assert all(i.count == 1 for i in items)
    assert review_queue(url, strategy="audit", model_version="v2") == []
    engine = create_db_engine(url)
    try:
        found = audit_accuracy(engine)
    finally:
        engine.dispose()
    assert set(found) == {"v1", "v2"}  # the labelled plain row counts nowhere
    v1, v2 = found["v1"], found["v2"]
    assert (v1.correct, v1.n, v2.correct, v2.n) == (6, 8, 1, 4)
    ci = binomtest(6, 8).proportion_ci(confidence_level=0.9, method="wilson")
    assert (v1.low, v1.high) == pytest.approx((ci.low, ci.high))
    assert v1.low < v1.accuracy < v1.high


def test_audit_queue_and_estimate_on_sqlite(tmp_path: Path) -> None:
    _check_queue_and_estimate(f"sqlite:///{tmp_path / 'log.db'}")


def test_audit_queue_and_estimate_on_postgresql() -> None:
    with pg_schema() as url:
        _check_queue_and_estimate(url)


def test_the_latest_label_of_a_request_counts_and_the_window_keeps_the_newest(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    rows = [rec(f"t {i}", minutes=i)._replace(audit=True) for i in range(6)]
    wrong_then_right = ((rows[0].id, "cancel_service"), (rows[0].id, "no_signal"))
    write(url, rows, (*wrong_then_right, *((r.id, "cancel_service") for r in rows[1:])))
    engine = create_db_engine(url)
    try:
        assert audit_accuracy(engine)["v1"].correct == 1  # the corrected label, once
        newest = audit_accuracy(engine, window=3)["v1"]
        assert newest.n == 3 and newest.correct == 0  # rows[1:] were labelled after rows[0]
    finally:
        engine.dispose()
    assert estimate("v9", 0, 50).high < 0.06


def test_metrics_and_review_api_read_the_audit_estimate(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, admin_token=TOKEN, audit_rate=1.0, live_accuracy_refresh_s=0)

    async def scenario() -> None:
        async with serving(settings) as client:
            rt = client.app.state.runtime  # type: ignore[attr-defined]
            ids = []
            for text in ("my bill is wrong", "no signal at home", "cancel my plan", "my bill again"):
                ids.append((await client.post("/v1/route", json={"text": text})).json())
            await asyncio.sleep(0.1)
            queue = (await client.get("/v1/review", params={"strategy": "audit"}, headers=AUTH)).json()
            assert {i["request_id"] for i in queue["items"]} == {r["request_id"] for r in ids}
            for r, right in zip(ids, (True, True, True, False), strict=True):
                intent = r["intent"] if right else "oos"
                fb = await client.post(
                    "/v1/feedback", json={"request_id": r["request_id"], "correct_intent": intent}
                )
                assert fb.status_code == 201
            estimates = await live_accuracy.refresh(rt)
            version = ids[0]["model_version"]
            assert (estimates[version].correct, estimates[version].n) == (3, 4)
            m = Scrape((await client.get("/metrics")).text)
            assert m("switchboard_live_accuracy", model_version=version) == 0.75
            assert m("switchboard_live_accuracy_samples", model_version=version) == 4
            assert m("switchboard_live_accuracy_low", model_version=version) < 0.75
            queue = (await client.get("/v1/review", params={"strategy": "audit"}, headers=AUTH)).json()
            assert queue["items"] == []

    run(scenario())
