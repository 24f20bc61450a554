"""Shadow answers: what a challenger in shadow (or the champion beside a canary) answered.

One row per request the second model classified after the answer was sent, keyed by the request:
its version, intent, confidence and whether its answer would have fallen back. The request row
keeps the answer the customer got; this row sits beside it (`router.store.queries`, strategy
`shadow_disagreement`; `router.store.evidence`, the paired evidence of a rollout).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shadow_answers",
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.Column("intent", sa.String(200), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("fallback", sa.Boolean(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"], ["requests.id"], name="fk_shadow_answers_request_id_requests", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("request_id", name="pk_shadow_answers"),
    )
    op.create_index("ix_shadow_answers_created_at", "shadow_answers", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_shadow_answers_created_at", table_name="shadow_answers")
    op.drop_table("shadow_answers")
