"""The messages a booking sends (PROTOCOL.md §8): confirmed (with an ``.ics``),
cancelled (saying whether a fee applies), and a reminder 24 h before, by email
and by text. Pure: each function builds the outbox row that the caller queues.

Each row's ``dedupe_key`` names the booking (or, for a series, its first
booking), the kind and the recipient, so deciding it twice, on two servers
at once, sends it once. Payloads hold times, amounts, names of therapists
and links; never a client's name or detail, notes, chat or form answers.

Each email goes to both sides, each in its own words and with its own
dedupe key: the therapist's (``booking_confirmed``, ``booking_cancelled``,
``booking_reminder``: to its contact's address, :mod:`notify.contacts`) and
the client's (``*_client``: to the address the client gave,
:class:`notify.contacts.ClientContacts`; :data:`CLIENT_TEMPLATES` says which
address a row is for). The client's names its therapist, gives the time in
UTC and in the therapist's zone, and spells out the cancellation terms
(:class:`Terms`) or the fee.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from notify.calendar import event
from notify.email import format_amount
from notify.outbox import NewMessage

CONFIRMED: Final = "booking_confirmed"
CANCELLED: Final = "booking_cancelled"
REMINDER: Final = "booking_reminder"
#: The template name of a reminder text (its body is :func:`reminder_text_body`).
REMINDER_TEXT: Final = "booking_reminder_text"
#: The client's own emails.
CONFIRMED_CLIENT: Final = "booking_confirmed_client"
CANCELLED_CLIENT: Final = "booking_cancelled_client"
REMINDER_CLIENT: Final = "booking_reminder_client"
#: The templates whose recipient is a client (the sender looks up a client's
#: address for them, a therapist's for every other).
CLIENT_TEMPLATES: Final = frozenset({CONFIRMED_CLIENT, CANCELLED_CLIENT, REMINDER_CLIENT})

_DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS: Final = (
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
)  # fmt: skip
_KINDS: Final = {"intro": "free intro call", "session": "session"}
#: Who cancelled, as the therapist reads it.
_BY: Final = {"client": "the client", "therapist": "you", "operator": "the care team"}
#: Who cancelled, as the client reads it.
_BY_CLIENT: Final = {"client": "you", "therapist": "your therapist", "operator": "the care team"}


@dataclass(frozen=True, slots=True)
class Slot:
    """What a message says about one booking."""

    booking_id: str
    therapist_id: str
    type: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Terms:
    """What a client is told about cancelling one booking: its price, the
    window of its policy snapshot, and what a late cancel or a no-show costs
    (computed by the caller from the policy)."""

    price_minor: int
    cancel_window_h: int
    late_fee_minor: int
    currency: str


def _day(moment: dt.datetime) -> str:
    return f"{_DAYS[moment.weekday()]} {moment.day} {_MONTHS[moment.month - 1]} {moment.year}"


def when(start: float, end: float, timezone: str) -> str:
    """``Mon 6 Apr 2026, 09:00-09:50 (Europe/London)``: wall clock in ``timezone``,
    the same whatever the server's locale."""
    zone = zoneinfo.ZoneInfo(timezone)
    a = dt.datetime.fromtimestamp(start, tz=zone)
    b = dt.datetime.fromtimestamp(end, tz=zone)
    return f"{_day(a)}, {a:%H:%M}-{b:%H:%M} ({timezone})"


def client_when(start: float, end: float, timezone: str) -> str:
    """The time as a client reads it: UTC, then the therapist's wall clock
    (``Mon 6 Apr 2026, 08:00-08:50 UTC (09:00-09:50 Europe/London time)``;
    its date too when it is another day there); UTC alone when that is the
    therapist's zone."""
    a = dt.datetime.fromtimestamp(start, tz=dt.UTC)
    b = dt.datetime.fromtimestamp(end, tz=dt.UTC)
    utc = f"{_day(a)}, {a:%H:%M}-{b:%H:%M} UTC"
    zone = zoneinfo.ZoneInfo(timezone)
    if zone.key in ("UTC", "Etc/UTC"):
        return utc
    la, lb = a.astimezone(zone), b.astimezone(zone)
    day = "" if la.date() == a.date() else f"{_day(la)}, "
    return f"{utc} ({day}{la:%H:%M}-{lb:%H:%M} {timezone} time)"


