"""Database engines and schema migrations for the request log.

SQLite (the embedded default) runs in WAL mode so readers never block the writer and a commit
is an append, with `synchronous=NORMAL` (durable across process crashes, which is the failure
we guard against; an OS crash can lose the last commits). PostgreSQL URLs use psycopg 3.
Migrations are Alembic revisions shipped inside the package and applied at startup; on
PostgreSQL an advisory lock makes router replicas that start together migrate one at a time.

`python -m router.store.db URL` applies the migrations without starting a router.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_PG_LOCK_KEY = 0x5B0A_2D01  # any constant; shared by all replicas of this service


class StoreError(RuntimeError):
    """The store cannot be opened or migrated (bad URL, unreachable server, permissions)."""


def create_db_engine(url: str, *, connect_timeout_s: int = 5) -> Engine:
    """A SQLAlchemy engine for `url` with the settings this service depends on.

    PostgreSQL gets libpq's `connect_timeout` (unless the URL sets it): without one, connecting
    to a server that drops packets waits for the kernel's TCP timeout (minutes), longer than any
    shutdown budget."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"database_url is not a valid SQLAlchemy URL: {url!r}") from None
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "postgresql":
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        kwargs.update(pool_pre_ping=True, pool_size=4, max_overflow=4)
        if "connect_timeout" not in parsed.query:
            kwargs["connect_args"] = {"connect_timeout": connect_timeout_s}
    elif backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False}  # the writer uses worker threads
    engine = create_engine(parsed, **kwargs)
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    for pragma in (
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=NORMAL",
        "PRAGMA busy_timeout=5000",  # several router processes may share one file
        "PRAGMA foreign_keys=ON",
    ):
        cursor.execute(pragma)
    cursor.close()


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None, "no migrations shipped"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine) -> str:
    """Bring the schema to the newest revision (a no-op when it is there); returns it."""
    config = _alembic_config()
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    except Exception as err:  # driver errors name host/port/file, which is what operators need
        raise StoreError(f"cannot migrate the database: {_one_line(err)}") from err
    return head_revision()


def _one_line(err: BaseException) -> str:
    message = str(getattr(err, "orig", None) or err).strip().splitlines()
    return f"{type(err).__name__}: {message[0] if message else ''}"


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if len(sys.argv) != 2:
        sys.exit("usage: python -m router.store.db DATABASE_URL")
    engine = create_db_engine(sys.argv[1])
    print(f"schema at revision {migrate(engine)}")
    engine.dispose()
