"""The review queue: which logged requests deserve a person's time, and the way labels come back.

Covers the schema revision that keeps top-2 and the top-k (SQLite and PostgreSQL), the queue's
strategies, filters and duplicate collapsing on a real store written by the real writer,
`GET /v1/review` (admin token, errors, no caching, the published schema) on the app with the
keyword FakeEngine, and `switchboard review export` -> a person's edits -> `switchboard feedback
import` for CSV, JSONL and Label Studio. Everything runs in seconds on CPU.
"""

from __future__ import annotations

import csv
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import func, select
from support import pg_schema
from support.fakes import LABELS, ROUTES, make_settings, run, serving
from test_contract import Contract
from typer.testing import CliRunner

from router.cli import app as cli
from router.policy import Policy, RouteMap
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
from router.store.db import MIGRATIONS
from router.store.models import feedback as feedback_table
from router.store.models import requests as requests_table
from router.store.queries import normalise_text, review_queue, unlabelled_texts

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC).timestamp()
TOKEN = "review-admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
runner = CliRunner()


def rec(
    text: str | None,
    *,
    intent: str = "no_signal",
    confidence: float = 0.9,
    top2: float | None = 0.05,
    minutes: float = 0,
    route: str = "technical_support",
    fallback: bool = False,
    reason: str | None = None,
    version: str = "v1",
    escalation: str | None = None,
) -> RequestRecord:
    alternatives = [{"intent": intent, "probability": confidence}]
    if top2 is not None:
        alternatives.append({"intent": "bill_explanation", "probability": top2})
    return RequestRecord(
        new_request_id(), T0 + minutes * 60, text, intent, confidence, route, fallback, reason,
        version, 1.0, None, escalation, "llm" if escalation else None, top2, alternatives,
    )  # fmt: skip


def write(url: str, records: list[RequestRecord], feedback: tuple[tuple[str, str], ...] = ()) -> None:
    """Through the router's own writer, as serving would."""
    engine = create_db_engine(url)
    migrate(engine)

    async def scenario() -> None:
        log = RequestLog(engine, linger_s=0.0)
        log.start()
        for record in records:
            log.log(record)
        for request_id, intent in feedback:
            assert (await log.submit_feedback(feedback_item(request_id, intent, "qa"))).status == "created"
        await log.close()

    run(scenario())
    engine.dispose()


def count(url: str, table: Any) -> int:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())
    finally:
        engine.dispose()


def texts(items: list[Any]) -> list[str]:
    return [item.text for item in items]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'log.db'}"


# -- the policy and the schema ------------------------------------------------------------------


def test_the_policy_keeps_the_runner_up_whatever_top_k_is() -> None:
    policy = Policy(LABELS, RouteMap(dict(ROUTES)), top_k=1)
    (decision,) = policy.decide_batch(np.array([[0.5, 0.3, 0.15, 0.05]]))
    assert len(decision.alternatives) == 1
    assert decision.runner_up == pytest.approx(0.3)
    single = Policy(["only"], RouteMap({"only": "x"})).decide(np.array([1.0]))
    assert single.runner_up is None


def _alembic(engine: Any) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _move(engine: Any, revision: str, *, down: bool = False) -> None:
    config = _alembic(engine)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(config, revision)


