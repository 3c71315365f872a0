"""The wallet's double-entry ledger and therapists' withdrawals.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02

Money is an integer count of minor units (BIGINT). Every account but the
outside world's (``external:*``) keeps a balance >= 0 (a CHECK, behind the
row locks of ``wallet.ledger``); ``(kind, reference)`` makes each movement
happen once.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, *, nullable: bool) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _bigint() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "ledger_accounts",
        sa.Column("id", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("balance_minor", _bigint(), nullable=False),
        _ts("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_accounts"),
        sa.CheckConstraint(
            "kind IN ('client', 'therapist', 'therapist_withdrawing', 'platform', 'external')",
            name=op.f("ck_ledger_accounts_kind"),
        ),
        sa.CheckConstraint(
            "kind = 'external' OR balance_minor >= 0",
            name=op.f("ck_ledger_accounts_balance_nonnegative"),
        ),
    )

    op.create_table(
        "ledger_transactions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=True),
        sa.Column("shortfall_minor", _bigint(), nullable=False),
        _ts("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_transactions"),
        sa.UniqueConstraint("kind", "reference", name="uq_ledger_transactions_kind_reference"),
        sa.CheckConstraint(
            "kind IN ('topup', 'session_charge', 'withdrawal', 'withdrawal_paid', 'refund')",
            name=op.f("ck_ledger_transactions_kind"),
        ),
    )

    op.create_table(
        "ledger_entries",
        # PostgreSQL numbers the rows itself; on SQLite an INTEGER primary key
        # is the rowid, which numbers them too.
        sa.Column("id", _bigint(), sa.Identity(), nullable=False),
        sa.Column("transaction_id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(100), nullable=False),
        sa.Column("amount_minor", _bigint(), nullable=False),
        sa.Column("balance_after_minor", _bigint(), nullable=False),
        _ts("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_entries"),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
            name="fk_ledger_entries_transaction_id_ledger_transactions",
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["ledger_accounts.id"],
            name="fk_ledger_entries_account_id_ledger_accounts",
        ),
    )
    op.create_index("ix_ledger_entries_account_id_id", "ledger_entries", ["account_id", "id"])
    op.create_index("ix_ledger_entries_transaction_id", "ledger_entries", ["transaction_id"])

    op.create_table(
        "withdrawals",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("therapist_id", sa.String(64), nullable=False),
        sa.Column("amount_minor", _bigint(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        _ts("created_at", nullable=False),
        _ts("invoiced_at", nullable=True),
        sa.Column("payout_date", sa.Date(), nullable=True),
        _ts("paid_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_withdrawals"),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_withdrawals_amount_positive")),
        sa.CheckConstraint(
            "state IN ('awaiting_invoice', 'scheduled', 'paid')", name=op.f("ck_withdrawals_state")
        ),
    )
    op.create_index(
        "ix_withdrawals_therapist_id_created_at", "withdrawals", ["therapist_id", "created_at"]
    )
    op.create_index("ix_withdrawals_state_created_at", "withdrawals", ["state", "created_at"])


def downgrade() -> None:
    op.drop_table("withdrawals")
    op.drop_table("ledger_entries")
    op.drop_table("ledger_transactions")
    op.drop_table("ledger_accounts")
