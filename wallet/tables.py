"""The wallet's tables (SQLAlchemy Core) on the shared :data:`core.tables.metadata`.

* ``ledger_accounts``, ``ledger_transactions``, ``ledger_entries``: the
  double-entry ledger (:mod:`wallet.ledger`), money in integer minor units. An
  account's ``balance_minor`` is kept in step with its entries inside each
  transaction; a CHECK keeps every balance but the outside world's
  (``external:*``) at zero or above. ``(kind, reference)`` is unique, which
  makes a top-up, a session's charge, a booking's charge or cancellation fee
  and each step of a withdrawal happen once.
* ``withdrawals``: a therapist's withdrawals and their state.
* ``wallet_holds``: money kept in a client's wallet for a booking
  (PROTOCOL.md §8, :mod:`wallet.holds`): one row per booking (its id the
  booking's), ``held`` -> ``charged`` (a ``booking_charge`` or
  ``cancellation_fee`` took ``charged_minor`` of it, the rest went back) or
  ``released`` (all of it went back). Not a ledger movement: the money stays
  in ``balance_minor`` until it is charged.
* ``checkouts``: clients' card top-ups (PROTOCOL.md §9, :mod:`wallet.checkouts`):
  one row per Stripe Checkout Session (``cs_...``) or test checkout
  (``chk_...``), ``open`` -> ``paid`` (in the same transaction as the ledger's
  top-up, whose reference is the checkout's id) or ``expired``.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Identity,
    Index,
    String,
    Table,
    UniqueConstraint,
)

from core.tables import BIGINT, ID_LEN, UTCDateTime, metadata

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
    Column("balance_minor", BIGINT, nullable=False),
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
    Column("shortfall_minor", BIGINT, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("kind", "reference"),
    CheckConstraint(
        "kind IN ('topup', 'session_charge', 'withdrawal', 'withdrawal_paid', 'refund', "
        "'booking_charge', 'cancellation_fee')",
        name="kind",
    ),
)

ledger_entries: Final = Table(
    "ledger_entries",
    metadata,
    # Increasing in the order entries are written (one account's entries are
    # written under its row lock, so they number in balance order).
    Column("id", BIGINT, Identity(), primary_key=True),
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
    Column("amount_minor", BIGINT, nullable=False),
    Column("balance_after_minor", BIGINT, nullable=False),
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
    Column("amount_minor", BIGINT, nullable=False),
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

# -- holds for bookings (wallet.holds) ---------------------------------------------

HOLD_HELD: Final = "held"
HOLD_CHARGED: Final = "charged"
HOLD_RELEASED: Final = "released"

wallet_holds: Final = Table(
    "wallet_holds",
    metadata,
    # The booking's id: one hold per booking.
    Column("id", String(ID_LEN), primary_key=True),
    Column("client_id", String(ID_LEN), nullable=False),
    Column("amount_minor", BIGINT, nullable=False),
    Column("state", String(16), nullable=False),
    # What the settlement charged (0 while held and when released).
    Column("charged_minor", BIGINT, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("settled_at", UTCDateTime, nullable=True),
    CheckConstraint("amount_minor > 0", name="amount_positive"),
    CheckConstraint("state IN ('held', 'charged', 'released')", name="state"),
    CheckConstraint("charged_minor >= 0 AND charged_minor <= amount_minor", name="charged"),
    # A client's active holds, summed under its account's lock.
    Index(None, "client_id", "state"),
)

# -- paying in (wallet.checkouts) --------------------------------------------------

checkouts: Final = Table(
    "checkouts",
    metadata,
    # Stripe's Checkout Session id, or chk_... for a test payment; it is also
    # the reference of the top-up it paid for (hence the same length).
    Column("id", String(REFERENCE_LEN), primary_key=True),
    Column("client_id", String(ID_LEN), nullable=False),
    Column("amount_minor", BIGINT, nullable=False),
    Column("currency", String(3), nullable=False),
    # "card" (Stripe) or "test" (the --dev page): the receipt's method.
    Column("method", String(8), nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("paid_at", UTCDateTime, nullable=True),
    CheckConstraint("amount_minor > 0", name="amount_positive"),
    CheckConstraint("method IN ('card', 'test')", name="method"),
    CheckConstraint("state IN ('open', 'paid', 'expired')", name="state"),
    Index(None, "client_id", "created_at"),
)