def _migration_round_trip(url: str) -> None:
    """0002 with a row logged then, up to head (old row: NULLs; no shadow answer), down to 0002
    and up again."""
    engine = create_db_engine(url)
    _move(engine, "0002")
    old_id = new_request_id()
    with engine.begin() as conn:
        row = {
            c.name: None
            for c in requests_table.columns
            if c.name not in ("top2_confidence", "alternatives", "audit")  # added by 0003, 0004
        }
        row.update(
            id=old_id, created_at=datetime.fromtimestamp(T0, UTC), text="old row", intent="no_signal",
            confidence=0.6, route="technical_support", fallback=False, model_version="v0", latency_ms=1.0,
        )  # fmt: skip
        conn.execute(requests_table.insert(), row)  # only the columns 0002 has
    assert migrate(engine) == head_revision()
    write(url, [rec("new row", top2=0.2)])
    items = review_queue(engine, strategy="uncertainty")
    assert texts(items) == ["new row", "old row"]  # no top-2 logged: last
    assert items[1].margin is None and items[1].alternatives == []
    assert items[0].margin == pytest.approx(0.7) and items[0].alternatives[1]["probability"] == 0.2
    _move(engine, "0002", down=True)
    assert current_revision(engine) == "0002"
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM requests").scalar() == 2  # rows kept
    migrate(engine)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_migration_0003_on_sqlite(url: str) -> None:
    _migration_round_trip(url)


def test_migration_0003_on_postgresql() -> None:
    with pg_schema() as url:
        _migration_round_trip(url)


# -- the queue ----------------------------------------------------------------------------------


def test_uncertainty_orders_by_margin_and_leaves_labelled_and_textless_rows_out(url: str) -> None:
    labelled = rec("already labelled", confidence=0.5, top2=0.49)
    write(
        url,
        [
            rec("sure", confidence=0.95, top2=0.02, minutes=1),
            rec("torn", confidence=0.41, top2=0.40, minutes=2),
            rec("unsure", confidence=0.5, top2=0.3, minutes=3),
            rec("one label", confidence=1.0, top2=None, minutes=4),
            rec(None, confidence=0.3, top2=0.3, minutes=5),  # store_text off: nothing to show
            labelled,
        ],
        feedback=((labelled.id, "no_signal"),),
    )
    items = review_queue(url)
    assert texts(items) == ["torn", "unsure", "sure", "one label"]
    assert [i.margin for i in items] == [pytest.approx(0.01), pytest.approx(0.2), pytest.approx(0.93), None]
    torn = items[0]
    assert (torn.predicted_intent, torn.route, torn.fallback, torn.model_version, torn.count) == (
        "no_signal", "technical_support", False, "v1", 1,
    )  # fmt: skip
    assert torn.created_at == datetime.fromtimestamp(T0 + 120, UTC)
    assert [a["intent"] for a in torn.alternatives] == ["no_signal", "bill_explanation"]
    assert texts(review_queue(url, limit=2)) == ["torn", "unsure"]


def test_diverse_spreads_the_uncertainty_order_over_predicted_intents(url: str) -> None:
    # a weak model is least sure about one confusable intent: margin order gives it the whole batch
    confusable = [
        rec(f"card {i}", intent="cancel_service", confidence=0.40 + i / 100, top2=0.39) for i in range(4)
    ]
    others = [
        rec("bill a", intent="bill_explanation", confidence=0.6, top2=0.2),
        rec("bill b", intent="bill_explanation", confidence=0.7, top2=0.1),
        rec("plain", intent="no_signal", confidence=0.8, top2=0.1),
        rec("Card 0!", intent="no_signal", confidence=0.9, top2=0.05, minutes=1),  # a copy of "card 0"
    ]
    write(url, [*confusable, *others])
    assert texts(review_queue(url, limit=3)) == ["card 0", "card 1", "card 2"]
    diverse = review_queue(url, strategy="diverse", limit=1000)
    # round 1: each intent's least certain item, in margin order; round 2: the second ones; ...
    assert texts(diverse) == ["card 0", "bill a", "plain", "card 1", "bill b", "card 2", "card 3"]
    assert diverse[0].count == 2  # the copy joined its text's item, it took no place of its own
    assert texts(review_queue(url, strategy="diverse", limit=3)) == ["card 0", "bill a", "plain"]


def test_the_cli_offers_every_strategy_of_the_store() -> None:
    from router.cli.review import Strategy
    from router.store.queries import REVIEW_STRATEGIES

    assert [s.value for s in Strategy] == list(REVIEW_STRATEGIES)


