"""Review queue: keep what uncertainty sampling needs with each request.

`top2_confidence` is the second-highest probability (the margin is `confidence` minus it) and
`alternatives` the top-k `[{"intent", "probability"}]`. Both are NULL for rows logged before.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("requests", sa.Column("top2_confidence", sa.Float(), nullable=True))
    op.add_column("requests", sa.Column("alternatives", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:  # SQLite cannot drop columns in place
        batch.drop_column("alternatives")
        batch.drop_column("top2_confidence")
