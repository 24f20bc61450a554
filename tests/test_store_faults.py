"""The request-log writer under database faults, on real SQLite and PostgreSQL (no mocks):
rows the database refuses, a read-only database after a "failover", backends terminated
mid-traffic, and the on-disk spool (replay, idempotence, locking). All fast."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from support import pg_schema

from router.store import (
    RequestLog,
    RequestRecord,
    Spool,
    WriterHooks,
    create_db_engine,
    feedback_item,
    migrate,
    new_request_id,
)
from router.store.faults import REPLACEMENT, is_transient, repaired
from router.store.models import requests as requests_table


def record(text: str = "no signal", **fields: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "id": new_request_id(), "ts": time.time(), "text": text, "intent": "no_signal",
        "confidence": 0.9, "route": "technical_support", "fallback": False, "reason": None,
        "model_version": "v1", "latency_ms": 1.0, "meta": {"channel": "chat"},
    }  # fmt: skip
    values.update(fields)
    return RequestRecord(**values)


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated store on a real SQLite file or a throwaway PostgreSQL schema."""
    if request.param == "sqlite":
        engine = create_db_engine(f"sqlite:///{tmp_path / 'log.db'}")
        migrate(engine)
        yield engine
        engine.dispose()
        return
    with pg_schema() as url:
        engine = create_db_engine(url)
        migrate(engine)
        yield engine
        engine.dispose()