def test_fallback_disagreement_random_and_the_filters(url: str) -> None:
    write(
        url,
        [
            rec("fb old", fallback=True, reason="low_confidence", route="human_review", minutes=1),
            rec("fb new", fallback=True, reason="ambiguous", route="human_review", minutes=5, version="v2"),
            rec("overruled", escalation="overruled", intent="cancel_service", route="general", minutes=3),
            rec("agreed", escalation="agreed", minutes=4),
            *[rec(f"query {i}", minutes=10 + i, top2=0.01 * i) for i in range(20)],
        ],
    )
    fallback = review_queue(url, strategy="fallback")
    assert texts(fallback) == ["fb new", "fb old"]
    assert fallback[0].fallback_reason == "ambiguous"
    assert texts(review_queue(url, strategy="disagreement")) == ["overruled"]

    first = review_queue(url, strategy="random", seed=7, limit=10)
    assert texts(first) == texts(review_queue(url, strategy="random", seed=7, limit=10))  # deterministic
    assert texts(first) != texts(review_queue(url, strategy="random", seed=8, limit=10))
    everything = review_queue(url, strategy="random", seed=7, limit=1000)
    assert len(everything) == 24 and texts(everything)[:10] == texts(first)
    assert texts(everything) != sorted(texts(everything))  # not by time, not by text
    write(url, [rec("one more", minutes=99)])  # a new row does not reshuffle the others
    again = [t for t in texts(review_queue(url, strategy="random", seed=7, limit=1000)) if t != "one more"]
    assert again == texts(everything)

    since = datetime.fromtimestamp(T0 + 4 * 60, UTC)
    assert set(texts(review_queue(url, strategy="fallback", since=since))) == {"fb new"}
    naive = since.replace(tzinfo=None)  # naive means UTC
    assert texts(review_queue(url, strategy="fallback", since=naive)) == ["fb new"]
    assert texts(review_queue(url, model_version="v2")) == ["fb new"]
    assert texts(review_queue(url, route="general")) == ["overruled"]
    assert texts(review_queue(url, intent="cancel_service")) == ["overruled"]
    assert review_queue(url, intent="no_such_intent") == []
    # bounded: only the newest `scan_limit` candidates are ranked
    assert texts(review_queue(url, scan_limit=2)) == ["query 19", "one more"]
    with pytest.raises(ValueError, match="limit"):
        review_queue(url, limit=1001)
    with pytest.raises(ValueError, match="strategy"):
        review_queue(url, strategy="loudest")  # type: ignore[arg-type]


def test_duplicates_collapse_into_one_item_with_every_request_id(url: str) -> None:
    a = rec("Why is my BILL so high?", confidence=0.5, top2=0.45, minutes=1)
    b = rec("  why is my bill   so high ", confidence=0.6, top2=0.3, minutes=2)
    c = rec("why is my bill so high!!", confidence=0.5, top2=0.46, minutes=3)  # the smallest margin
    d = rec("why is my bill so high today", confidence=0.5, top2=0.2, minutes=4)  # another text
    write(url, [a, b, c, d])
    items = review_queue(url)
    assert [i.count for i in items] == [3, 1]
    top = items[0]
    assert top.request_id == c.id and top.text == "why is my bill so high!!"  # first by margin
    assert top.request_ids == [c.id, a.id, b.id]
    assert texts(review_queue(url, strategy="random", limit=5)).count(d.text) == 1
    assert [i.count for i in review_queue(url, strategy="random")] in ([3, 1], [1, 3])


def _unlabelled_texts_case(url: str) -> None:
    labelled = rec("Labelled  once", minutes=1)
    write(
        url,
        [
            labelled,
            rec("labelled once", minutes=2),  # a copy of a labelled text: left out too
            rec("new query", minutes=3),
            rec("New query!", minutes=4),  # the same text after normalising: one of them
            rec(None, minutes=5),  # text not stored
            rec("old query", minutes=-60),
        ],
        feedback=((labelled.id, "no_signal"),),
    )
    assert unlabelled_texts(url) == ["New query!", "old query"]  # newest first, one per text
    assert unlabelled_texts(url, since=datetime.fromtimestamp(T0, UTC)) == ["New query!"]
    assert unlabelled_texts(url, limit=1) == ["New query!"]
    with pytest.raises(ValueError, match="limit"):
        unlabelled_texts(url, limit=0)


