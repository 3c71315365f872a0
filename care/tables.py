"""Care records' tables (SQLAlchemy Core) on the shared :data:`core.tables.metadata`
(PROTOCOL.md §10).

Safeguarding (made by migration ``0012``):

* ``safeguarding_alerts``: one row per concern a therapist raised about a
  session. ``concern`` is the therapist's text sealed by
  :class:`signaling.crypto.Cipher` (the database never holds it in clear);
  ``acked_by``/``acked_at`` are set once, by the first operator who
  acknowledges it (both null while it is open).

Forms, consent, data keys, audit, erasure and referral (made by migration
``0013``):

* ``data_keys``: one Fernet key per client (:mod:`care.datakeys`), itself
  sealed by the service's :class:`signaling.crypto.Cipher`. Form answers are
  sealed by the client's own key: erasing the client destroys the row, and
  every copy of those answers (backups, free pages) becomes unreadable
  (crypto-shredding).
* ``form_answers``: a client's latest answers to one form (the key is
  ``(client_id, form)``), the form's ``version`` they were given against,
  ``answers`` a JSON object sealed by the client's data key.
* ``consents``: every consent given, kept: ``kind`` ``consent`` (the consent
  form, at its ``version``) or ``guardian`` (a guardian's agreement for a
  minor's request, ``about_id`` the request), with when.
* ``audit_log``: who (``actor_id``, ``actor_role``) read which record
  (``record``: ``notes``, ``transcript``, ``forms``, ``export``, ``erase``,
  ``safeguarding``) about whom (``subject_id``, a client), of what
  (``about_id``: a session id or a form name), when. Never the content.
* ``erasures``: one row per erased client: who erased it, when, and what
  was erased (counts, as JSON).
* ``referral_codes``: each therapist's code (unique). ``referrals``: a
  client linked to the therapist whose code it used, once.

Feedback (made by migration ``0011``):

* ``feedback``: a client's rating (1..5) of a session and an optional
  comment, once per session (``session_id`` is the key). ``comment`` is
  sealed by :class:`signaling.crypto.Cipher` like a concern (null: none).
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    Column,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from core.tables import BIGINT, ID_LEN, UTCDateTime, metadata

__all__ = [
    "audit_log",
    "consents",
    "data_keys",
    "erasures",
    "feedback",
    "form_answers",
    "referral_codes",
    "referrals",
    "safeguarding_alerts",
]

#: The longest form name and consent kind.
NAME_LEN: Final = 32
#: A referral code's length.
CODE_LEN: Final = 16

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

# -- forms and consent ---------------------------------------------------------
data_keys: Final = Table(
    "data_keys",
    metadata,
    Column("user_id", String(ID_LEN), primary_key=True),
    Column("sealed_key", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

form_answers: Final = Table(
    "form_answers",
    metadata,
    Column("client_id", String(ID_LEN), nullable=False),
    Column("form", String(NAME_LEN), nullable=False),
    Column("version", Integer, nullable=False),
    Column("answers", LargeBinary, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("client_id", "form"),
)

consents: Final = Table(
    "consents",
    metadata,
    Column("id", BIGINT, Identity(), primary_key=True),
    Column("client_id", String(ID_LEN), nullable=False),
    Column("kind", String(NAME_LEN), nullable=False),
    Column("version", Integer, nullable=False),
    Column("about_id", String(ID_LEN), nullable=True),
    Column("given_at", UTCDateTime, nullable=False),
    Index(None, "client_id", "given_at"),
    Index(None, "about_id"),
)
# -- end of forms and consent --------------------------------------------------

# -- audit and erasure ---------------------------------------------------------
audit_log: Final = Table(
    "audit_log",
    metadata,
    Column("id", BIGINT, Identity(), primary_key=True),
    Column("actor_id", String(ID_LEN), nullable=False),
    Column("actor_role", String(16), nullable=False),
    Column("record", String(NAME_LEN), nullable=False),
    Column("subject_id", String(ID_LEN), nullable=False),
    Column("about_id", String(ID_LEN), nullable=True),
    Column("at", UTCDateTime, nullable=False),
    # One subject's trail, oldest first.
    Index(None, "subject_id", "id"),
)

erasures: Final = Table(
    "erasures",
    metadata,
    Column("user_id", String(ID_LEN), primary_key=True),
    Column("erased_by", String(ID_LEN), nullable=False),
    Column("erased_at", UTCDateTime, nullable=False),
    Column("summary", Text, nullable=False),
)
# -- end of audit and erasure --------------------------------------------------

# -- referral ------------------------------------------------------------------
referral_codes: Final = Table(
    "referral_codes",
    metadata,
    Column("therapist_id", String(ID_LEN), primary_key=True),
    Column("code", String(CODE_LEN), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
)

referrals: Final = Table(
    "referrals",
    metadata,
    Column("client_id", String(ID_LEN), primary_key=True),
    Column("therapist_id", String(ID_LEN), nullable=False),
    Column("linked_at", UTCDateTime, nullable=False),
    Index(None, "therapist_id"),
)
# -- end of referral -----------------------------------------------------------
