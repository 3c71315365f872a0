"""notify's tables (SQLAlchemy Core) on the shared :data:`core.tables.metadata`.

* ``outbox``: every text and email the service decided to send, one row each,
  written in the same transaction as the decision, then taken by one sender
  at a time (:mod:`notify.outbox`). ``dedupe_key`` is unique, so a message is
  queued once however often, and by however many servers, it is decided:
  ``sms:<request id>:<therapist id>`` for a text, ``email:<kind>:<id>`` for an
  email. Neither a phone number nor an email address is stored here: the
  sender looks the recipient's up when it sends (a changed number is used,
  an erased one is not). ``provider_id`` is the provider's id (Twilio's
  ``MessageSid``), for its status callbacks.
* ``contacts``: how to reach a therapist who is not looking, and when not to
  (PROTOCOL.md §7): its phone (E.164), email, opt-in to texts, time zone and
  quiet hours, and whether its phone was refused by the provider. Private:
  shown only to that therapist and to operators, never logged.
* ``client_contacts``: a client's email address for its booking emails
  (confirmation, cancellation, reminder; PROTOCOL.md §8), set by the client
  itself (``PATCH /v1/me/contact``), null when it removed it. Private: shown
  only to that client, never logged.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import Boolean, Column, Index, Integer, String, Table, Text, false

from core.tables import ID_LEN, UTCDateTime, metadata

#: The states of a message; queued and sending are the outbox's own, the rest
#: what became of it.
STATES: Final = ("queued", "sending", "sent", "delivered", "undelivered", "failed", "dropped")

outbox: Final = Table(
    "outbox",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("channel", String(8), nullable=False),
    Column("dedupe_key", String(200), nullable=False, unique=True),
    Column("recipient_id", String(ID_LEN), nullable=False),
    Column("about_id", String(ID_LEN), nullable=True),
    Column("template", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("claimed_by", String(ID_LEN), nullable=True),
    Column("provider_id", String(64), nullable=True),
    Column("error", String(200), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index(None, "state", "next_attempt_at"),
    Index(None, "about_id"),
    Index(None, "provider_id"),
    Index(None, "recipient_id", "created_at"),
)

contacts: Final = Table(
    "contacts",
    metadata,
    Column("therapist_id", String(ID_LEN), primary_key=True),
    Column("phone", String(32), nullable=True),
    Column("email", String(254), nullable=True),
    Column("sms_opt_in", Boolean, nullable=False, server_default=false()),
    Column("timezone", String(64), nullable=False),
    Column("quiet_hours", String(11), nullable=True),
    Column("phone_failed", Boolean, nullable=False, server_default=false()),
    Column("updated_at", UTCDateTime, nullable=False),
)

client_contacts: Final = Table(
    "client_contacts",
    metadata,
    Column("client_id", String(ID_LEN), primary_key=True),
    Column("email", String(254), nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
)
