"""A live session's funds plan, for per-minute billing (signaling.metering).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

``exhausted_at`` is when the client's balance runs out and the session ends;
``funds_low_at`` one minute before, when both sides are warned once
(``funds_low_sent`` is claimed by a conditional update, so once across servers).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("funds_low_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("exhausted_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("funds_low_sent", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_index("ix_sessions_state_exhausted_at", "sessions", ["state", "exhausted_at"])


def downgrade() -> None:
    op.drop_index("ix_sessions_state_exhausted_at", table_name="sessions")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("funds_low_sent")
        batch.drop_column("exhausted_at")
        batch.drop_column("funds_low_at")