def test_unlabelled_texts_for_self_training_on_sqlite(url: str) -> None:
    _unlabelled_texts_case(url)


def test_unlabelled_texts_for_self_training_on_postgresql() -> None:
    with pg_schema() as url:
        _unlabelled_texts_case(url)


def test_normalise_text() -> None:
    assert normalise_text("  Why is my BILL\tso high?!  ") == "why is my bill so high"
    assert normalise_text("«Ｃancel» my plan...") == "cancel» my plan"  # NFKC; only the ends
    assert normalise_text("what's a 5G signal?") == "what's a 5g signal"
    assert normalise_text("???") == "???"  # nothing but punctuation: kept
    assert normalise_text("Straße") == normalise_text("STRASSE")


# -- the API ------------------------------------------------------------------------------------


def test_review_api_serves_the_queue_to_admins_only(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, admin_token=TOKEN)

    async def scenario() -> None:
        async with serving(settings) as client:
            contract = Contract(client.app.openapi())  # type: ignore[attr-defined]
            for text in ("my bill is wrong", "hello there", "Hello there!", "no signal at home", "weather?"):
                assert (await client.post("/v1/route", json={"text": text})).status_code == 200
            sure = (await client.post("/v1/route", json={"text": "cancel my plan"})).json()
            r = await client.post(
                "/v1/feedback", json={"request_id": sure["request_id"], "correct_intent": "cancel_service"}
            )
            assert r.status_code == 201  # stored after the requests before it (one FIFO writer)

            r = await client.get("/v1/review", headers=AUTH)
            assert r.status_code == 200, r.text
            assert r.headers["cache-control"] == "no-store"
            body = contract.check(r)
            assert body["strategy"] == "uncertainty"
            items = body["items"]
            # "hello there" (twice) is flat: top-1 0.4, top-2 0.35; keyword hits have margin 0.87
            assert items[0]["text"] in ("hello there", "Hello there!") and items[0]["count"] == 2
            assert items[0]["margin"] == pytest.approx(0.05, abs=1e-5)
            assert items[0]["fallback"] is True and items[0]["fallback_reason"] == "low_confidence"
            assert [a["intent"] for a in items[0]["alternatives"]] == [
                "bill_explanation", "no_signal", "cancel_service",
            ]  # fmt: skip
            assert "cancel my plan" not in [i["text"] for i in items]  # has feedback
            assert len(items) == 4

            r = await client.get(
                "/v1/review", params={"strategy": "fallback", "limit": 1, "intent": "oos"}, headers=AUTH
            )
            assert [i["text"] for i in contract.check(r)["items"]] == ["weather?"]
            since = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
            r = await client.get("/v1/review", params={"since": since}, headers=AUTH)
            assert r.json()["items"] == []
            r = await client.get(
                "/v1/review", params={"strategy": "random", "seed": 3, "route": "billing"}, headers=AUTH
            )
            assert [i["text"] for i in r.json()["items"]] == ["my bill is wrong"]

            r = await client.get("/v1/review")
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            contract.check(r)
            r = await client.get("/v1/review", headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 403
            for params, field in (
                ({"strategy": "loudest"}, "strategy"),
                ({"limit": 0}, "limit"),
                ({"limit": 1001}, "limit"),
                ({"since": "yesterday"}, "since"),
                ({"seed": "x"}, "seed"),
                ({"intent": ""}, "intent"),
            ):
                r = await client.get("/v1/review", params=params, headers=AUTH)
                assert r.status_code == 422, (params, r.text)
                body = contract.check(r)
                assert body["errors"][0]["field"] == field and body["detail"].startswith(f"{field}:")

    run(scenario())


def test_review_api_is_off_without_an_admin_token(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(make_settings(tmp_path)) as client:
            r = await client.get("/v1/review", headers=AUTH)
            assert r.status_code == 404 and "admin_token" in r.json()["detail"]

    run(scenario())


# -- export, label, import ----------------------------------------------------------------------


def model_dir(tmp_path: Path, labels: tuple[str, ...] = LABELS) -> Path:
    path = tmp_path / "model"
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text(json.dumps({"id2label": dict(enumerate(labels))}))
    return path


def queue_store(url: str) -> list[RequestRecord]:
    records = [
        rec("my bill is wrong", confidence=0.5, top2=0.45, minutes=1),
        rec("no signal in the kitchen", confidence=0.6, top2=0.3, minutes=2),
        rec("cancel it", confidence=0.7, top2=0.1, minutes=3),
        rec("Cancel it!", confidence=0.9, top2=0.05, minutes=4),
    ]
    write(url, records)
    return records


def cli_run(*args: str) -> Any:
    result = runner.invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def export(url: str, out: Path, fmt: str, *extra: str) -> Any:
    result = cli_run("review", "export", "--database-url", url, "--format", fmt, "-o", out, *extra)
    assert result.exit_code == 0, result.output
    return result


def import_(url: str, path: Path, *extra: str) -> Any:
    return cli_run("feedback", "import", path, "--database-url", url, *extra)


def test_csv_export_edit_import_round_trip(tmp_path: Path, url: str) -> None:
    queue_store(url)
    model = model_dir(tmp_path)
    out = tmp_path / "queue.csv"
    result = export(url, out, "csv")
    assert "wrote 3 items (4 requests" in result.output
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [
        "request_id", "text", "predicted_intent", "confidence", "margin", "route", "count",
        "alternatives", "correct_intent",
    ]  # fmt: skip
    assert [r["text"] for r in rows] == ["my bill is wrong", "no signal in the kitchen", "cancel it"]
    assert rows[2]["count"] == "2" and float(rows[0]["margin"]) == pytest.approx(0.05)
    assert json.loads(rows[0]["alternatives"])[0] == {"intent": "no_signal", "probability": 0.5}

    rows[0]["correct_intent"] = "bill_explanation"  # a person's corrections
    rows[2]["correct_intent"] = "cancel_service"  # row 1 left empty: unlabelled
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = import_(url, out, "--model", model)
    assert result.exit_code == 0, result.output
    assert "3 rows read: 2 accepted, 0 duplicates, 1 unlabelled" in result.output
    assert count(url, feedback_table) == 2

    again = import_(url, out, "--model", model)  # idempotent
    assert again.exit_code == 0 and "0 accepted, 2 duplicates" in again.output
    assert count(url, feedback_table) == 2
    export(url, out, "csv")  # labelled texts leave the queue, with their unlabelled copies ("Cancel it!")
    with out.open(newline="") as f:
        assert [r["text"] for r in csv.DictReader(f)] == ["no signal in the kitchen"]


def test_jsonl_round_trip_with_a_registry_and_a_pending_intent(tmp_path: Path, url: str) -> None:
    from serving.registry import Registry

    queue_store(url)
    registry = tmp_path / "registry"
    Registry(registry).register(model_dir(tmp_path), alias="champion")
    (registry / "taxonomy.json").write_text(
        json.dumps({"pending": {"kitchen_signal": {"route": "tech"}}, "retired": {}, "renames": {}})
    )
    out = tmp_path / "queue.jsonl"
    export(url, out, "jsonl", "--limit", "2")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in rows] == ["my bill is wrong", "no signal in the kitchen"]
    assert rows[0]["correct_intent"] is None and rows[0]["alternatives"][1]["intent"] == "bill_explanation"
    rows[0].update(correct_intent="bill_explanation", source="agent-7")
    rows[1]["correct_intent"] = "kitchen_signal"  # pending: feedback may name it
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))

    dry = import_(url, out, "--registry", registry, "--dry-run")
    assert dry.exit_code == 0 and "dry run, nothing stored" in dry.output and "2 accepted" in dry.output
    assert count(url, feedback_table) == 0
    result = import_(url, out, "--registry", registry)
    assert result.exit_code == 0 and "2 accepted" in result.output, result.output
    assert import_(url, out, "--registry", registry).output.count("2 duplicates") == 1
    engine = create_db_engine(url)
    with engine.connect() as conn:
        stored = dict(conn.execute(select(feedback_table.c.correct_intent, feedback_table.c.source)).all())
    engine.dispose()
    assert stored == {"bill_explanation": "agent-7", "kitchen_signal": "review"}


