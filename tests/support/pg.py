"""A throwaway PostgreSQL schema for the store tests."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest

PG_ADMIN_URLS = [
    os.environ.get("SWITCHBOARD_TEST_PG_URL", "postgresql://root@127.0.0.1:5432/test"),
    "postgresql://postgres@127.0.0.1:5432/test",
]


@contextlib.contextmanager
def pg_schema() -> Iterator[str]:
    """A database URL on a fresh PostgreSQL schema (dropped afterwards); skips without a server."""
    from sqlalchemy import text

    from router.store import create_db_engine

    for admin_url in PG_ADMIN_URLS:
        admin = create_db_engine(admin_url)
        try:
            with admin.begin() as conn:
                schema = f"sb_test_{uuid.uuid4().hex[:10]}"
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            break
        except Exception:
            admin.dispose()
    else:
        pytest.skip("PostgreSQL at 127.0.0.1:5432 (database test) is not reachable")
    try:
        yield f"{admin_url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
