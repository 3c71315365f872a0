"""The messages a booking sends (PROTOCOL.md §8): built purely
(:mod:`notify.invites`), the ``.ics`` read back with ``icalendar`` and checked
against RFC 5545's shape, and one confirmation sent through the outbox to a
real SMTP server on loopback with its calendar file attached."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import icalendar
import pytest
from integration.harness import free_port
from test_notify_email import ADDRESS, T0, Inbox, queue, smtp_server, worker

from core.db import Database
from notify.calendar import CalendarError, check_calendar, event, ics_of
from notify.email import TemplateError, render
from notify.invites import (
    CLIENT_TEMPLATES,
    Slot,
    Terms,
    cancelled_email,
    client_cancelled_email,
    client_confirmed_email,
    client_reminder_email,
    client_when,
    confirmed_email,
    policy_words,
    reminder_email,
    reminder_text,
    reminder_text_body,
    when,
)
from notify.outbox import Outbox

PUBLIC = "https://care.example.com/"
# Monday 2026-04-06 09:00 in London (BST, UTC+1) = 08:00Z.
START = dt.datetime(2026, 4, 6, 8, 0, tzinfo=dt.UTC).timestamp()
NOW = START - 5 * 86400


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    box = Inbox()
    with smtp_server(box, free_port()) as url:
        box.url = url
        yield box


def slot(booking_id: str = "bk1", start: float = START, minutes: int = 50) -> Slot:
    return Slot(booking_id, "t1", "session", start, start + minutes * 60)


def test_times_read_in_the_therapists_zone_whatever_the_locale() -> None:
    assert when(START, START + 3000, "Europe/London") == (
        "Mon 6 Apr 2026, 09:00-09:50 (Europe/London)"
    )
    assert when(START, START + 3000, "America/New_York") == (
        "Mon 6 Apr 2026, 04:00-04:50 (America/New_York)"
    )


def test_a_weekly_series_is_one_email_with_every_date_in_its_calendar() -> None:
    week = 7 * 86400
    series = [slot(f"bk{i}", START + i * week) for i in range(3)]
    msg = confirmed_email(
        series, name="Alice", timezone="Europe/London", public_url=PUBLIC, now=NOW
    )
    assert (msg.channel, msg.recipient_id, msg.template) == ("email", "t1", "booking_confirmed")
    assert msg.dedupe_key == "email:booking_confirmed:bk0:t1" and msg.about_id == "bk0"
    rendered = render(msg.template, msg.payload)
    assert rendered.subject == "Booked: session, Mon 6 Apr 2026, 09:00-09:50 (Europe/London)"
    assert "(3 in all)" in rendered.text and "Mon 20 Apr 2026, 09:00-09:50" in rendered.text
    assert rendered.html is not None and "https://care.example.com/console" in rendered.html
    [attachment] = rendered.attachments
    assert (attachment.filename, attachment.content_type) == ("booking.ics", "text/calendar")
    cal = icalendar.Calendar.from_ical(attachment.data)
    assert (str(cal["version"]), str(cal["method"])) == ("2.0", "PUBLISH")
    events = list(cal.walk("VEVENT"))
    assert [str(e["uid"]) for e in events] == [f"bk{i}@care.example.com" for i in range(3)]
    assert [e.decoded("dtstart") for e in events] == [
        dt.datetime.fromtimestamp(s.start, tz=dt.UTC) for s in series
    ]
    assert all(
        e.decoded("dtend") - e.decoded("dtstart") == dt.timedelta(minutes=50) for e in events
    )
    assert {str(e["status"]) for e in events} == {"CONFIRMED"}
    # UTC times (no VTIMEZONE to get wrong), CRLF line ends as RFC 5545 says.
    assert b"DTSTART:20260406T080000Z\r\n" in attachment.data
    assert b"VTIMEZONE" not in attachment.data


def test_a_cancellation_says_whether_a_fee_applies_and_updates_the_event() -> None:
    late = cancelled_email(
        slot(),
        by="client",
        fee_minor=6000,
        currency="GBP",
        name="Alice",
        timezone="Europe/London",
        public_url=PUBLIC,
        now=NOW,
    )
    text = render(late.template, late.payload).text
    assert "was cancelled by the client." in text
    assert "A late-cancellation fee of £60.00 applies." in text
    free = cancelled_email(
        slot(),
        by="therapist",
        fee_minor=0,
        currency="GBP",
        name="Alice",
        timezone="Europe/London",
        public_url=PUBLIC,
        now=NOW,
    )
    rendered = render(free.template, free.payload)
    assert "cancelled by you." in rendered.text and "No fee applies." in rendered.text
    [vevent] = icalendar.Calendar.from_ical(rendered.attachments[0].data).walk("VEVENT")
    assert (str(vevent["status"]), int(vevent["sequence"])) == ("CANCELLED", 1)
    assert str(vevent["uid"]) == "bk1@care.example.com"  # the confirmed event's own


def test_reminders_name_no_client() -> None:
    mail = reminder_email(slot(), name="Alice", timezone="Europe/London", public_url=PUBLIC)
    assert mail.dedupe_key == "email:booking_reminder:bk1:t1"
    assert (
        "A reminder: you have a booked session on Mon 6 Apr 2026"
        in render(mail.template, mail.payload).text
    )
    text = reminder_text(slot(), timezone="Europe/London")
    assert (text.channel, text.template, text.dedupe_key) == (
        "sms",
        "booking_reminder_text",
        "sms:booking_reminder:bk1:t1",
    )
    body = reminder_text_body(PUBLIC, text.payload)
    assert body == (
        "Reminder: a booked session, Mon 6 Apr 2026, 09:00-09:50 (Europe/London). "
        "Open your console: https://care.example.com/console"
    )
    for payload in (mail.payload, text.payload):
        assert "c1" not in str(payload) and "client_id" not in payload


TERMS = Terms(price_minor=6000, cancel_window_h=24, late_fee_minor=6000, currency="GBP")


def test_the_client_reads_utc_and_the_therapists_time() -> None:
    assert client_when(START, START + 3000, "Europe/London") == (
        "Mon 6 Apr 2026, 08:00-08:50 UTC (09:00-09:50 Europe/London time)"
    )
    assert client_when(START, START + 3000, "UTC") == "Mon 6 Apr 2026, 08:00-08:50 UTC"
    # Another day there: its date too.
    late = START + 15 * 3600
    assert client_when(late, late + 3000, "Asia/Tokyo") == (
        "Mon 6 Apr 2026, 23:00-23:50 UTC (Tue 7 Apr 2026, 08:00-08:50 Asia/Tokyo time)"
    )


def test_the_terms_in_words() -> None:
    assert policy_words(TERMS) == (
        "Cancel at least 24 hours before the start and nothing is charged (the £60.00 held"
        " in your wallet is released). Cancelling later, or not joining, costs £60.00."
    )
    free = Terms(price_minor=0, cancel_window_h=24, late_fee_minor=0, currency="GBP")
    assert policy_words(free) == "Cancelling costs nothing, whenever you cancel."


def test_the_clients_emails_speak_to_it_with_their_own_keys() -> None:
    week = 7 * 86400
    series = [slot(f"bk{i}", START + i * week) for i in range(2)]
    london, who = "Europe/London", "Alice"
    confirmed = client_confirmed_email(
        series, client_id="c1", terms=TERMS, name=who, timezone=london, public_url=PUBLIC, now=NOW
    )
    cancelled = client_cancelled_email(
        series[1],
        client_id="c1",
        by="therapist",
        fee_minor=0,
        currency="GBP",
        name=who,
        timezone=london,
        public_url=PUBLIC,
        now=NOW,
    )
    reminder = client_reminder_email(
        series[0], client_id="c1", terms=TERMS, name=who, timezone=london, public_url=PUBLIC
    )
    assert [(m.recipient_id, m.dedupe_key) for m in (confirmed, cancelled, reminder)] == [
        ("c1", "email:booking_confirmed_client:bk0:c1"),
        ("c1", "email:booking_cancelled_client:bk1:c1"),
        ("c1", "email:booking_reminder_client:bk0:c1"),
    ]
    assert {m.template for m in (confirmed, cancelled, reminder)} == CLIENT_TEMPLATES
    # Not the therapist's keys: both sides' rows are queued.
    theirs = confirmed_email(series, name=who, timezone=london, public_url=PUBLIC, now=NOW)
    assert confirmed.dedupe_key != theirs.dedupe_key
    page = render(confirmed.template, confirmed.payload)
    assert page.subject == (
        "Booked: session with Alice,"
        " Mon 6 Apr 2026, 08:00-08:50 UTC (09:00-09:50 Europe/London time)"
    )
    assert "Your session with Alice is booked (2 in all)" in page.text
    assert "- Mon 13 Apr 2026, 08:00-08:50 UTC (09:00-09:50 Europe/London time)" in page.text
    assert policy_words(TERMS) in page.text
    assert page.html is not None and "https://care.example.com/book/t1" in page.html
    events = icalendar.Calendar.from_ical(page.attachments[0].data).walk("VEVENT")
    assert [str(e["summary"]) for e in events] == ["Session with Alice"] * 2
    gone = render(cancelled.template, cancelled.payload)
    assert "cancelled by your therapist." in gone.text and "No fee applies." in gone.text
    [vevent] = icalendar.Calendar.from_ical(gone.attachments[0].data).walk("VEVENT")
    assert str(vevent["status"]) == "CANCELLED"
    soon = render(reminder.template, reminder.payload).text
    assert "A reminder: your session with Alice is on Mon 6 Apr 2026, 08:00-08:50 UTC" in soon
    late = client_cancelled_email(
        series[0],
        client_id="c1",
        by="client",
        fee_minor=6000,
        currency="GBP",
        name=who,
        timezone=london,
        public_url=PUBLIC,
        now=NOW,
    )
    late_text = render(late.template, late.payload).text
    assert "was cancelled by you." in late_text
    assert "A late-cancellation fee of £60.00 applies; it is taken from your wallet." in late_text
    for message in (confirmed, cancelled, reminder, late):
        assert "c1" not in str(message.payload)  # neither the client's id nor anything of it


@pytest.mark.parametrize(
    "bad",
    [
        None,
        {"stamp": NOW, "url": "u", "events": []},
        {"stamp": "now", "url": "u", "events": [event("u1", START, START + 60, "s")]},
        {"stamp": NOW, "url": "u", "events": [event("u1", START, START, "s")]},
        {
            "stamp": NOW,
            "url": "u",
            "events": [{**event("u1", START, START + 60, "s"), "status": "x"}],
        },
        {"stamp": NOW, "url": "u", "events": [{**event("u1", START, START + 60, "s"), "uid": ""}]},
        {"stamp": NOW, "url": "u", "events": [event("u", START, START + 60, "s")] * 53},
    ],
)
def test_a_bad_calendar_payload_is_refused(bad: object) -> None:
    with pytest.raises(CalendarError):
        check_calendar(bad)
    msg = reminder_email(slot(), name="A", timezone="UTC", public_url=PUBLIC)
    with pytest.raises(TemplateError):
        render("booking_reminder", {**msg.payload, "calendar": bad})


def test_text_is_escaped_in_the_file() -> None:
    data = ics_of(
        {"stamp": NOW, "url": PUBLIC, "events": [event("u1", START, START + 60, "A, B; C\\n")]}
    )
    assert b"SUMMARY:A\\, B\\; C\\\\n" in data


async def test_a_confirmation_arrives_with_its_calendar_file(db: Database, inbox: Inbox) -> None:
    msg = confirmed_email(
        [slot()], name="Alice", timezone="Europe/London", public_url=PUBLIC, now=NOW
    )
    assert await queue(db, msg) == 1
    assert await queue(db, msg) == 0  # decided twice (two servers), queued once
    assert await worker(db, inbox.url).run_once(T0) == 1
    [(_, rcpt_tos, received)] = inbox.received
    assert rcpt_tos == [ADDRESS]
    assert received.get_content_type() == "multipart/mixed"
    plain = received.get_body(("plain",))
    assert plain is not None and "09:00-09:50" in plain.get_content()
    [attachment] = list(received.iter_attachments())
    assert attachment.get_content_type() == "text/calendar"
    assert attachment.get_filename() == "booking.ics"
    cal = icalendar.Calendar.from_ical(attachment.get_content())
    [vevent] = cal.walk("VEVENT")
    assert vevent.decoded("dtstart") == dt.datetime.fromtimestamp(START, tz=dt.UTC)
    [row] = await Outbox(db).about("bk1")
    assert row.state == "sent"