def test_label_studio_export_and_import(tmp_path: Path, url: str) -> None:
    records = queue_store(url)
    model = model_dir(tmp_path)
    out = tmp_path / "tasks.json"
    export(url, out, "label-studio")
    tasks = json.loads(out.read_text())
    assert tasks[0] == {
        "data": {"text": "my bill is wrong", "request_id": records[0].id},
        "predictions": [
            {
                "model_version": "v1",
                "score": 0.5,
                "result": [
                    {
                        "from_name": "intent",
                        "to_name": "text",
                        "type": "choices",
                        "value": {"choices": ["no_signal"]},
                    }
                ],
            }
        ],
    }
    # what Label Studio's JSON export gives back: tasks with annotations (the last one counts)
    exported = [
        {**tasks[0], "id": 1, "annotations": [
            {"completed_by": 3, "result": [{"from_name": "intent", "to_name": "text", "type": "choices",
                                             "value": {"choices": ["no_signal"]}}]},
            {"completed_by": {"id": 4, "email": "qa@example.com"}, "result": [
                {"from_name": "intent", "to_name": "text", "type": "choices",
                 "value": {"choices": ["bill_explanation"]}}]},
        ]},
        {**tasks[1], "id": 2, "annotations": []},  # not labelled yet
        {**tasks[2], "id": 3, "annotations": [{"was_cancelled": True, "result": []}]},  # skipped
    ]  # fmt: skip
    path = tmp_path / "export.json"
    path.write_text(json.dumps(exported))
    result = import_(url, path, "--model", model)
    assert result.exit_code == 0, result.output
    assert "3 rows read: 1 accepted, 0 duplicates, 2 unlabelled" in result.output
    engine = create_db_engine(url)
    with engine.connect() as conn:
        row = conn.execute(select(feedback_table)).mappings().one()
    engine.dispose()
    assert (row["request_id"], row["correct_intent"], row["source"], row["agree"]) == (
        records[0].id, "bill_explanation", "qa@example.com", False,
    )  # fmt: skip
    assert "1 duplicates" in import_(url, path, "--model", model).output


