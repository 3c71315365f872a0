"""Therapists' contact details (PROTOCOL.md §7): the durable, private half of a
profile. The public half (name, bio, photo, credentials) is the pool's. And
clients' email addresses for their booking emails (:class:`ClientContacts`).

Kept in the database rather than in the pool's Redis profile so that they
outlive a Redis that keeps nothing on disk, and so that they can never leak
through :meth:`pool.model.TherapistProfile.public`. Shown only to the
therapist itself and to operators (:meth:`Contact.private`); never logged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from sqlalchemy import select, update
from sqlalchemy.engine import RowMapping

from core.db import Database
from notify.tables import client_contacts, contacts
from notify.texts import QuietHours, TextContact

#: The fields a PATCH may change here (the rest of a profile is the pool's).
FIELDS: Final = ("phone", "email", "sms_opt_in", "timezone", "quiet_hours")


@dataclass(frozen=True, slots=True)
class Contact:
    therapist_id: str
    phone: str | None = None
    email: str | None = None
    sms_opt_in: bool = False
    timezone: str = "UTC"
    quiet_hours: QuietHours | None = None
    phone_failed: bool = False

    def public(self) -> dict[str, Any]:
        """What any signed-in user sees with the profile: the time zone its
        hours and bookings are in."""
        return {"timezone": self.timezone}

    def private(self) -> dict[str, Any]:
        """Everything, for the therapist itself and operators."""
        return {
            **self.public(),
            "phone": self.phone,
            "email": self.email,
            "sms_opt_in": self.sms_opt_in,
            "quiet_hours": None if self.quiet_hours is None else str(self.quiet_hours),
        }

    def for_texts(self, last_texted_at: float | None) -> TextContact:
        return TextContact(
            therapist_id=self.therapist_id,
            phone=self.phone,
            sms_opt_in=self.sms_opt_in,
            timezone=self.timezone,
            quiet_hours=self.quiet_hours,
            last_texted_at=last_texted_at,
            phone_failed=self.phone_failed,
        )


class Contacts:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, therapist_id: str) -> Contact:
        """The therapist's contact details (the defaults when it has none)."""
        stmt = select(contacts).where(contacts.c.therapist_id == therapist_id)
        async with self.db.reading() as conn:
            row = (await conn.execute(stmt)).mappings().first()
        return _contact(therapist_id, row)

    async def update(self, therapist_id: str, changes: Mapping[str, Any], now: float) -> Contact:
        """Apply ``changes`` (already checked: keys of :data:`FIELDS`) and return
        the result. A new phone clears the provider's refusal of the old one.

        One transaction, the row read under lock (``FOR UPDATE``; SQLite's write
        lock), so two edits of different fields at once both land."""
        at = dt.datetime.fromtimestamp(now, tz=dt.UTC)
        async with self.db.writing() as conn:
            await conn.execute(
                self.db.insert_or_nothing(
                    contacts,
                    {"therapist_id": therapist_id, "timezone": "UTC", "updated_at": at},
                    ["therapist_id"],
                )
            )
            locked = (
                select(contacts).where(contacts.c.therapist_id == therapist_id).with_for_update()
            )
            current = _contact(therapist_id, (await conn.execute(locked)).mappings().first())
            after = replace(current, **dict(changes))
            if "phone" in changes and changes["phone"] != current.phone:
                after = replace(after, phone_failed=False)
            await conn.execute(
                update(contacts)
                .where(contacts.c.therapist_id == therapist_id)
                .values(
                    phone=after.phone,
                    email=after.email,
                    sms_opt_in=after.sms_opt_in,
                    timezone=after.timezone,
                    quiet_hours=None if after.quiet_hours is None else str(after.quiet_hours),
                    phone_failed=after.phone_failed,
                    updated_at=at,
                )
            )
        return after

    async def textable(self) -> list[Contact]:
        """Therapists who can take a text at all: opted in, with a phone the
        provider has not refused."""
        stmt = select(contacts).where(
            contacts.c.sms_opt_in.is_(True),
            contacts.c.phone.is_not(None),
            contacts.c.phone_failed.is_(False),
        )
        async with self.db.reading() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [_contact(row["therapist_id"], row) for row in rows]

    async def flag_phone(self, therapist_id: str, now: float) -> None:
        """The provider refused this phone: no texts until it is changed."""
        stmt = (
            update(contacts)
            .where(contacts.c.therapist_id == therapist_id)
            .values(phone_failed=True, updated_at=dt.datetime.fromtimestamp(now, tz=dt.UTC))
        )
        async with self.db.writing() as conn:
            await conn.execute(stmt)


class ClientContacts:
    """A client's email address for its booking emails (PROTOCOL.md §8:
    confirmation, cancellation, reminder), set by the client itself. Shown
    only to that client; never logged; the outbox keeps the client's id and
    the sender looks the address up when it sends."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def email(self, client_id: str) -> str | None:
        """The client's address, or None (never set, or removed)."""
        stmt = select(client_contacts.c.email).where(client_contacts.c.client_id == client_id)
        async with self.db.reading() as conn:
            value = (await conn.execute(stmt)).scalar_one_or_none()
        return None if value is None else str(value)

    async def set_email(self, client_id: str, email: str | None, now: float) -> str | None:
        """Set (already checked) or remove (None) the client's address; returns it.
        One transaction: the row made if missing, then written."""
        at = dt.datetime.fromtimestamp(now, tz=dt.UTC)
        async with self.db.writing() as conn:
            await conn.execute(
                self.db.insert_or_nothing(
                    client_contacts,
                    {"client_id": client_id, "email": email, "updated_at": at},
                    ["client_id"],
                )
            )
            await conn.execute(
                update(client_contacts)
                .where(client_contacts.c.client_id == client_id)
                .values(email=email, updated_at=at)
            )
        return email


def _contact(therapist_id: str, row: RowMapping | None) -> Contact:
    if row is None:
        return Contact(therapist_id)
    quiet = row["quiet_hours"]
    return Contact(
        therapist_id=therapist_id,
        phone=row["phone"],
        email=row["email"],
        sms_opt_in=bool(row["sms_opt_in"]),
        timezone=row["timezone"],
        quiet_hours=None if quiet is None else QuietHours.parse(quiet),
        phone_failed=bool(row["phone_failed"]),
    )
