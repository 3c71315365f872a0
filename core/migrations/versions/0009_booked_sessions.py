"""Booked calls in the session records (PROTOCOL.md §8, signaling.tables).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

``booking_id`` names the booking of a booked call (null for quick connect);
such a call is never billed per minute. ``booking_settled`` is claimed by a
conditional update when the booking is told the call ended, so once across
servers (signaling.metering).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Adding nullable or defaulted columns: a plain ALTER TABLE on both
    # databases (no table copy, which the foreign keys to sessions forbid).
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("booking_id", sa.String(64), nullable=True))
        batch.add_column(
            sa.Column("booking_settled", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("booking_settled")
        batch.drop_column("booking_id")