def test_import_rejects_unknown_ids_intents_and_malformed_rows(tmp_path: Path, url: str) -> None:
    records = queue_store(url)
    model = model_dir(tmp_path)
    path = tmp_path / "labels.csv"
    path.write_text(
        "request_id,correct_intent\n"
        f"{records[0].id},bill_explanation\n"  # line 2: fine
        "no-such-request,no_signal\n"  # line 3: unknown id
        f"{records[1].id},teleportation\n"  # line 4: unknown intent
        f"{records[2].id},no_signal,extra\n"  # line 5: too many fields
        ",no_signal\n"  # line 6: no id
    )
    result = import_(url, path, "--model", model)
    assert result.exit_code == 1, result.output
    out = result.output
    summary = "5 rows read: 1 accepted, 0 duplicates, 0 unlabelled, 1 unknown request ids, 1 unknown intents"
    assert f"{summary}, 2 malformed" in out
    assert "unknown request id on line 3: 'no-such-request'" in out
    assert "unknown intent on line 4: 'teleportation'" in out and "valid intents: bill_explanation" in out
    assert "malformed on line 5: 3 fields, the header has 2" in out
    assert "malformed on line 6: no request_id" in out
    assert count(url, feedback_table) == 1  # the good row is stored

    jsonl = tmp_path / "labels.jsonl"
    jsonl.write_text(
        json.dumps({"request_id": records[1].id, "correct_intent": "no_signal"}) + "\n"
        "\n"
        "{not json\n"  # line 3
        "[1, 2]\n"  # line 4
         + json.dumps({"request_id": records[2].id, "correct_intent": 5}) + "\n"  # line 5
    )
    dry = import_(url, jsonl, "--model", model, "--dry-run")
    assert dry.exit_code == 1 and "1 accepted" in dry.output and "3 malformed" in dry.output
    assert (
        "malformed on line 3: not JSON" in dry.output
        and "malformed on line 4: not a JSON object" in dry.output
    )
    assert "line 5: correct_intent is not a string" in dry.output
    assert count(url, feedback_table) == 1  # dry run: nothing written


