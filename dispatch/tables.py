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

Times are timezone-aware UTC datetimes (:class:`UTCDateTime`), also on
SQLite, which stores them as naive text.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Column,
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
    # The call log: a user's sessions, newest first, as client or as therapist.
    Index(None, "client_id", "matched_at"),
    Index(None, "therapist_id", "matched_at"),
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