def policy_words(terms: Terms) -> str:
    """The cancellation terms in words (the booking's policy snapshot)."""
    if terms.late_fee_minor <= 0:
        return "Cancelling costs nothing, whenever you cancel."
    price = format_amount(terms.price_minor, terms.currency)
    fee = format_amount(terms.late_fee_minor, terms.currency)
    return (
        f"Cancel at least {terms.cancel_window_h} hours before the start and nothing is"
        f" charged (the {price} held in your wallet is released). Cancelling later, or"
        f" not joining, costs {fee}."
    )


def _kind(slot: Slot) -> str:
    return _KINDS.get(slot.type, "session")


def _uid(slot: Slot, public_url: str) -> str:
    return f"{slot.booking_id}@{urlsplit(public_url).hostname or 'dispatch'}"


def _console(public_url: str) -> str:
    return public_url.rstrip("/") + "/console"


def _book_page(public_url: str, therapist_id: str) -> str:
    """The client's booking page with this therapist: its bookings, cancel, join."""
    return f"{public_url.rstrip('/')}/book/{therapist_id}"


def _email(
    template: str, booking_id: str, recipient_id: str, payload: dict[str, Any]
) -> NewMessage:
    """One email about ``booking_id`` for ``recipient_id``, keyed so that
    deciding it twice sends it once."""
    return NewMessage(
        channel="email",
        dedupe_key=f"email:{template}:{booking_id}:{recipient_id}",
        recipient_id=recipient_id,
        template=template,
        about_id=booking_id,
        payload=payload,
    )


def confirmed_email(
    slots: Sequence[Slot], *, name: str, timezone: str, public_url: str, now: float
) -> NewMessage:
    """One email for what one ``POST /v1/bookings`` made (a weekly series is
    one email listing every date, with every date in its ``.ics``)."""
    if not slots:
        raise ValueError("a confirmation needs at least one booking")
    first = slots[0]
    dates = "\n".join(f"- {when(s.start, s.end, timezone)}" for s in slots)
    summary = f"{_kind(first).capitalize()} (quick-connect care)"
    return _email(
        CONFIRMED,
        first.booking_id,
        first.therapist_id,
        {
            "name": name,
            "what": _kind(first),
            "count": str(len(slots)),
            "first": when(first.start, first.end, timezone),
            "dates": dates,
            "console_url": _console(public_url),
            "calendar": {
                "stamp": now,
                "url": _console(public_url),
                "events": [event(_uid(s, public_url), s.start, s.end, summary) for s in slots],
            },
        },
    )


def cancelled_email(
    slot: Slot,
    *,
    by: str,
    fee_minor: int,
    currency: str,
    name: str,
    timezone: str,
    public_url: str,
    now: float,
) -> NewMessage:
    """The booking was cancelled by ``by`` (``client``, ``therapist``,
    ``operator``); the email says whether a fee applies, and how much."""
    if fee_minor > 0:
        fee = f"A late-cancellation fee of {format_amount(fee_minor, currency)} applies."
    else:
        fee = "No fee applies."
    summary = f"{_kind(slot).capitalize()} (quick-connect care)"
    return _email(
        CANCELLED,
        slot.booking_id,
        slot.therapist_id,
        {
            "name": name,
            "what": _kind(slot),
            "when": when(slot.start, slot.end, timezone),
            "by": _BY.get(by, "the care team"),
            "fee": fee,
            "console_url": _console(public_url),
            "calendar": {
                "stamp": now,
                "url": _console(public_url),
                "events": [
                    event(_uid(slot, public_url), slot.start, slot.end, summary, cancelled=True)
                ],
            },
        },
    )


def reminder_email(slot: Slot, *, name: str, timezone: str, public_url: str) -> NewMessage:
    """The reminder 24 h before."""
    return _email(
        REMINDER,
        slot.booking_id,
        slot.therapist_id,
        {
            "name": name,
            "what": _kind(slot),
            "when": when(slot.start, slot.end, timezone),
            "console_url": _console(public_url),
        },
    )


