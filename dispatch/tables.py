"""The durable store's tables (SQLAlchemy Core), one :data:`metadata` for all.

The schema itself is made by Alembic (``dispatch/migrations``); these objects
describe it to queries and must match the latest revision
(``tests/test_migrations.py`` compares them).

* ``sessions``: one row per matched request, from ``matched`` to ``ended``.
* ``chat_messages``: the chat of a session, ``body`` encrypted
  (:mod:`signaling.crypto`). ``(session_id, sender_id, client_msg_id)`` is
  unique, so a retried ``chat.send`` is stored once. ``seq`` orders the chat:
  on PostgreSQL an identity column, on SQLite (which only autoincrements an
  integer primary key) given by the insert itself
  (:mod:`signaling.records`), where the database's single writer keeps it
  unique and increasing.
* ``notes``: a therapist's notes on a session, ``body`` encrypted.
* ``ledger_accounts``, ``ledger_transactions``, ``ledger_entries``: the
  double-entry ledger of the wallet (:mod:`wallet.ledger`), money in integer
  minor units. An account's ``balance_minor`` is kept in step with its entries
  inside each transaction; a CHECK keeps every balance but the outside
  world's (``external:*``) at zero or above. ``(kind, reference)`` is unique,
  which makes a top-up, a session's charge and each step of a withdrawal
  happen once.
* ``withdrawals``: a therapist's withdrawals and their state.

Times are timezone-aware UTC datetimes (:class:`UTCDateTime`), also on
SQLite, which stores them as naive text.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.types import TypeDecorator

#: Ids: user ids are 1..64 characters (PROTOCOL.md §2); server ids are shorter.
ID_LEN: Final = 64

metadata: Final = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """``TIMESTAMP WITH TIME ZONE`` that always hands back aware UTC datetimes.

    Values going in must be timezone-aware (naive ones are refused rather than
    guessed at); they are stored in UTC. SQLite keeps no zone, so what comes
    back naive is UTC by construction.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("UTCDateTime needs a timezone-aware datetime")
        value = value.astimezone(dt.UTC)
        # SQLite would otherwise store the "+00:00" suffix in some rows and not
        # others, which breaks ordering by text; store it naive, read it as UTC.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if not isinstance(value, dt.datetime):  # pragma: no cover - drivers parse it
            raise TypeError(f"expected a datetime from the database, got {type(value)!r}")
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


#: 64-bit on PostgreSQL; plain INTEGER on SQLite (which is 64-bit anyway).
_BIGINT: Final = BigInteger().with_variant(Integer(), "sqlite")


