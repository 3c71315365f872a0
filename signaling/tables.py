"""Signaling's tables (SQLAlchemy Core) on the shared :data:`core.tables.metadata`.

* ``sessions``: one row per matched request or opened booked call, from
  ``matched`` to ``ended``, with its funds plan (:mod:`signaling.metering`).
* ``chat_messages``: the chat of a session, ``body`` encrypted
  (:mod:`signaling.crypto`). ``(session_id, sender_id, client_msg_id)`` is
  unique, so a retried ``chat.send`` is stored once. ``seq`` orders the chat:
  on PostgreSQL an identity column, on SQLite (which only autoincrements an
  integer primary key) given by the insert itself
  (:mod:`signaling.records`), where the database's single writer keeps it
  unique and increasing.
* ``notes``: a therapist's notes on a session, ``body`` encrypted.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

from core.tables import BIGINT, ID_LEN, UTCDateTime, metadata

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
    # Per-minute billing (signaling.metering, revision 0003): when the money runs
    # out, the warning a minute before, and whether the warning went out.
    Column("funds_low_at", UTCDateTime, nullable=True),
    Column("exhausted_at", UTCDateTime, nullable=True),
    Column("funds_low_sent", Boolean, nullable=False, server_default=false()),
    # A booked call (PROTOCOL.md §8, revision 0009): its booking (null for quick
    # connect; its request_id is the booking id then), never billed per minute;
    # ``booking_settled`` is claimed once by a conditional update when the
    # booking is told the call ended (signaling.metering).
    Column("booking_id", String(ID_LEN), nullable=True),
    Column("booking_settled", Boolean, nullable=False, server_default=false()),
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
    Column("seq", BIGINT, Identity(), nullable=False, unique=True),
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