def client_confirmed_email(
    slots: Sequence[Slot],
    *,
    client_id: str,
    terms: Terms,
    name: str,
    timezone: str,
    public_url: str,
    now: float,
) -> NewMessage:
    """The client's confirmation of what one ``POST /v1/bookings`` made: its
    therapist (``name``), every date (UTC and the therapist's ``timezone``),
    the cancellation terms, and the ``.ics``."""
    if not slots:
        raise ValueError("a confirmation needs at least one booking")
    first = slots[0]
    book = _book_page(public_url, first.therapist_id)
    dates = "\n".join(f"- {client_when(s.start, s.end, timezone)}" for s in slots)
    summary = f"{_kind(first).capitalize()} with {name or 'your therapist'}"
    return _email(
        CONFIRMED_CLIENT,
        first.booking_id,
        client_id,
        {
            "name": name or "your therapist",
            "what": _kind(first),
            "count": str(len(slots)),
            "first": client_when(first.start, first.end, timezone),
            "dates": dates,
            "policy": policy_words(terms),
            "book_url": book,
            "calendar": {
                "stamp": now,
                "url": book,
                "events": [event(_uid(s, public_url), s.start, s.end, summary) for s in slots],
            },
        },
    )


def client_cancelled_email(
    slot: Slot,
    *,
    client_id: str,
    by: str,
    fee_minor: int,
    currency: str,
    name: str,
    timezone: str,
    public_url: str,
    now: float,
) -> NewMessage:
    """The client's cancellation: who cancelled, whether a fee applies and how
    much (taken from its wallet), the event cancelled in its calendar."""
    if fee_minor > 0:
        amount = format_amount(fee_minor, currency)
        fee = f"A late-cancellation fee of {amount} applies; it is taken from your wallet."
    else:
        fee = "No fee applies."
    book = _book_page(public_url, slot.therapist_id)
    summary = f"{_kind(slot).capitalize()} with {name or 'your therapist'}"
    return _email(
        CANCELLED_CLIENT,
        slot.booking_id,
        client_id,
        {
            "name": name or "your therapist",
            "what": _kind(slot),
            "when": client_when(slot.start, slot.end, timezone),
            "by": _BY_CLIENT.get(by, "the care team"),
            "fee": fee,
            "book_url": book,
            "calendar": {
                "stamp": now,
                "url": book,
                "events": [
                    event(_uid(slot, public_url), slot.start, slot.end, summary, cancelled=True)
                ],
            },
        },
    )


def client_reminder_email(
    slot: Slot, *, client_id: str, terms: Terms, name: str, timezone: str, public_url: str
) -> NewMessage:
    """The client's reminder 24 h before: with whom, when, the terms, where to join."""
    return _email(
        REMINDER_CLIENT,
        slot.booking_id,
        client_id,
        {
            "name": name or "your therapist",
            "what": _kind(slot),
            "when": client_when(slot.start, slot.end, timezone),
            "policy": policy_words(terms),
            "book_url": _book_page(public_url, slot.therapist_id),
        },
    )


def reminder_text(slot: Slot, *, timezone: str) -> NewMessage:
    """The reminder by text to the therapist (sent only if it opted in: the
    sender looks that up when sending). No client detail."""
    return NewMessage(
        channel="sms",
        dedupe_key=f"sms:{REMINDER}:{slot.booking_id}:{slot.therapist_id}",
        recipient_id=slot.therapist_id,
        template=REMINDER_TEXT,
        about_id=slot.booking_id,
        payload={"what": _kind(slot), "when": when(slot.start, slot.end, timezone)},
    )


def reminder_text_body(public_url: str, payload: Mapping[str, Any]) -> str:
    """The body of a reminder text: the time, a link; nothing about the client."""
    what, at = str(payload.get("what", "session")), str(payload.get("when", ""))
    return f"Reminder: a booked {what}, {at}. Open your console: {_console(public_url)}"
