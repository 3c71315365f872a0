"""Safeguarding alerts (care.tables, PROTOCOL.md §10).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "safeguarding_alerts",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("therapist_id", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        # The therapist's text, sealed (signaling.crypto): never in clear.
        sa.Column("concern", sa.LargeBinary(), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acked_by", sa.String(64), nullable=True),
        sa.Column("acked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_safeguarding_alerts"),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name="fk_safeguarding_alerts_session_id_sessions",
        ),
    )
    op.create_index(
        "ix_safeguarding_alerts_acked_at_raised_at",
        "safeguarding_alerts",
        ["acked_at", "raised_at"],
    )
    op.create_index("ix_safeguarding_alerts_session_id", "safeguarding_alerts", ["session_id"])


def downgrade() -> None:
    op.drop_table("safeguarding_alerts")
