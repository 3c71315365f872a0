"""Clients' card top-ups (wallet.tables.checkouts, PROTOCOL.md §9).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

One row per Stripe Checkout Session (or ``--dev`` test checkout); the row
turns ``paid`` in the same transaction as the ledger's top-up whose reference
is its id.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, *, nullable: bool) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "checkouts",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column(
            "amount_minor", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        _ts("created_at", nullable=False),
        _ts("paid_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_checkouts"),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_checkouts_amount_positive")),
        sa.CheckConstraint("method IN ('card', 'test')", name=op.f("ck_checkouts_method")),
        sa.CheckConstraint("state IN ('open', 'paid', 'expired')", name=op.f("ck_checkouts_state")),
    )
    op.create_index("ix_checkouts_client_id_created_at", "checkouts", ["client_id", "created_at"])


def downgrade() -> None:
    op.drop_table("checkouts")
