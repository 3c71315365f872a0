"""A client's email for its booking emails: ``GET``/``PATCH /v1/me/contact``
through the whole app on SQLite and PostgreSQL (who may, what is refused,
nothing logged), and the client's own confirmation, cancellation and
reminder: queued once each beside the therapist's, none without an address,
and received over a real SMTP server on loopback with the ``.ics``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage

import icalendar
import pytest
import pytest_asyncio
from integration.harness import free_port
from test_booking_http import C1, C2, OP, T1, TUE_10, World, auth, fill_forms, serve, z
from test_notify_email import Inbox, smtp_server

from notify.email import render
from notify.invites import CLIENT_TEMPLATES

ADDRESS = "carol.client@example.org"
THERAPIST_ADDRESS = "alice.therapist@example.org"
MAIL = {
    "smtp_url": "smtp://127.0.0.1:9",  # nothing sends in the queueing tests
    "mail_from": "care@example.com",
    "public_url": "https://care.example.com",
}


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    box = Inbox()
    with smtp_server(box, free_port()) as url:
        box.url = url
        yield box


@pytest_asyncio.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    async with serve(database_url) as w:
        yield w


@contextlib.asynccontextmanager
async def mailing(database_url: str, smtp_url: str = MAIL["smtp_url"]) -> AsyncIterator[World]:
    """The app with emails on, its background loops stopped: the test sends
    and reminds when it says (with its own clock), never behind its back."""
    async with serve(database_url, **{**MAIL, "smtp_url": smtp_url}) as w:
        await w.ctx.loops.stop()
        yield w


def plain_text(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


# -- the routes ------------------------------------------------------------------------


async def test_a_client_sets_reads_and_removes_its_email(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await world.ok("GET", "/v1/me/contact", C1) == {"email": None}
    saved = await world.ok("PATCH", "/v1/me/contact", C1, json={"email": ADDRESS})
    assert saved == {"email": ADDRESS}
    assert await world.ok("GET", "/v1/me/contact", C1) == {"email": ADDRESS}
    # Its own: another client has none.
    assert await world.ok("GET", "/v1/me/contact", C2) == {"email": None}
    changed = "carol@example.net"
    assert await world.ok("PATCH", "/v1/me/contact", C1, json={"email": changed}) == {
        "email": changed
    }
    assert await world.ok("PATCH", "/v1/me/contact", C1, json={"email": None}) == {"email": None}
    assert await world.ok("GET", "/v1/me/contact", C1) == {"email": None}
    # Never in a log line (the app logs to stderr).
    out, err = capsys.readouterr()
    assert ADDRESS not in out + err and changed not in out + err


async def test_only_a_signed_in_client_has_one(world: World) -> None:
    for who in (T1, OP):
        await world.error("GET", "/v1/me/contact", who, 403, "forbidden")
        await world.error("PATCH", "/v1/me/contact", who, 403, "forbidden", json={"email": ADDRESS})
    r = await world.http.get("/v1/me/contact")
    assert r.status_code == 401
    r = await world.http.patch("/v1/me/contact", json={"email": ADDRESS})
    assert r.status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"email": "not-an-address"},
        {"email": "two@@example.org"},
        {"email": "no spaces@example.org"},
        {"email": "x@" + "a" * 250 + ".org"},
        {"email": 42},
        {"email": ["carol@example.org"]},
    ],
)
async def test_a_bad_email_is_refused_naming_the_field(world: World, body: object) -> None:
    err = await world.error("PATCH", "/v1/me/contact", C1, 422, "invalid_field", json=body)
    assert err["field"] == "email"
    for value in body.values() if isinstance(body, dict) else ():
        assert str(value) not in err["message"]  # the rule, never the value
    assert await world.ok("GET", "/v1/me/contact", C1) == {"email": None}


async def test_a_body_that_is_no_object_is_bad_message(world: World) -> None:
    for content in (b"[1]", b"nope", b""):
        await world.error("PATCH", "/v1/me/contact", C1, 400, "bad_message", content=content)


# -- the emails, queued ------------------------------------------------------------------


async def test_the_client_gets_its_own_emails_once_each_and_none_without_an_address(
    database_url: str,
) -> None:
    async with mailing(database_url) as world:
        outbox = world.ctx.outbox
        await world.ok("PATCH", "/v1/me/contact", C1, json={"email": ADDRESS})
        series = (await world.book(C1, start=z(TUE_10), repeat_weekly=2))["bookings"]
        first, second = series[0]["id"], series[1]["id"]
        by_template = {m.template: m for m in await outbox.about(first)}
        assert set(by_template) == {"booking_confirmed", "booking_confirmed_client"}
        mine = by_template["booking_confirmed_client"]
        assert (mine.recipient_id, mine.dedupe_key) == (
            "c1",
            f"email:booking_confirmed_client:{first}:c1",
        )
        assert by_template["booking_confirmed"].recipient_id == "t1"
        assert ADDRESS not in str(mine.payload)  # looked up when sending, not stored
        text = render(mine.template, mine.payload).text
        assert "Your session with Alice is booked (2 in all)" in text
        # UTC and the therapist's zone (GMT in March: the same wall clock).
        assert "- Tue 10 Mar 2026, 10:00-10:50 UTC (10:00-10:50 Europe/London time)" in text
        assert "- Tue 17 Mar 2026, 10:00-10:50 UTC (10:00-10:50 Europe/London time)" in text
        assert "Cancel at least 24 hours before the start and nothing is charged" in text
        assert "Cancelling later, or not joining, costs £60.00." in text
        assert "https://care.example.com/book/t1" in text

        # c2 gave no address: the therapist's emails alone.
        [other] = (await world.book(C2, start=z(TUE_10 + 2 * 86400)))["bookings"]
        assert [m.template for m in await outbox.about(other["id"])] == ["booking_confirmed"]
        await world.ok("POST", f"/v1/bookings/{other['id']}/cancel", C2)
        assert sorted(m.template for m in await outbox.about(other["id"])) == [
            "booking_cancelled",
            "booking_confirmed",
        ]

        # Reminders: each side's, once, however many servers look.
        world.clock.now = TUE_10 - 23 * 3600
        await world.ctx.loops._reminders()
        await world.ctx.loops._reminders()
        templates = sorted(m.template for m in await outbox.about(first))
        assert templates == [
            "booking_confirmed",
            "booking_confirmed_client",
            "booking_reminder",
            "booking_reminder_client",
        ]
        reminder = {m.template: m for m in await outbox.about(first)}["booking_reminder_client"]
        assert (reminder.recipient_id, reminder.dedupe_key) == (
            "c1",
            f"email:booking_reminder_client:{first}:c1",
        )

        # A late cancel (within 24 h of the second session's start): the fee, said.
        world.clock.now = TUE_10 + 7 * 86400 - 3600 * 5
        await world.ok("POST", f"/v1/bookings/{second}/cancel", C1)
        cancelled = {m.template: m for m in await outbox.about(second)}
        assert set(cancelled) == {"booking_cancelled", "booking_cancelled_client"}
        words = render("booking_cancelled_client", cancelled["booking_cancelled_client"].payload)
        assert "was cancelled by you." in words.text
        assert "A late-cancellation fee of £60.00 applies" in words.text

        for b in (first, second, other["id"]):
            for m in await outbox.about(b):
                assert m.template not in CLIENT_TEMPLATES or m.recipient_id == "c1"


# -- the emails, received ----------------------------------------------------------------


async def test_the_client_receives_its_confirmation_with_the_ics_and_its_reminder(
    database_url: str, inbox: Inbox, capsys: pytest.CaptureFixture[str]
) -> None:
    async with mailing(database_url, inbox.url) as world:
        await world.ok("PATCH", "/v1/therapists/t1", T1, json={"email": THERAPIST_ADDRESS})
        await world.ok("PATCH", "/v1/me/contact", C1, json={"email": ADDRESS})
        [booking] = (await world.book(C1, start=z(TUE_10)))["bookings"]
        mailer = world.ctx.mail
        assert mailer is not None
        # The confirmations, and the client's welcome email (its first booking, §10).
        assert await mailer.run_once(world.clock()) == 3
        [welcome] = [m for _, _, m in inbox.received if m["Subject"].startswith("Welcome")]
        assert "https://care.example.com/forms" in plain_text(welcome)
        received = {tuple(r): m for _, r, m in inbox.received if m is not welcome}
        assert set(received) == {(ADDRESS,), (THERAPIST_ADDRESS,)}
        confirmation = received[(ADDRESS,)]
        assert confirmation["Subject"].startswith("Booked: session with Alice, Tue 10 Mar 2026")
        body = plain_text(confirmation)
        assert "Your session with Alice is booked" in body
        assert "Tue 10 Mar 2026, 10:00-10:50 UTC (10:00-10:50 Europe/London time)" in body
        assert "Cancel at least 24 hours before the start" in body
        [attachment] = list(confirmation.iter_attachments())
        assert (attachment.get_content_type(), attachment.get_filename()) == (
            "text/calendar",
            "booking.ics",
        )
        [vevent] = icalendar.Calendar.from_ical(attachment.get_content()).walk("VEVENT")
        assert str(vevent["uid"]) == f"{booking['id']}@care.example.com"
        assert vevent.decoded("dtstart").timestamp() == TUE_10
        assert str(vevent["summary"]) == "Session with Alice"
        # The therapist's own is about "a session booked with you", not the client's.
        assert "A session is booked with you" in plain_text(received[(THERAPIST_ADDRESS,)])

        # 23 h before: the reminder, to each side once.
        inbox.received.clear()
        world.clock.now = TUE_10 - 23 * 3600
        await world.ctx.loops._reminders()
        await world.ctx.loops._reminders()
        assert await mailer.run_once(world.clock()) == 2
        assert await mailer.run_once(world.clock()) == 0
        reminders = {tuple(rcpt): msg for _, rcpt, msg in inbox.received}
        assert set(reminders) == {(ADDRESS,), (THERAPIST_ADDRESS,)}
        reminder = reminders[(ADDRESS,)]
        assert reminder["Subject"].startswith("Reminder: session with Alice, Tue 10 Mar 2026")
        text = plain_text(reminder)
        assert "A reminder: your session with Alice is on Tue 10 Mar 2026" in text
        assert "https://care.example.com/book/t1" in text

        # An address removed before sending: the email is dropped, not sent.
        await world.ok("PATCH", "/v1/me/contact", C1, json={"email": None})
        inbox.received.clear()
        await world.ok("POST", f"/v1/bookings/{booking['id']}/cancel", C1)
        assert await mailer.run_once(world.clock()) == 1
        assert [rcpt for _, rcpt, _ in inbox.received] == [[THERAPIST_ADDRESS]]

    out, err = capsys.readouterr()
    # Ours: every line but the stand-in SMTP server's own (aiosmtpd's mail.log
    # shows the envelope it received).
    ours = [line for line in (out + err).splitlines() if '"logger": "mail.' not in line]
    assert ours and not any(ADDRESS in line for line in ours)


async def test_an_address_removed_after_queueing_is_dropped(
    database_url: str, inbox: Inbox
) -> None:
    async with mailing(database_url, inbox.url) as world:
        c9 = auth("client", "c9")
        await world.ok("PATCH", "/v1/me/contact", c9, json={"email": ADDRESS})
        await world.ok(
            "POST",
            "/v1/wallet/topups",
            OP,
            201,
            json={"client_id": "c9", "amount_minor": 20000, "reference": "seed-c9"},
        )
        await fill_forms(world, c9)
        [booking] = (await world.book(c9, start=z(TUE_10)))["bookings"]
        await world.ok("PATCH", "/v1/me/contact", c9, json={"email": None})
        mailer = world.ctx.mail
        assert mailer is not None
        await mailer.run_once(world.clock())
        assert inbox.received == []  # the therapist has no address either
        states = {m.template: m.state for m in await world.ctx.outbox.about(booking["id"])}
        assert states == {"booking_confirmed": "dropped", "booking_confirmed_client": "dropped"}
