"""Calendar files (``.ics``, RFC 5545) attached to booking emails (PROTOCOL.md §8). Pure.

An email's payload may carry a ``calendar`` object (JSON, as the outbox
stores it): ``{"method", "stamp", "url", "events": [{"uid", "start", "end",
"summary", "status", "sequence"}]}`` with times as epoch seconds.
:func:`ics_of` turns it into the file's bytes with the ``icalendar`` library
(escaping, line folding and UTC times done by the book), and
:func:`check_calendar` refuses anything else, so a bad payload fails at
render time (the worker marks the email ``failed``) instead of sending a file
calendars cannot read.

Every event is in UTC (``DTSTART:20260406T080000Z``): no ``VTIMEZONE`` to get
wrong, and calendars show it in their owner's zone. A booking keeps its
``UID`` for life (the booking id at the service's host), so the cancellation's
file (``STATUS:CANCELLED``, a higher ``SEQUENCE``) updates the event the
confirmation added instead of adding another. The method is ``PUBLISH``:
these files inform, they invite no reply (no ``ORGANIZER``, no
``ATTENDEE``: no addresses in the file).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any, Final

import icalendar

#: What every file says made it.
PRODID: Final = "-//quick-connect dispatch//bookings//EN"
#: Events one file may hold (a weekly series is at most 12).
EVENTS_MAX: Final = 52
_STATUSES: Final = ("CONFIRMED", "CANCELLED")
_TEXT_MAX: Final = 500


class CalendarError(ValueError):
    """A ``calendar`` payload that is not one this module writes."""


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


def _number(obj: Mapping[str, Any], key: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CalendarError(f"calendar: {key} must be epoch seconds")
    return float(value)


def _text(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= _TEXT_MAX:
        raise CalendarError(f"calendar: {key} must be a string of 1..{_TEXT_MAX} characters")
    return value


def check_calendar(payload: object) -> dict[str, Any]:
    """``payload`` checked as a ``calendar`` object; :class:`CalendarError` otherwise."""
    if not isinstance(payload, dict):
        raise CalendarError("calendar must be an object")
    _number(payload, "stamp")
    _text(payload, "url")
    events = payload.get("events")
    if not isinstance(events, list) or not 0 < len(events) <= EVENTS_MAX:
        raise CalendarError(f"calendar: events must be a list of 1..{EVENTS_MAX}")
    for event in events:
        if not isinstance(event, dict):
            raise CalendarError("calendar: every event must be an object")
        if _number(event, "end") <= _number(event, "start"):
            raise CalendarError("calendar: an event must end after it starts")
        _text(event, "uid")
        _text(event, "summary")
        if event.get("status") not in _STATUSES:
            raise CalendarError(f"calendar: status must be one of {', '.join(_STATUSES)}")
        sequence = event.get("sequence")
        if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 0:
            raise CalendarError("calendar: sequence must be a whole number, 0 or more")
    return payload


def ics_of(payload: object) -> bytes:
    """The ``.ics`` file of a ``calendar`` payload (CRLF lines, UTF-8)."""
    spec = check_calendar(payload)
    cal = icalendar.Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    stamp = _utc(spec["stamp"])
    for item in spec["events"]:
        event = icalendar.Event()
        event.add("uid", item["uid"])
        event.add("dtstamp", stamp)
        event.add("dtstart", _utc(item["start"]))
        event.add("dtend", _utc(item["end"]))
        event.add("summary", item["summary"])
        event.add("description", f"Join from {spec['url']}")
        event.add("url", spec["url"])
        event.add("status", item["status"])
        event.add("sequence", item["sequence"])
        cal.add_component(event)
    data: bytes = cal.to_ical()
    return data


def event(
    uid: str, start: float, end: float, summary: str, *, cancelled: bool = False
) -> dict[str, Any]:
    """One event of a ``calendar`` payload: a confirmed booking (sequence 0),
    or its cancellation (sequence 1, which calendars apply over the first)."""
    return {
        "uid": uid,
        "start": start,
        "end": end,
        "summary": summary,
        "status": "CANCELLED" if cancelled else "CONFIRMED",
        "sequence": 1 if cancelled else 0,
    }
