"""Cascade mode: record each request's escalation outcome and the LLM asked.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("requests", sa.Column("escalation", sa.String(16), nullable=True))
    op.add_column("requests", sa.Column("escalation_model", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:  # SQLite cannot drop columns in place
        batch.drop_column("escalation_model")
        batch.drop_column("escalation")