sessions: Final = Table(
    "sessions",
    metadata,
    Column("id", String(ID_LEN), primary_key=True),
    Column("request_id", String(ID_LEN), nullable=False, unique=True),
    Column("client_id", String(ID_LEN), nullable=False),
    Column("therapist_id", String(ID_LEN), nullable=False),
    Column("client_name", Text, nullable=True),
    Column("therapist_name", Text, nullable=True),
    Column("state", String(16), nullable=False),
    Column("terms_version", Text, nullable=False),
    Column("requested_at", UTCDateTime, nullable=False),
    Column("claimed_at", UTCDateTime, nullable=False),
    Column("matched_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("end_reason", String(32), nullable=True),
    Column("duration_s", Integer, nullable=True),
    # Per-minute billing (wallet.metering, revision 0003): when the money runs
    # out, the warning a minute before, and whether the warning went out.
    Column("funds_low_at", UTCDateTime, nullable=True),
    Column("exhausted_at", UTCDateTime, nullable=True),
    Column("funds_low_sent", Boolean, nullable=False, server_default=false()),
    # The call log: a user's sessions, newest first, as client or as therapist.
    Index(None, "client_id", "matched_at"),
    Index(None, "therapist_id", "matched_at"),
    Index(None, "state", "exhausted_at"),
)

chat_messages: Final = Table(
    "chat_messages",
    metadata,
    Column("id", String(ID_LEN), primary_key=True),
    Column(
        "session_id",
        String(ID_LEN),
        ForeignKey("sessions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("sender_id", String(ID_LEN), nullable=False),
    Column("client_msg_id", String(ID_LEN), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("sent_at", UTCDateTime, nullable=False),
    Column("seq", _BIGINT, Identity(), nullable=False, unique=True),
    UniqueConstraint("session_id", "sender_id", "client_msg_id"),
    # A transcript: one session's messages in order (also the session_id index).
    Index(None, "session_id", "seq"),
)

notes: Final = Table(
    "notes",
    metadata,
    Column("id", String(ID_LEN), primary_key=True),
    Column(
        "session_id",
        String(ID_LEN),
        ForeignKey("sessions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("therapist_id", String(ID_LEN), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("saved_at", UTCDateTime, nullable=False),
    Index(None, "session_id", "saved_at"),
)


# -- the ledger (wallet.ledger) ----------------------------------------------------

#: Account ids: "therapist_withdrawing:" and a user id of up to 64 characters.
ACCOUNT_ID_LEN: Final = 100
#: Idempotency references of ledger transactions (top-up references: 1..128).
REFERENCE_LEN: Final = 128

ledger_accounts: Final = Table(
    "ledger_accounts",
    metadata,
    # "client:<id>", "therapist:<id>", "therapist_withdrawing:<id>",
    # "platform:revenue", "external:payments", "external:payouts".
    Column("id", String(ACCOUNT_ID_LEN), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("balance_minor", _BIGINT, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    CheckConstraint(
        "kind IN ('client', 'therapist', 'therapist_withdrawing', 'platform', 'external')",
        name="kind",
    ),
    # Only the outside world may be owed: every other balance stays >= 0.
    CheckConstraint("kind = 'external' OR balance_minor >= 0", name="balance_nonnegative"),
)

ledger_transactions: Final = Table(
    "ledger_transactions",
    metadata,
    Column("id", String(ID_LEN), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("reference", String(REFERENCE_LEN), nullable=False),
    Column("session_id", String(ID_LEN), nullable=True),
    # What a session charge could not take because the balance was short.
    Column("shortfall_minor", _BIGINT, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("kind", "reference"),
    CheckConstraint(
        "kind IN ('topup', 'session_charge', 'withdrawal', 'withdrawal_paid', 'refund')",
        name="kind",
    ),
)

ledger_entries: Final = Table(
    "ledger_entries",
    metadata,
    # Increasing in the order entries are written (one account's entries are
    # written under its row lock, so they number in balance order).
    Column("id", _BIGINT, Identity(), primary_key=True),
    Column(
        "transaction_id",
        String(ID_LEN),
        ForeignKey("ledger_transactions.id"),
        nullable=False,
    ),
    Column(
        "account_id",
        String(ACCOUNT_ID_LEN),
        ForeignKey("ledger_accounts.id"),
        nullable=False,
    ),
    Column("amount_minor", _BIGINT, nullable=False),
    Column("balance_after_minor", _BIGINT, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # A user's entries, newest first; a transaction's entries.
    Index(None, "account_id", "id"),
    Index(None, "transaction_id"),
)

withdrawals: Final = Table(
    "withdrawals",
    metadata,
    Column("id", String(ID_LEN), primary_key=True),
    Column("therapist_id", String(ID_LEN), nullable=False),
    Column("amount_minor", _BIGINT, nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("invoiced_at", UTCDateTime, nullable=True),
    Column("payout_date", Date, nullable=True),
    Column("paid_at", UTCDateTime, nullable=True),
    CheckConstraint("amount_minor > 0", name="amount_positive"),
    CheckConstraint("state IN ('awaiting_invoice', 'scheduled', 'paid')", name="state"),
    Index(None, "therapist_id", "created_at"),
    Index(None, "state", "created_at"),
)
