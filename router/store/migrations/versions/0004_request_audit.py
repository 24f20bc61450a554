"""Live accuracy from an unbiased sample: the router marks a random share of requests for audit.

`audit` is decided per request when it is answered (`audit_rate`), independent of any review
queue; live accuracy is estimated from the labelled audit items only. NULL for rows logged before.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("requests", sa.Column("audit", sa.Boolean(), nullable=True))
    op.create_index("ix_requests_audit", "requests", ["audit"])


def downgrade() -> None:
    op.drop_index("ix_requests_audit", table_name="requests")
    with op.batch_alter_table("requests") as batch:  # SQLite cannot drop columns in place
        batch.drop_column("audit")
