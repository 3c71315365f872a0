"""Scheduled care (PROTOCOL.md §8): availability, bookings, and holds in the wallet.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

* ``availability`` and ``bookings`` (schedule.tables). No two scheduled
  bookings of one therapist overlap (``[start_at, block_end)``): on PostgreSQL
  an exclusion constraint, which needs the ``btree_gist`` extension (trusted
  since PostgreSQL 13: the migrating role needs CREATE on the database, or an
  administrator creates the extension first); on SQLite a trigger behind the
  store's serialised check. The free intro counts once per client and
  therapist (a partial unique index).
* ``wallet_holds`` (wallet.tables): money kept in a client's wallet for a
  booking.
* ``ledger_transactions`` takes the kinds ``booking_charge`` and
  ``cancellation_fee``. Its CHECK is widened in place: on SQLite by rewriting
  the table's definition (the documented way to loosen a constraint without
  touching the data; copying the table is impossible while ``ledger_entries``
  refers to it with foreign keys enforced).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_KINDS = "'topup', 'session_charge', 'withdrawal', 'withdrawal_paid', 'refund'"
_NEW_KINDS = _OLD_KINDS + ", 'booking_charge', 'cancellation_fee'"
_INTRO_WHERE = "type = 'intro' AND state IN ('scheduled', 'occurred', 'late_cancelled', 'no_show')"


def _ts(name: str, *, nullable: bool) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _bigint() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")

    op.create_table(
        "availability",
        sa.Column("therapist_id", sa.String(64), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("weekly", sa.Text(), nullable=False),
        sa.Column("overrides", sa.Text(), nullable=False),
        _ts("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("therapist_id", name="pk_availability"),
    )

    op.create_table(
        "bookings",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("therapist_id", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        _ts("start_at", nullable=False),
        _ts("end_at", nullable=False),
        _ts("block_end", nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("price_minor", _bigint(), nullable=False),
        sa.Column("fee_minor", _bigint(), nullable=False),
        sa.Column("series_id", sa.String(64), nullable=True),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_by_role", sa.String(16), nullable=False),
        sa.Column("cancelled_by", sa.String(64), nullable=True),
        sa.Column("session_id", sa.String(64), nullable=True),
        sa.Column("policy", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.String(128), nullable=True),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        _ts("outcome_at", nullable=True),
        _ts("reminded_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_bookings"),
        sa.UniqueConstraint(
            "created_by", "idempotency_key", name="uq_bookings_created_by_idempotency_key"
        ),
        sa.CheckConstraint("type IN ('intro', 'session')", name=op.f("ck_bookings_type")),
        sa.CheckConstraint(
            "state IN ('scheduled', 'occurred', 'cancelled', 'late_cancelled', 'no_show', "
            "'therapist_cancelled')",
            name=op.f("ck_bookings_state"),
        ),
        sa.CheckConstraint(
            "end_at > start_at AND block_end >= end_at", name=op.f("ck_bookings_times")
        ),
        sa.CheckConstraint(
            "price_minor >= 0 AND fee_minor >= 0 AND fee_minor <= price_minor",
            name=op.f("ck_bookings_money"),
        ),
        sa.CheckConstraint(
            "created_by_role IN ('client', 'therapist', 'operator')",
            name=op.f("ck_bookings_created_by_role"),
        ),
    )
    op.create_index("ix_bookings_therapist_id_start_at", "bookings", ["therapist_id", "start_at"])
    op.create_index("ix_bookings_client_id_start_at", "bookings", ["client_id", "start_at"])
    op.create_index("ix_bookings_state_start_at", "bookings", ["state", "start_at"])
    op.create_index("ix_bookings_series_id", "bookings", ["series_id"])
    op.create_index(
        "uq_bookings_intro_once",
        "bookings",
        ["client_id", "therapist_id"],
        unique=True,
        postgresql_where=sa.text(_INTRO_WHERE),
        sqlite_where=sa.text(_INTRO_WHERE),
    )
    if postgresql:
        op.execute(
            "ALTER TABLE bookings ADD CONSTRAINT ex_bookings_no_overlap EXCLUDE USING gist "
            "(therapist_id WITH =, tstzrange(start_at, block_end, '[)') WITH &&) "
            "WHERE (state = 'scheduled')"
        )
    else:
        # Times are stored as text of one fixed width (UTCDateTime): they
        # compare in time order.
        op.execute(
            "CREATE TRIGGER bookings_no_overlap BEFORE INSERT ON bookings "
            "WHEN NEW.state = 'scheduled' BEGIN "
            "SELECT RAISE(ABORT, 'slot_taken: bookings_no_overlap') WHERE EXISTS ("
            "SELECT 1 FROM bookings WHERE therapist_id = NEW.therapist_id "
            "AND state = 'scheduled' AND start_at < NEW.block_end "
            "AND NEW.start_at < block_end); END"
        )

    op.create_table(
        "wallet_holds",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("amount_minor", _bigint(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("charged_minor", _bigint(), nullable=False),
        _ts("created_at", nullable=False),
        _ts("settled_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_wallet_holds"),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_wallet_holds_amount_positive")),
        sa.CheckConstraint(
            "state IN ('held', 'charged', 'released')", name=op.f("ck_wallet_holds_state")
        ),
        sa.CheckConstraint(
            "charged_minor >= 0 AND charged_minor <= amount_minor",
            name=op.f("ck_wallet_holds_charged"),
        ),
    )
    op.create_index("ix_wallet_holds_client_id_state", "wallet_holds", ["client_id", "state"])

    _ledger_kinds(_OLD_KINDS, _NEW_KINDS)


def downgrade() -> None:
    bind = op.get_bind()
    used = bind.execute(
        sa.text(
            "SELECT count(*) FROM ledger_transactions "
            "WHERE kind IN ('booking_charge', 'cancellation_fee')"
        )
    ).scalar()
    if used:
        raise RuntimeError(
            "cannot downgrade below 0008: the ledger holds booking charges or cancellation fees"
        )
    _ledger_kinds(_NEW_KINDS, _OLD_KINDS)
    op.drop_table("wallet_holds")
    if bind.dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS bookings_no_overlap")
    op.drop_table("bookings")
    op.drop_table("availability")
    # btree_gist stays: other schemas of the database may use it.


def _ledger_kinds(old: str, new: str) -> None:
    """Make ``ck_ledger_transactions_kind`` allow ``new`` instead of ``old``."""
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        name = op.f("ck_ledger_transactions_kind")
        op.drop_constraint(name, "ledger_transactions", type_="check")
        op.create_check_constraint(name, "ledger_transactions", f"kind IN ({new})")
        return
    # SQLite (https://sqlite.org/lang_altertable.html#otheralter): rewrite the
    # stored CREATE TABLE and bump the schema version so that every connection
    # reads it again. Only the CHECK's list changes; the rows and their format
    # stay as they are.
    sql = bind.execute(
        sa.text(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'ledger_transactions'"
        )
    ).scalar_one()
    before = f"kind IN ({old}))"
    if sql.count(before) != 1:
        raise RuntimeError("ledger_transactions' kind CHECK is not the one expected")
    version = bind.execute(sa.text("PRAGMA schema_version")).scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        bind.execute(
            sa.text(
                "UPDATE sqlite_master SET sql = :sql "
                "WHERE type = 'table' AND name = 'ledger_transactions'"
            ),
            {"sql": sql.replace(before, f"kind IN ({new}))")},
        )
        bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema = OFF")
