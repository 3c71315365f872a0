"""notify.contacts on SQLite and PostgreSQL: defaults, partial updates, concurrent
edits of different fields, and the provider's refusal of a phone."""

from __future__ import annotations

import asyncio

from core.db import Database
from notify.contacts import Contact, Contacts
from notify.texts import QuietHours

T0 = 1_780_000_000.0


async def test_defaults_then_partial_updates(db: Database) -> None:
    contacts = Contacts(db)
    assert await contacts.get("t1") == Contact("t1")
    quiet = QuietHours.parse("22:00-07:00")
    after = await contacts.update("t1", {"phone": "+447700900123", "quiet_hours": quiet}, T0)
    assert await contacts.get("t1") == after
    assert (after.phone, after.quiet_hours, after.timezone) == ("+447700900123", quiet, "UTC")
    after = await contacts.update("t1", {"email": "t1@example.com"}, T0 + 1)
    assert after.phone == "+447700900123" and after.email == "t1@example.com"


async def test_concurrent_edits_of_different_fields_both_land(db: Database) -> None:
    contacts = Contacts(db)
    await asyncio.gather(
        *(
            contacts.update("t2", change, T0)
            for change in (
                {"phone": "+447700900123"},
                {"email": "t2@example.com"},
                {"sms_opt_in": True},
                {"timezone": "Asia/Tokyo"},
            )
        )
    )
    got = await contacts.get("t2")
    assert (got.phone, got.email, got.sms_opt_in, got.timezone) == (
        "+447700900123",
        "t2@example.com",
        True,
        "Asia/Tokyo",
    )


async def test_a_refused_phone_is_flagged_until_it_changes(db: Database) -> None:
    contacts = Contacts(db)
    await contacts.update("t3", {"phone": "+447700900123"}, T0)
    await contacts.flag_phone("t3", T0 + 1)
    assert (await contacts.get("t3")).phone_failed is True
    await contacts.update("t3", {"email": "t3@example.com"}, T0 + 2)  # not the phone
    assert (await contacts.get("t3")).phone_failed is True
    await contacts.update("t3", {"phone": "+14155552671"}, T0 + 3)
    assert (await contacts.get("t3")).phone_failed is False
