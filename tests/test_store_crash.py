"""The request log's promises with a real `switchboard serve` process, real SQLite and
PostgreSQL, and real faults: a locked database and SIGKILL, SIGTERM with the database blocked and
slow requests in flight, PostgreSQL backends terminated under traffic. Each asserts that no
answered request is missing from the log afterwards. The router runs ONNX Runtime on the tiny
MiniLM: these are the store's promises, and it starts in seconds, not vLLM's half minute (the
vLLM router's end-to-end tests are test_router_e2e's)."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Connection, select, text
from support import ONNX_ENGINE, Server, pg_schema

from router.store import create_db_engine
from router.store.models import requests as requests_table

pytestmark = pytest.mark.slow

QUERIES = ["why is my bill higher this month", "no signal on my phone", "cancel my contract", "new line"]


def logged_ids(url: str, ids: list[str]) -> set[str]:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            found: set[str] = set()
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                query = select(requests_table.c.id).where(requests_table.c.id.in_(chunk))
                found |= set(conn.execute(query).scalars())
            return found
    finally:
        engine.dispose()


def route_many(base_url: str, n: int, workers: int = 8) -> list[str]:
    """n answered /v1/route requests (200 each); their request ids."""

    def one(i: int) -> str:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            r = client.post("/v1/route", json={"text": f"{QUERIES[i % len(QUERIES)]} #{i}"})
            assert r.status_code == 200, r.text
            return str(r.json()["request_id"])

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, range(n)))


def sigkill_tree(pid: int) -> int | None:
    """SIGKILL the router, then any engine processes of its own (as an OOM kill of the container
    would; orphaned, they would keep running); the router's exit status."""
    import psutil

    proc = psutil.Process(pid)
    children = proc.children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(children, timeout=30)
    return proc.wait(timeout=30)


@pytest.fixture(params=["sqlite", "postgres"])
def blocked_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, object]]:
    """(database URL, block) where `block()` returns a context manager holding the database so
    that no insert into `requests` can complete: SQLite `BEGIN EXCLUSIVE` from another
    connection ("database is locked"), PostgreSQL `LOCK TABLE requests IN ACCESS EXCLUSIVE MODE`
    (inserts wait). The server itself keeps running: other work on the machine uses it."""
    if request.param == "sqlite":
        path = tmp_path / "requests.db"

        class SqliteBlock:
            def __enter__(self) -> None:
                self.conn = sqlite3.connect(path, timeout=10)
                self.conn.execute("BEGIN EXCLUSIVE")

            def __exit__(self, *exc: object) -> None:
                self.conn.rollback()
                self.conn.close()

        yield f"sqlite:///{path}", SqliteBlock
        return
    with pg_schema() as url:

        class PgBlock:
            def __enter__(self) -> None:
                self.engine = create_db_engine(url)
                self.conn: Connection = self.engine.connect()
                self.tx = self.conn.begin()
                self.conn.execute(text("LOCK TABLE requests IN ACCESS EXCLUSIVE MODE"))

            def __exit__(self, *exc: object) -> None:
                self.tx.rollback()
                self.conn.close()
                self.engine.dispose()

        yield url, PgBlock


def test_sigkill_during_a_database_outage_loses_no_answered_row(
    router_model: Path, blocked_db: tuple[str, type], tmp_path: Path
) -> None:
    """Database blocked, 300 requests answered (their rows only in memory and the spool),
    SIGKILL; restarted with the database back, the router replays the spool before it is
    ready: all 300 rows are there, once."""
    url, block = blocked_db
    spool = {
        "SWITCHBOARD_LOG_SPOOL_DIR": str(tmp_path / "spool"),
        **ONNX_ENGINE,
    }  # PostgreSQL: not in ~/.local
    server = Server(router_model, url, tmp_path / "server", extra_env=spool)
    server.ensure_running()  # migrates the schema
    try:
        with block():
            ids = route_many(server.base_url, 300)
            assert server.proc is not None
            assert sigkill_tree(server.proc.pid) == -signal.SIGKILL
        assert logged_ids(url, ids) == set()  # nothing reached the database before the kill
        started = time.monotonic()
        server.start()  # replays the spool, then loads the model
        assert server.log_file is not None
        replay_log = server.log_file.read_text(errors="replace")
        assert logged_ids(url, ids) == set(ids), replay_log
        print(f"restart with replay of {len(ids)} rows: ready in {time.monotonic() - started:.1f} s")
        assert "replayed 300 rows from the spool" in replay_log
    finally:
        server.stop()


