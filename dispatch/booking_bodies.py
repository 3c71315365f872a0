"""Parsing of scheduled care's HTTP bodies and query strings (PROTOCOL.md §8). Pure.

Every parser raises :class:`~core.errors.BadInput` (400: not a JSON object)
or :class:`~core.errors.InvalidField` (422) naming the field, never echoing
the value. An optional field that is ``null`` counts as absent; unknown
fields are ignored (forward compatibility), as for the pool's bodies.

Times on the wire are RFC 3339 (``2026-04-06T08:00:00Z``; an offset is
accepted and converted, a time without one is refused: it would mean the
server's zone); dates are ``YYYY-MM-DD``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from core.errors import BadInput, InvalidField
from core.validation import is_id
from schedule.model import BookingType

#: A weekly series: 2..12 bookings (PROTOCOL.md §8).
REPEAT_MIN: Final = 2
REPEAT_MAX: Final = 12
#: ``GET /v1/therapists/{id}/slots``: at most this many days at once.
SLOT_DAYS_MAX: Final = 31
SLOT_DAYS_DEFAULT: Final = 7
#: ``GET /v1/bookings``: the widest range one call may ask for, and the defaults.
RANGE_MAX_S: Final = 366 * 86400.0
RANGE_BACK_S: Final = 31 * 86400.0
#: Instants a booking may name: years 2000..2199 (anything else is a typo).
_EARLIEST: Final = 946684800.0
_LATEST: Final = 7258118400.0
_RFC3339: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:\d{2})"
)
_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_TRUE: Final = ("true", "1")
_FALSE: Final = ("false", "0")

Outcome = Literal["occurred", "no_show"]


@dataclass(frozen=True, slots=True)
class BookingDraft:
    """The body of ``POST /v1/bookings``, checked (who may send what is the
    route's business)."""

    therapist_id: str
    client_id: str | None
    type: BookingType
    start: float
    repeat_weekly: int | None


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadInput("request body must be a JSON object")
    return body


def parse_instant(value: object, field: str) -> float:
    """An RFC 3339 time with ``Z`` or an offset, as epoch seconds."""
    if not isinstance(value, str) or len(value) > 40 or not _RFC3339.fullmatch(value):
        raise InvalidField(
            f"{field} must be an RFC 3339 time such as 2026-04-06T08:00:00Z", field=field
        )
    text = value.replace("z", "Z").replace("t", "T")
    if " " in text:
        text = text.replace(" ", "T")
    # fromisoformat takes at most 6 digits of fraction: trim the rest.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        ts = dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise InvalidField(f"{field} is not a valid date and time", field=field) from None
    if not _EARLIEST <= ts < _LATEST:
        raise InvalidField(f"{field} must be in the years 2000..2199", field=field)
    return ts


def parse_date(value: object, field: str) -> dt.date:
    if isinstance(value, str) and _DATE.fullmatch(value):
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            pass
        else:
            if 2000 <= day.year < 2200:
                return day
    raise InvalidField(f"{field} must be a date YYYY-MM-DD (years 2000..2199)", field=field)


def _id(obj: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise InvalidField(f"{name} is required", field=name)
        return None
    if not is_id(value):
        raise InvalidField(f"{name} must be 1..64 characters [A-Za-z0-9_.-]", field=name)
    result: str = value
    return result


def booking_type(value: object, field: str = "type") -> BookingType:
    if not isinstance(value, str):
        raise InvalidField(f"{field} must be intro or session", field=field)
    try:
        return BookingType(value)
    except ValueError:
        raise InvalidField(f"{field} must be intro or session", field=field) from None


def parse_booking(body: Any) -> BookingDraft:
    """``therapist_id``, ``client_id`` (optional), ``type``, ``start``,
    ``repeat_weekly`` (optional, 2..12; only for a ``session``)."""
    obj = _object(body)
    therapist_id = _id(obj, "therapist_id", required=True)
    assert therapist_id is not None
    client_id = _id(obj, "client_id", required=False)
    kind = booking_type(obj.get("type"))
    start = parse_instant(obj.get("start"), "start")
    repeat = obj.get("repeat_weekly")
    if repeat is not None:
        if type(repeat) is not int or not REPEAT_MIN <= repeat <= REPEAT_MAX:
            raise InvalidField(
                f"repeat_weekly must be a whole number {REPEAT_MIN}..{REPEAT_MAX}",
                field="repeat_weekly",
            )
        if kind is BookingType.INTRO:
            raise InvalidField(
                "repeat_weekly is for sessions: the intro call is one", field="repeat_weekly"
            )
    return BookingDraft(therapist_id, client_id, kind, start, repeat)


def parse_outcome(body: Any) -> Outcome:
    value = _object(body).get("outcome")
    if value == "occurred":
        return "occurred"
    if value == "no_show":
        return "no_show"
    raise InvalidField("outcome must be occurred or no_show", field="outcome")


@dataclass(frozen=True, slots=True)
class SlotQuery:
    type: BookingType
    first_day: dt.date | None  # None: today in the therapist's zone
    days: int


def parse_slot_query(params: Mapping[str, str]) -> SlotQuery:
    """``?type=session|intro&from=YYYY-MM-DD&days=N``: ``type`` defaults to
    ``session``, ``from`` to today in the therapist's zone, ``days`` to 7
    (1..31, else 422)."""
    raw_type = params.get("type")
    kind = BookingType.SESSION if raw_type is None else booking_type(raw_type)
    raw_from = params.get("from")
    first = None if raw_from is None else parse_date(raw_from, "from")
    days = SLOT_DAYS_DEFAULT
    raw_days = params.get("days")
    if raw_days is not None:
        if not raw_days.isascii() or not raw_days.isdigit() or len(raw_days) > 3:
            raise InvalidField(f"days must be a whole number 1..{SLOT_DAYS_MAX}", field="days")
        days = int(raw_days)
        if not 1 <= days <= SLOT_DAYS_MAX:
            raise InvalidField(f"days must be a whole number 1..{SLOT_DAYS_MAX}", field="days")
    return SlotQuery(kind, first, days)


def _bound(raw: str, field: str) -> float:
    """An RFC 3339 time, or a date (its midnight, UTC)."""
    if _DATE.fullmatch(raw):
        day = parse_date(raw, field)
        return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()
    return parse_instant(raw, field)


def parse_range(params: Mapping[str, str], now: float) -> tuple[float, float]:
    """``?from=&to=`` (RFC 3339, or ``YYYY-MM-DD`` meaning its midnight UTC):
    the bookings starting in ``[from, to)``. ``from`` defaults to 31 days ago,
    ``to`` to 366 days after ``from``; at most 366 days apart (else 422)."""
    raw_from, raw_to = params.get("from"), params.get("to")
    start = now - RANGE_BACK_S if raw_from is None else _bound(raw_from, "from")
    end = start + RANGE_MAX_S if raw_to is None else _bound(raw_to, "to")
    if end <= start:
        raise InvalidField("to must be after from", field="to")
    if end - start > RANGE_MAX_S:
        raise InvalidField("from and to may be at most 366 days apart", field="to")
    return start, end


def parse_flag(params: Mapping[str, str], name: str) -> bool:
    raw = params.get(name)
    if raw is None:
        return False
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise InvalidField(f"{name} must be true or false", field=name)