def stored(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {row.id: row for row in conn.execute(select(requests_table))}


class Counts:
    def __init__(self) -> None:
        self.flushes = 0
        self.errors = 0
        self.repaired = 0
        self.spilled: dict[str, int] = {}

    def hooks(self) -> WriterHooks:
        def spill(rows: int, reason: str) -> None:
            self.spilled[reason] = self.spilled.get(reason, 0) + rows

        def flush(rows: int, seconds: float) -> None:
            self.flushes += 1

        def error() -> None:
            self.errors += 1

        def repair(rows: int) -> None:
            self.repaired += rows

        return WriterHooks(on_flush=flush, on_error=error, on_spill=spill, on_repair=repair)


# -- rows the database refuses -------------------------------------------------------------------


def test_bad_rows_are_isolated_by_bisection_and_stored_repaired(db: Engine) -> None:
    """A lone surrogate (SQLite and psycopg cannot encode it), a NUL byte (psycopg refuses it) and
    NaN / Infinity in the JSON metadata (PostgreSQL's json refuses them) in a batch of 1000: every
    row is stored, the bad ones repaired, in a few dozen transactions, not one per row."""
    counts = Counts()
    good = [record(f"query {i}") for i in range(997)]
    bad = [
        record("lone \ud800 surrogate"),
        record("nul \x00 byte", meta={"note": "nul \x00 too"}),
        record("fine text", meta={"score": math.nan, "max": math.inf}),
    ]
    rows = good[:300] + bad[:1] + good[300:600] + bad[1:2] + good[600:] + bad[2:]

    async def scenario() -> None:
        log = RequestLog(db, linger_s=0.0, batch_max=1000, hooks=counts.hooks())
        for r in rows:  # queued before the writer starts: one batch of 1000
            log.log(r)
        log.start()
        await log.close()

    asyncio.run(scenario())
    found = stored(db)
    assert set(found) == {r.id for r in rows}  # nothing lost
    assert found[bad[0].id].text == f"lone {REPLACEMENT} surrogate"
    assert counts.spilled == {}
    if db.dialect.name == "postgresql":  # all three are refused there
        assert found[bad[1].id].text == f"nul {REPLACEMENT} byte"
        assert found[bad[1].id].meta == {"note": f"nul {REPLACEMENT} too"}  # the whole row is repaired
        assert found[bad[2].id].meta == {"score": None, "max": None}
        assert counts.repaired == 3
    else:  # SQLite stores NUL and NaN in JSON text as they are
        assert found[bad[1].id].text == "nul \x00 byte"
        assert counts.repaired == 1
    # bisection: ~2 log2(1000) transactions per bad row, against 1000 for row-by-row
    assert counts.flushes + counts.errors <= 3 * 2 * 11 + 2, (counts.flushes, counts.errors)


def test_a_row_refused_even_repaired_is_spilled_and_counted_the_rest_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite turns a NaN confidence into NULL, which the NOT NULL column refuses: that row goes to
    the server log as a JSON line and `on_spill("rejected")`; the 199 others are stored."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(engine)
    counts = Counts()
    rows = [record() for _ in range(199)]
    hopeless = record(confidence=math.nan)
    rows.insert(57, hopeless)

    async def scenario() -> None:
        log = RequestLog(engine, linger_s=0.0, hooks=counts.hooks())
        for r in rows:
            log.log(r)
        log.start()
        await log.close()

    with caplog.at_level(logging.ERROR, logger="router.store.writer"):
        asyncio.run(scenario())
    assert set(stored(engine)) == {r.id for r in rows} - {hopeless.id}
    assert counts.spilled == {"rejected": 1}
    assert any("unwritten request" in m and hopeless.id in m for m in caplog.messages)
    engine.dispose()


def test_feedback_with_a_nul_byte_is_stored_repaired_and_its_caller_answered() -> None:
    with pg_schema() as url:
        engine = create_db_engine(url)
        migrate(engine)

        async def scenario() -> None:
            log = RequestLog(engine, linger_s=0.0)
            log.start()
            r = record()
            log.log(r)
            result = await log.submit_feedback(feedback_item(r.id, "no_signal", "agent", "bad \x00 byte"))
            assert result.status == "created" and result.row is not None
            await log.close()

        asyncio.run(scenario())
        with engine.connect() as conn:
            assert conn.execute(text("SELECT comment FROM feedback")).scalar() == f"bad {REPLACEMENT} byte"
        engine.dispose()


def test_error_classification_and_repair_without_a_database() -> None:
    from sqlalchemy.exc import DataError, IntegrityError, InternalError, OperationalError, StatementError

    class Orig(Exception):
        def __init__(self, sqlstate: str) -> None:
            self.sqlstate = sqlstate

    assert is_transient(OperationalError("x", {}, Orig("57P01")))  # admin shutdown
    assert is_transient(InternalError("x", {}, Orig("25006")))  # read-only transaction
    assert not is_transient(DataError("x", {}, Orig("22P02")))
    assert not is_transient(IntegrityError("x", {}, Orig("23505")))
    assert not is_transient(InternalError("x", {}, Orig("22021")))  # data class, odd wrapper
    assert not is_transient(StatementError("x", "INSERT", {}, UnicodeEncodeError("utf-8", "", 0, 1, "")))
    assert not is_transient(UnicodeEncodeError("utf-8", "", 0, 1, "surrogates not allowed"))
    r = record("ok", top2_confidence=math.nan, alternatives=[{"intent": "a\ud800", "probability": math.inf}])
    fixed = repaired(r)
    assert fixed.top2_confidence is None
    assert fixed.alternatives == [{"intent": f"a{REPLACEMENT}", "probability": None}]
    clean = record()
    assert repaired(clean) is clean


# -- the database unavailable: read-only after a failover, backends terminated -----------------


def test_a_read_only_database_after_a_failover_is_retried_until_writable() -> None:
    """The writer's role is made read-only (`default_transaction_read_only`: PostgreSQL then refuses
    every insert with ReadOnlySqlTransaction, as a demoted primary does), rows are logged, then
    the role is made writable again: every row arrives, none is spilled."""
    with pg_schema() as url:
        admin = create_db_engine(url)
        migrate(admin)
        role = f"sb_ro_{uuid.uuid4().hex[:8]}"
        schema = admin.url.query["options"].split("=")[-1]
        with admin.begin() as conn:
            conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
            conn.execute(text(f'GRANT ALL ON SCHEMA "{schema}" TO "{role}"'))
            conn.execute(text(f'GRANT ALL ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"'))
            conn.execute(text(f'ALTER ROLE "{role}" SET default_transaction_read_only = on'))
        engine = create_db_engine(admin.url.set(username=role).render_as_string(hide_password=False))
        counts = Counts()
        rows = [record() for _ in range(50)]
        try:

            async def scenario() -> None:
                log = RequestLog(engine, linger_s=0.0, hooks=counts.hooks())
                log.start()
                for r in rows:
                    log.log(r)
                while counts.errors < 3:  # refused, retried
                    await asyncio.sleep(0.05)
                with admin.begin() as conn:  # "the failover completes": writable again
                    conn.execute(text(f'ALTER ROLE "{role}" RESET default_transaction_read_only'))
                await log.close()

            asyncio.run(scenario())
            assert set(stored(admin)) == {r.id for r in rows}
            assert counts.spilled == {} and counts.repaired == 0
        finally:
            engine.dispose()
            with admin.begin() as conn:
                conn.execute(text(f'REASSIGN OWNED BY "{role}" TO CURRENT_USER'))
                conn.execute(text(f'DROP OWNED BY "{role}"'))
                conn.execute(text(f'DROP ROLE "{role}"'))
            admin.dispose()


def test_backends_terminated_during_writes_lose_nothing() -> None:
    """`pg_terminate_backend` on the writer's connections (what a PostgreSQL restart or failover
    does to them) while 3000 rows are written in small batches: all stored, each once."""
    with pg_schema() as url:
        name = f"sb_test_{uuid.uuid4().hex[:10]}"  # only this test's backends are terminated
        engine = create_db_engine(f"{url}&application_name={name}")
        migrate(engine)
        admin = create_db_engine(url)
        counts = Counts()
        rows = [record() for _ in range(3000)]
        stop = threading.Event()
        terminated = 0

        def terminator() -> None:
            nonlocal terminated
            with admin.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT")
                while not stop.is_set():
                    terminated += len(
                        conn.execute(
                            text(
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE application_name = :name"
                            ),
                            {"name": name},
                        ).all()
                    )
                    time.sleep(0.1)  # a restart every 100 ms: the writer must make progress between

        async def scenario() -> None:
            log = RequestLog(engine, linger_s=0.001, batch_max=50, hooks=counts.hooks())
            log.start()
            for i, r in enumerate(rows):
                log.log(r)
                if i % 25 == 0:
                    await asyncio.sleep(0.025)  # ~3 s of traffic
            await log.close()

        thread = threading.Thread(target=terminator)
        thread.start()
        try:
            asyncio.run(scenario())
        finally:
            stop.set()
            thread.join()
        with engine.connect() as conn:
            ids = list(conn.execute(select(requests_table.c.id)).scalars())
        assert len(ids) == len(set(ids)) == len(rows)
        assert set(ids) == {r.id for r in rows}
        assert counts.spilled == {}
        print(f"terminated {terminated} backends, {counts.errors} failed attempts retried")
        engine.dispose()
        admin.dispose()


# -- the spool -------------------------------------------------------------------------------


def test_spool_rows_left_by_a_dead_process_are_replayed_once(tmp_path: Path) -> None:
    """A process that spooled rows and died (here: its spool closed with `keep`, as SIGKILL leaves
    it) and a live one's locked segment: the next start replays the dead one's rows, idempotently
    (some already in the database), and leaves the live one's segment alone."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'log.db'}")
    migrate(engine)
    spool_dir = tmp_path / "spool"
    rows = [record(f"q{i}") for i in range(2500)]
    dead = Spool(spool_dir, segment_rows=1000)
    for start in range(0, len(rows), 100):  # requests arrive a few at a time
        dead.append(rows[start : start + 100])
    dead.close(keep=True)
    with engine.begin() as conn:  # the first 100 were committed before the process died
        conn.execute(requests_table.insert(), [_as_row(r) for r in rows[:100]])
    live = Spool(spool_dir)
    other = record("another router's row")
    live.append([other])  # a live process holds this segment's lock
    assert len(list(spool_dir.glob("*.jsonl"))) == 4

    async def scenario() -> int:
        log = RequestLog(engine, linger_s=0.0, spool=Spool(spool_dir))
        replayed = await log.replay()
        log.start()
        await log.close()
        return replayed

    assert asyncio.run(scenario()) == 2500
    assert set(stored(engine)) == {r.id for r in rows}
    assert len(list(spool_dir.glob("*.jsonl"))) == 1  # only the live process's segment is left
    assert asyncio.run(scenario()) == 0  # replayed files are gone: a second start replays nothing
    live.close(keep=False)
    assert list(spool_dir.glob("*.jsonl")) == []
    engine.dispose()


def test_spool_is_empty_once_rows_are_written_and_kept_when_the_database_is_locked(
    tmp_path: Path,
) -> None:
    """Steady state: the live segment is truncated once its rows commit, so an idle spool holds
    nothing. With the SQLite file locked by another connection (BEGIN EXCLUSIVE) the writer
    cannot commit; close() with a short budget returns in time and keeps the rows for replay."""
    db_path = tmp_path / "log.db"
    engine = create_db_engine(f"sqlite:///{db_path}")
    migrate(engine)
    spool_dir = tmp_path / "spool"
    first = [record() for _ in range(100)]
    second = [record() for _ in range(100)]

    async def writes_then_idle() -> None:
        log = RequestLog(engine, linger_s=0.0, spool=Spool(spool_dir))
        log.start()
        for r in first:
            log.log(r)
        while log.backlog or log._in_flight:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        segments = list(spool_dir.glob("*.jsonl"))
        assert len(segments) == 1 and segments[0].stat().st_size == 0
        await log.close()

    asyncio.run(writes_then_idle())
    assert list(spool_dir.glob("*.jsonl")) == []

    import sqlite3

    locker = sqlite3.connect(db_path, timeout=0)
    locker.execute("BEGIN EXCLUSIVE")

    async def locked() -> float:
        log = RequestLog(engine, linger_s=0.0, spool=Spool(spool_dir))
        log.start()
        for r in second:
            log.log(r)
        started = time.monotonic()
        await log.close(timeout_s=1.0)
        return time.monotonic() - started

    took = asyncio.run(locked())
    assert took < 1.5  # the budget, not busy_timeout (5 s) plus retries
    locker.rollback()
    locker.close()
    assert not set(stored(engine)) & {r.id for r in second}
    assert len(list(spool_dir.glob("*.jsonl"))) == 1

    async def restart() -> int:
        log = RequestLog(engine, linger_s=0.0, spool=Spool(spool_dir))
        replayed = await log.replay()
        log.start()
        await log.close()
        return replayed

    assert asyncio.run(restart()) == 100
    assert set(stored(engine)) == {r.id for r in first + second}
    engine.dispose()


def test_spool_skips_a_torn_last_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool_dir = tmp_path / "spool"
    dead = Spool(spool_dir)
    rows = [record() for _ in range(3)]
    dead.append(rows)
    dead.close(keep=True)
    (segment,) = spool_dir.glob("*.jsonl")
    with segment.open("ab") as f:
        f.write(b'["0190')  # an OS crash mid-write
    with caplog.at_level(logging.WARNING):
        spool = Spool(spool_dir)
        ((path, loaded),) = list(spool.orphans())
    spool.abandon(path)
    assert [r.id for r in loaded] == [r.id for r in rows]
    assert any("unreadable" in m for m in caplog.messages)


def _as_row(r: RequestRecord) -> dict[str, Any]:
    from router.store.writer import _row

    return _row(r)


# -- the app: spool beside the SQLite file, readiness first at shutdown, metrics -------------------


def test_app_spools_beside_sqlite_flips_readiness_first_and_exports_the_spill_metric(
    tmp_path: Path,
) -> None:
    from support.fakes import make_settings, serving

    from router.cli.serve import drain_timeout_s

    settings = make_settings(tmp_path, shutdown_timeout_s=8.0)

    async def scenario() -> None:
        async with serving(settings) as client:
            assert (tmp_path / "log.db.spool").is_dir()
            assert (await client.post("/v1/route", json={"text": "no signal"})).status_code == 200
            body = (await client.get("/metrics")).text
            assert 'switchboard_request_log_spilled_total{reason="rejected"} 0.0' in body
            assert "switchboard_request_log_repaired_total 0.0" in body
            runtime = client.app.state.runtime  # type: ignore[attr-defined]
            deadline = runtime.begin_shutdown()  # what SIGTERM does first
            r = await client.get("/readyz")
            assert r.status_code == 503 and r.json()["status"] == "stopping"
            assert deadline - time.monotonic() == pytest.approx(8.0, abs=0.5)

    asyncio.run(scenario())
    assert list((tmp_path / "log.db.spool").glob("*.jsonl")) == []  # written, nothing to replay
    # one budget: uvicorn's drain leaves a fifth (>= 1 s) for the flush and the engine close
    assert drain_timeout_s(settings) == 5
    assert drain_timeout_s(settings.model_copy(update={"shutdown_timeout_s": 25.0})) == 19
    with pytest.raises(Exception, match="shutdown_delay_s"):
        make_settings(tmp_path, shutdown_timeout_s=5.0, shutdown_delay_s=5.0)