class SlowLLM:
    """An OpenAI-compatible chat endpoint that answers after `delay_s`: in cascade mode every
    /v1/route waits for it, which makes requests slow and in flight when SIGTERM comes."""

    def __init__(self, delay_s: float) -> None:
        delay = delay_s

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                time.sleep(delay)
                body = json.dumps(
                    {
                        "id": "x", "object": "chat.completion", "created": 0, "model": "slow",
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": '{"intent": "oos"}'}}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }
                ).encode()  # fmt: skip
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_sigterm_with_the_database_blocked_and_slow_requests_exits_within_the_budget(
    router_model: Path, tmp_path: Path
) -> None:
    """shutdown_timeout_s=8 is the whole budget: SIGTERM while the SQLite file is locked and 12
    requests (3 s each) are in flight. /readyz says 503 at once, the requests are answered, and
    the process exits 0 within 8 s (it used to take drain + flush + 5 s); every answered row is
    in the spool, and in the database after a restart with the lock gone."""
    budget = 8.0
    db_path = tmp_path / "requests.db"
    url = f"sqlite:///{db_path}"
    llm = SlowLLM(delay_s=3.0)
    env = {
        "SWITCHBOARD_SHUTDOWN_TIMEOUT_S": str(budget),
        "SWITCHBOARD_SHUTDOWN_DELAY_S": "1",
        "SWITCHBOARD_ESCALATION_MODEL": "slow",
        "SWITCHBOARD_ESCALATION_BASE_URL": llm.url,
        "SWITCHBOARD_ESCALATION_API_KEY": "test-key",
        "SWITCHBOARD_ESCALATION_THRESHOLD": "1.0",  # every query escalates: every request is slow
        "SWITCHBOARD_ESCALATION_STRUCTURED": "off",
        "SWITCHBOARD_ESCALATION_SHOTS": "0",
        "SWITCHBOARD_ESCALATION_TIMEOUT_S": "6",
        "SWITCHBOARD_ESCALATION_MAX_RETRIES": "0",
        **ONNX_ENGINE,
    }
    server = Server(router_model, url, tmp_path / "server", extra_env=env)
    try:
        server.ensure_running()
        fast = route_many(server.base_url, 20)  # written before the lock: the baseline
        locker = sqlite3.connect(db_path, timeout=10)
        locker.execute("BEGIN EXCLUSIVE")
        answered: list[str] = []
        with ThreadPoolExecutor(12) as pool:
            futures = [pool.submit(route_many, server.base_url, 1, 1) for _ in range(12)]
            time.sleep(1.0)  # all 12 are waiting for the slow LLM
            assert server.proc is not None
            sigterm = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            ready = httpx.get(f"{server.base_url}/readyz", timeout=5)
            assert ready.status_code == 503 and ready.json()["status"] == "stopping"
            for f in futures:
                answered += f.result(timeout=30)
        code = server.proc.wait(timeout=30)
        took = time.monotonic() - sigterm
        print(f"SIGTERM to exit: {took:.2f} s (budget {budget:g} s), {len(answered)} slow requests answered")
        assert code == 0, server.log_tail()
        assert took <= budget + 1.0, server.log_tail()  # +1 s: interpreter exit after the budget
        assert server.log_file is not None
        log = server.log_file.read_text(errors="replace")
        assert "kept in the spool" in log, log[-5000:]
        spooled = {
            json.loads(line)[0]
            for segment in (tmp_path / "requests.db.spool").glob("*.jsonl")
            for line in segment.read_text().splitlines()
        }
        assert set(answered) <= spooled  # nothing lost: the rows wait in the spool
        locker.rollback()
        locker.close()
        server.extra_env = dict(ONNX_ENGINE)  # restart without the slow LLM: the spool is replayed
        server.start()
        assert logged_ids(url, fast + answered) == set(fast + answered)
    finally:
        server.stop()
        llm.close()


def test_postgres_backends_terminated_during_traffic_lose_no_answered_request(
    router_model: Path, tmp_path: Path
) -> None:
    """8 client threads route for ~10 s while the router's PostgreSQL backends are terminated
    (`pg_terminate_backend`, what a restart or failover does to them) every 0.5 s: every
    answered request is in the log afterwards, once. Only this router's backends are terminated
    (its own application_name): the server stays up for everyone else."""
    with pg_schema() as base:
        name = f"sb_test_{uuid.uuid4().hex[:10]}"
        url = f"{base}&application_name={name}"
        spool = {"SWITCHBOARD_LOG_SPOOL_DIR": str(tmp_path / "spool"), **ONNX_ENGINE}
        server = Server(router_model, url, tmp_path / "server", extra_env=spool)
        admin = create_db_engine(base)
        stop = threading.Event()
        answered: list[str] = []
        failed: list[int] = []
        terminated = 0

        def client_thread(n: int) -> None:
            with httpx.Client(base_url=server.base_url, timeout=60) as client:
                i = 0
                while not stop.is_set():
                    r = client.post("/v1/route", json={"text": f"{QUERIES[i % len(QUERIES)]} {n}.{i}"})
                    if r.status_code == 200:
                        answered.append(r.json()["request_id"])
                    else:
                        failed.append(r.status_code)
                    i += 1

        try:
            server.ensure_running()
            threads = [threading.Thread(target=client_thread, args=(n,)) for n in range(8)]
            for t in threads:
                t.start()
            with admin.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT")
                until = time.monotonic() + 10
                while time.monotonic() < until:
                    time.sleep(0.5)
                    terminated += len(
                        conn.execute(
                            text(
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE application_name = :n"
                            ),
                            {"n": name},
                        ).all()
                    )
            stop.set()
            for t in threads:
                t.join(timeout=60)
            deadline = time.monotonic() + 15
            while (found := logged_ids(base, answered)) != set(answered) and time.monotonic() < deadline:
                time.sleep(0.2)
            print(f"{len(answered)} answered, {len(failed)} refused, {terminated} backends terminated")
            assert terminated >= 5
            assert len(answered) > 100
            assert found == set(answered), server.log_tail()
            engine = create_db_engine(base)
            with engine.connect() as conn:
                n_rows = conn.execute(text("SELECT count(*), count(DISTINCT id) FROM requests")).one()
            engine.dispose()
            assert n_rows[0] == n_rows[1] == len(answered)
            assert server.stop() == 0
        finally:
            stop.set()
            server.stop()
            admin.dispose()
