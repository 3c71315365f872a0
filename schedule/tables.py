"""Scheduled care's tables (SQLAlchemy Core) on the shared :data:`core.tables.metadata`
(PROTOCOL.md §8; made by migration ``0008``).

* ``availability``: one row per therapist: its time zone and its weekly
  windows and date overrides as JSON text (:mod:`schedule.model` reads and
  writes them).
* ``bookings``: intro calls and sessions. ``block_end`` is the end plus the
  buffer after it (the setting when it was booked): a scheduled booking keeps
  ``[start_at, block_end)`` of its therapist's time to itself. ``policy`` is
  the cancellation policy of the moment it was booked (JSON text).

Two guarantees live in the database itself, so that they hold across servers
whatever races:

* capacity: no two ``scheduled`` bookings of one therapist overlap. On
  PostgreSQL the exclusion constraint ``ex_bookings_no_overlap`` (``EXCLUDE
  USING gist (therapist_id WITH =, tstzrange(start_at, block_end, '[)') WITH
  &&) WHERE (state = 'scheduled')``, with the ``btree_gist`` extension); on
  SQLite, where every write is serialised (``BEGIN IMMEDIATE``), the store
  checks before it inserts and the trigger ``bookings_no_overlap`` refuses an
  overlapping insert behind it. Neither is described here (the migration
  makes them): they are not portable, and Alembic compares neither.
* the free intro once per client and therapist: the partial unique index
  ``uq_bookings_intro_once`` over the intros that count (scheduled or
  taken place, late cancelled, missed).

``(created_by, idempotency_key)`` is unique: the key is stored on the first
booking of what one ``POST /v1/bookings`` made (the others have ``NULL``).
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    CheckConstraint,
    Column,
    Index,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from core.tables import BIGINT, ID_LEN, UTCDateTime, metadata

__all__ = [
    "COUNTED_INTRO_STATES",
    "EXCLUSION_NAME",
    "INTRO_ONCE_NAME",
    "SQLITE_TRIGGER_NAME",
    "availability",
    "bookings",
]

#: The states of an intro that uses up the client's free intro with that therapist.
COUNTED_INTRO_STATES: Final = ("scheduled", "occurred", "late_cancelled", "no_show")
#: The database objects that keep the guarantees (module docstring).
EXCLUSION_NAME: Final = "ex_bookings_no_overlap"
INTRO_ONCE_NAME: Final = "uq_bookings_intro_once"
SQLITE_TRIGGER_NAME: Final = "bookings_no_overlap"

#: Idempotency keys (the ``Idempotency-Key`` header): 1..128 characters.
IDEMPOTENCY_KEY_LEN: Final = 128

_INTRO_WHERE: Final = text(
    "type = 'intro' AND state IN ('scheduled', 'occurred', 'late_cancelled', 'no_show')"
)

availability: Final = Table(
    "availability",
    metadata,
    Column("therapist_id", String(ID_LEN), primary_key=True),
    Column("timezone", String(64), nullable=False),
    # JSON text: the weekly windows and the overrides as PROTOCOL.md §8 spells them.
    Column("weekly", Text, nullable=False),
    Column("overrides", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

bookings: Final = Table(
    "bookings",
    metadata,
    Column("id", String(ID_LEN), primary_key=True),
    Column("therapist_id", String(ID_LEN), nullable=False),
    Column("client_id", String(ID_LEN), nullable=False),
    Column("type", String(16), nullable=False),
    Column("start_at", UTCDateTime, nullable=False),
    Column("end_at", UTCDateTime, nullable=False),
    # end_at + the buffer: the end of the time the booking keeps.
    Column("block_end", UTCDateTime, nullable=False),
    Column("state", String(24), nullable=False),
    Column("price_minor", BIGINT, nullable=False),
    # What its outcome charged: the price, a fee, or 0.
    Column("fee_minor", BIGINT, nullable=False),
    Column("series_id", String(ID_LEN), nullable=True),
    Column("created_by", String(ID_LEN), nullable=False),
    Column("created_by_role", String(16), nullable=False),
    Column("cancelled_by", String(ID_LEN), nullable=True),
    Column("session_id", String(ID_LEN), nullable=True),
    # JSON text: cancel_window_h, late_fee_pct, late_fee_therapist_pct.
    Column("policy", Text, nullable=False),
    Column("idempotency_key", String(IDEMPOTENCY_KEY_LEN), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("outcome_at", UTCDateTime, nullable=True),
    Column("reminded_at", UTCDateTime, nullable=True),
    CheckConstraint("type IN ('intro', 'session')", name="type"),
    CheckConstraint(
        "state IN ('scheduled', 'occurred', 'cancelled', 'late_cancelled', 'no_show', "
        "'therapist_cancelled')",
        name="state",
    ),
    CheckConstraint("end_at > start_at AND block_end >= end_at", name="times"),
    CheckConstraint(
        "price_minor >= 0 AND fee_minor >= 0 AND fee_minor <= price_minor", name="money"
    ),
    CheckConstraint(
        "created_by_role IN ('client', 'therapist', 'operator')", name="created_by_role"
    ),
    UniqueConstraint("created_by", "idempotency_key"),
    # A therapist's and a client's calendars; the loops' scans by time.
    Index(None, "therapist_id", "start_at"),
    Index(None, "client_id", "start_at"),
    Index(None, "state", "start_at"),
    Index(None, "series_id"),
    Index(
        INTRO_ONCE_NAME,
        "client_id",
        "therapist_id",
        unique=True,
        postgresql_where=_INTRO_WHERE,
        sqlite_where=_INTRO_WHERE,
    ),
)
