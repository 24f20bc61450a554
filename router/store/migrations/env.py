"""Alembic environment: runs on the connection `router.store.db.migrate` hands over.

There is no alembic.ini: the router applies migrations at startup through the programmatic API,
and `alembic -x url=...` style use goes through `python -m router.store.db` instead.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from router.store.models import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is None:  # called without a connection: open one from the configured URL
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
else:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTER via table copy
    )
    with context.begin_transaction():
        context.run_migrations()