def test_import_fails_whole_files_it_cannot_read(tmp_path: Path, url: str) -> None:
    queue_store(url)
    model = model_dir(tmp_path)

    def fails(name: str, content: bytes, needle: str, *extra: str) -> None:
        path = tmp_path / name
        path.write_bytes(content)
        result = import_(url, path, "--model", model, *extra)
        assert result.exit_code == 2, result.output
        assert needle in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output

    fails("ls.json", b'[\n  {"data": {"request_id": "x"}},\n  {oops}\n]\n', "ls.json: line 3: not valid JSON")
    fails("ls2.json", b'{"data": {}}', "a Label Studio export is a JSON list of tasks")
    fails(
        "l.csv", b"id,label\nx,y\n", "line 1: the CSV header has no request_id and no correct_intent column"
    )
    fails("e.csv", b"", "line 1: empty file")
    fails("b.csv", b"request_id,correct_intent\nabc,no_signal\n\xff\xfe,x\n", "line 3: not UTF-8 text")
    assert "file not found" in import_(url, tmp_path / "missing.csv", "--model", model).output
    result = import_(url, tmp_path / "e.csv", "--registry", tmp_path / "r")
    assert result.exit_code == 2 and "registry not found" in result.output
    result = import_(url, tmp_path / "l.csv", "--registry", str(tmp_path), "--model", str(model))
    assert result.exit_code == 2 and "not both" in result.output
    empty_registry = tmp_path / "empty-registry"
    empty_registry.mkdir()
    result = import_(url, tmp_path / "e.csv", "--registry", str(empty_registry))
    assert result.exit_code == 2 and "has no intents" in result.output


def test_export_needs_a_migrated_store(tmp_path: Path) -> None:
    result = cli_run(
        "review", "export", "--database-url", f"sqlite:///{tmp_path / 'none.db'}", "-o", tmp_path / "q.csv"
    )
    assert result.exit_code == 2 and "no request log" in result.output
    assert not (tmp_path / "q.csv").exists()
    bad = cli_run("review", "export", "-o", tmp_path / "q.csv", "--strategy", "loudest")
    assert bad.exit_code == 2 and "loudest" in bad.output
    since = cli_run("review", "export", "-o", tmp_path / "q.csv", "--since", "yesterday")
    assert since.exit_code == 2 and "ISO 8601" in since.output


def test_the_router_logs_what_the_queue_needs(tmp_path: Path) -> None:
    """A routed request's row carries top-2 and the top-k, also when top_k is 1."""
    settings = make_settings(tmp_path, top_k=1)

    async def scenario() -> None:
        async with serving(settings) as client:
            r = await client.post("/v1/route", json={"text": "hello there"})
            assert len(r.json()["alternatives"]) == 1

    run(scenario())
    items = review_queue(settings.database_url)
    assert items[0].margin == pytest.approx(0.05, abs=1e-5)
    assert items[0].alternatives == [{"intent": "bill_explanation", "probability": pytest.approx(0.4)}]
    assert time.time() - items[0].created_at.timestamp() < 60
