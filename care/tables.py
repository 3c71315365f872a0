"""Care records' tables (SQLAlchemy Core) on the shared :data:`core.tables.metadata`
(PROTOCOL.md §10).

Safeguarding (made by migration ``0012``):

* ``safeguarding_alerts``: one row per concern a therapist raised about a
  session. ``concern`` is the therapist's text sealed by
  :class:`signaling.crypto.Cipher` (the database never holds it in clear);
  ``acked_by``/``acked_at`` are set once, by the first operator who
  acknowledges it (both null while it is open).

Feedback (made by migration ``0011``):

* ``feedback``: a client's rating (1..5) of a session and an optional
  comment, once per session (``session_id`` is the key). ``comment`` is
  sealed by :class:`signaling.crypto.Cipher` like a concern (null: none).
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import Column, ForeignKey, Index, Integer, LargeBinary, String, Table

from core.tables import ID_LEN, UTCDateTime, metadata

__all__ = ["feedback", "safeguarding_alerts"]

# -- safeguarding (helper S) ---------------------------------------------------
safeguarding_alerts: Final = Table(
    "safeguarding_alerts",
    metadata,
    Column("id", String(ID_LEN), primary_key=True),
    Column("session_id", String(ID_LEN), ForeignKey("sessions.id"), nullable=False),
    Column("therapist_id", String(ID_LEN), nullable=False),
    Column("client_id", String(ID_LEN), nullable=False),
    Column("concern", LargeBinary, nullable=False),
    Column("raised_at", UTCDateTime, nullable=False),
    Column("acked_by", String(ID_LEN), nullable=True),
    Column("acked_at", UTCDateTime, nullable=True),
    # The operators' list: open ones first, newest first within each.
    Index(None, "acked_at", "raised_at"),
    Index(None, "session_id"),
)
# -- end of safeguarding -------------------------------------------------------

# -- feedback (helper F) -------------------------------------------------------
feedback: Final = Table(
    "feedback",
    metadata,
    Column(
        "session_id",
        String(ID_LEN),
        ForeignKey("sessions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("therapist_id", String(ID_LEN), nullable=False),
    Column("client_id", String(ID_LEN), nullable=False),
    Column("rating", Integer, nullable=False),
    Column("comment", LargeBinary, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    # A therapist's feedback, newest first.
    Index(None, "therapist_id", "created_at"),
)
# -- end of feedback -----------------------------------------------------------
