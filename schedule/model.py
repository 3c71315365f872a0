"""Value types of scheduled care (PROTOCOL.md §8). Pure: no I/O, no ``await``.

A therapist's :class:`Availability` is wall-clock time in its own IANA zone:
weekly windows (``mon 09:00-12:00``) and per-date overrides that replace a
date's weekly windows (an override with no slots is a day off). A window
starts and ends on the same day (``end > start``; at most ``23:59``), so no
window crosses midnight. Turning wall clock into instants, across
daylight-saving changes, is :mod:`schedule.slots`' job.

:func:`parse_availability` is the one way in from the wire (and from storage):
every bad input raises :class:`~core.errors.InvalidField` naming the field
(``weekly[2].end``, ``overrides[0].date`` ...), never echoing the value.
"""

from __future__ import annotations

import datetime
import functools
import itertools
import re
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from core.errors import InvalidField

__all__ = [
    "DAYS",
    "INTRO_USED_STATES",
    "MAX_OVERRIDES",
    "MAX_OVERRIDE_DISTANCE",
    "MAX_WEEKLY_WINDOWS",
    "MAX_WINDOWS_PER_OVERRIDE",
    "Availability",
    "BookingState",
    "BookingType",
    "Override",
    "Policy",
    "WeeklyWindow",
    "Window",
    "format_hhmm",
    "parse_availability",
    "parse_hhmm",
]

#: Wire names of the weekdays, index = ``datetime.date.weekday()`` (0 = Monday).
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_WEEKLY_WINDOWS = 50
MAX_OVERRIDES = 400
#: Windows in one override: a day of windows at least 1 minute long cannot hold more
#: than this without overlapping, but a smaller bound keeps bodies small.
MAX_WINDOWS_PER_OVERRIDE = 48
#: How far from today an override's date may be (either way), when a ``today`` is given.
MAX_OVERRIDE_DISTANCE = datetime.timedelta(days=731)
_MAX_ZONE_LEN = 64
_HHMM_RE = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class BookingType(StrEnum):
    INTRO = "intro"
    SESSION = "session"


class BookingState(StrEnum):
    """A booking's state. Only ``scheduled`` moves; every other state is final::

    scheduled --client, >= window before start--> cancelled
    scheduled --client, later---------------------> late_cancelled (fee)
    scheduled --therapist or operator-------------> therapist_cancelled
    scheduled --outcome after start---------------> occurred (price) | no_show (fee)
    """

    SCHEDULED = "scheduled"
    OCCURRED = "occurred"
    CANCELLED = "cancelled"
    LATE_CANCELLED = "late_cancelled"
    NO_SHOW = "no_show"
    THERAPIST_CANCELLED = "therapist_cancelled"


#: States in which an intro counts as used (the one-intro-per-pair rule): a
#: cancelled in time or therapist-cancelled intro gives the client its intro back.
INTRO_USED_STATES = frozenset(
    {
        BookingState.SCHEDULED,
        BookingState.OCCURRED,
        BookingState.LATE_CANCELLED,
        BookingState.NO_SHOW,
    }
)


def parse_hhmm(value: object, field: str) -> datetime.time:
    """``"HH:MM"`` (00:00..23:59, two digits each) as a time; else ``InvalidField``."""
    match = _HHMM_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidField(f"{field} must be a time HH:MM from 00:00 to 23:59", field=field)
    return datetime.time(int(match.group(1)), int(match.group(2)))


def format_hhmm(value: datetime.time) -> str:
    """The wire form ``"HH:MM"`` of a window bound."""
    return f"{value.hour:02d}:{value.minute:02d}"


def _minutes(value: datetime.time) -> int:
    return value.hour * 60 + value.minute


@dataclass(frozen=True, slots=True)
class Window:
    """Wall-clock ``[start, end]`` within one day, whole minutes, ``end > start``."""

    start: datetime.time
    end: datetime.time

    def __post_init__(self) -> None:
        for bound in (self.start, self.end):
            if bound.second or bound.microsecond or bound.tzinfo is not None:
                raise ValueError("window bounds are naive whole minutes")
        if self.end <= self.start:
            raise ValueError("a window must end after it starts")

    @property
    def minutes(self) -> int:
        return _minutes(self.end) - _minutes(self.start)

    def to_wire(self) -> dict[str, str]:
        return {"start": format_hhmm(self.start), "end": format_hhmm(self.end)}


@dataclass(frozen=True, slots=True)
class WeeklyWindow:
    """A window on every ``day`` (0 = Monday .. 6 = Sunday)."""

    day: int
    start: datetime.time
    end: datetime.time

    def __post_init__(self) -> None:
        if type(self.day) is not int or not 0 <= self.day <= 6:
            raise ValueError("day must be 0 (Monday) .. 6 (Sunday)")
        Window(self.start, self.end)  # the same checks

    @property
    def window(self) -> Window:
        return Window(self.start, self.end)

    def to_wire(self) -> dict[str, str]:
        return {"day": DAYS[self.day], **self.window.to_wire()}


@dataclass(frozen=True, slots=True)
class Override:
    """``date``'s windows, replacing the weekly ones; no slots = a day off."""

    date: datetime.date
    slots: tuple[Window, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {"date": self.date.isoformat(), "slots": [w.to_wire() for w in self.slots]}


@dataclass(frozen=True, slots=True)
class Availability:
    """A therapist's availability in ``timezone`` (an IANA name).

    Built by :func:`parse_availability` (or :meth:`empty`), which keeps
    ``weekly`` sorted by ``(day, start)``, ``overrides`` by date and each
    override's slots by start, with no overlaps: equal availabilities compare
    equal.
    """

    timezone: str
    weekly: tuple[WeeklyWindow, ...] = ()
    overrides: tuple[Override, ...] = ()

    @classmethod
    def empty(cls, tz: str) -> Availability:
        """No windows at all in zone ``tz`` (checked: ``InvalidField`` if unknown)."""
        return cls(timezone=_check_zone(tz, "timezone"))

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def weekly_hours(self) -> float:
        """Hours a week of the weekly windows (overrides not counted)."""
        return sum(w.window.minutes for w in self.weekly) / 60

    def windows_on(self, day: datetime.date) -> tuple[Window, ...]:
        """The wall-clock windows of ``day``: its override's if it has one, else
        the weekly windows of its weekday; sorted by start."""
        for override in self.overrides:
            if override.date == day:
                return override.slots
        weekday = day.weekday()
        return tuple(w.window for w in self.weekly if w.day == weekday)

    def to_wire(self) -> dict[str, Any]:
        """The §8 shape, plus ``weekly_hours`` (rounded to 2 decimals)."""
        return {
            "timezone": self.timezone,
            "weekly": [w.to_wire() for w in self.weekly],
            "overrides": [o.to_wire() for o in self.overrides],
            "weekly_hours": round(self.weekly_hours, 2),
        }


@functools.cache
def _zones() -> frozenset[str]:
    # available_timezones() walks the tz database once; checking membership
    # (rather than trying ZoneInfo(name)) refuses paths. "localtime" (the
    # server's own zone on some systems) and "Factory" are not places.
    return frozenset(zoneinfo.available_timezones()) - {"localtime", "Factory", "posixrules"}


def _check_zone(value: object, field: str) -> str:
    if not isinstance(value, str) or len(value) > _MAX_ZONE_LEN or value not in _zones():
        raise InvalidField(
            f"{field} must be an IANA time zone name such as Europe/London", field=field
        )
    return value


def _object(value: object, field: str, keys: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InvalidField(f"{field} must be an object", field=field)
    unknown = sorted(str(k) for k in value if k not in keys)
    if unknown:
        names = ", ".join(keys)
        raise InvalidField(f"{field} may only have the fields {names}", field=field)
    return value


def _array(value: object, field: str, limit: int) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidField(f"{field} must be an array", field=field)
    if len(value) > limit:
        raise InvalidField(f"{field} may have at most {limit} entries", field=field)
    return value


def _window(obj: object, field: str) -> Window:
    item = _object(obj, field, ("start", "end"))
    if "start" not in item or "end" not in item:
        raise InvalidField(f"{field} needs a start and an end", field=field)
    start = parse_hhmm(item["start"], f"{field}.start")
    end = parse_hhmm(item["end"], f"{field}.end")
    if end <= start:
        raise InvalidField(f"{field}.end must be after its start (same day)", field=f"{field}.end")
    return Window(start, end)


def _check_no_overlap(windows: Sequence[Window], field: str, what: str) -> None:
    """``windows`` sorted by start; touching (end == next start) is fine."""
    for before, after in itertools.pairwise(windows):
        if after.start < before.end:
            raise InvalidField(f"{field} has overlapping windows on {what}", field=field)


def _weekday(value: object, field: str) -> int:
    if not isinstance(value, str) or value not in DAYS:
        raise InvalidField(f"{field} must be one of {', '.join(DAYS)}", field=field)
    return DAYS.index(value)


def _date(value: object, field: str) -> datetime.date:
    if isinstance(value, str) and _DATE_RE.fullmatch(value):
        try:
            return datetime.date.fromisoformat(value)
        except ValueError:
            pass
    raise InvalidField(f"{field} must be a date YYYY-MM-DD", field=field)


def parse_availability(obj: object, *, today: datetime.date | None = None) -> Availability:
    """An availability from its wire shape (PROTOCOL.md §8), checked and normalised.

    ``{"timezone", "weekly": [{"day": "mon".."sun", "start": "HH:MM", "end":
    "HH:MM"}], "overrides": [{"date": "YYYY-MM-DD", "slots": [{"start",
    "end"}]}]}``; ``weekly`` and ``overrides`` may be left out (none), and a
    ``weekly_hours`` (what :meth:`Availability.to_wire` adds) is ignored so a
    GET's answer can be PUT back. Refused with ``InvalidField``: an unknown
    zone, an unknown day, a time not ``HH:MM``, ``end <= start``, overlapping
    windows on one day (weekly or within an override), two overrides of one
    date, more than :data:`MAX_WEEKLY_WINDOWS` weekly windows or
    :data:`MAX_OVERRIDES` overrides, unknown fields. With ``today`` (for a
    PUT; leave it out when reading stored data back) an override's date must
    also be within :data:`MAX_OVERRIDE_DISTANCE` (2 years) of it.
    """
    body = _object(obj, "body", ("timezone", "weekly", "overrides", "weekly_hours"))
    timezone = _check_zone(body.get("timezone"), "timezone")

    weekly: list[WeeklyWindow] = []
    for i, item in enumerate(_array(body.get("weekly"), "weekly", MAX_WEEKLY_WINDOWS)):
        field = f"weekly[{i}]"
        entry = _object(item, field, ("day", "start", "end"))
        day = _weekday(entry.get("day"), f"{field}.day")
        window = _window({k: v for k, v in entry.items() if k != "day"}, field)
        weekly.append(WeeklyWindow(day, window.start, window.end))
    weekly.sort(key=lambda w: (w.day, w.start))
    for day in range(7):
        _check_no_overlap([w.window for w in weekly if w.day == day], "weekly", DAYS[day])

    overrides: list[Override] = []
    seen: set[datetime.date] = set()
    for i, item in enumerate(_array(body.get("overrides"), "overrides", MAX_OVERRIDES)):
        field = f"overrides[{i}]"
        entry = _object(item, field, ("date", "slots"))
        date = _date(entry.get("date"), f"{field}.date")
        if today is not None and abs(date - today) > MAX_OVERRIDE_DISTANCE:
            raise InvalidField(
                f"{field}.date must be within 2 years of today", field=f"{field}.date"
            )
        if date in seen:
            raise InvalidField(f"{field}.date repeats an earlier override", field=f"{field}.date")
        seen.add(date)
        slots_field = f"{field}.slots"
        raw = _array(entry.get("slots"), slots_field, MAX_WINDOWS_PER_OVERRIDE)
        slots = sorted(
            (_window(w, f"{slots_field}[{j}]") for j, w in enumerate(raw)), key=lambda w: w.start
        )
        _check_no_overlap(slots, slots_field, date.isoformat())
        overrides.append(Override(date, tuple(slots)))
    overrides.sort(key=lambda o: o.date)
    return Availability(timezone, tuple(weekly), tuple(overrides))


@dataclass(frozen=True, slots=True)
class Policy:
    """The cancellation terms a booking was made under (settings at booking
    time; later changes of the settings never touch a booking's policy).

    ``cancel_window_h``: a client cancelling at least this many hours before
    the start pays nothing. ``late_fee_pct``: what a late cancel or a no-show
    costs, in % of the price. ``late_fee_therapist_pct``: the therapist's part
    of that fee, in % of its normal share.
    """

    cancel_window_h: int
    late_fee_pct: int
    late_fee_therapist_pct: int

    def __post_init__(self) -> None:
        for name in ("cancel_window_h", "late_fee_pct", "late_fee_therapist_pct"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ValueError(f"{name} must be an int >= 0")
        if self.late_fee_pct > 100 or self.late_fee_therapist_pct > 100:
            raise ValueError("percentages must be <= 100")

    @property
    def cancel_window_s(self) -> float:
        return self.cancel_window_h * 3600.0

    def to_wire(self) -> dict[str, int]:
        return {
            "cancel_window_h": self.cancel_window_h,
            "late_fee_pct": self.late_fee_pct,
            "late_fee_therapist_pct": self.late_fee_therapist_pct,
        }

    @classmethod
    def from_wire(cls, obj: object) -> Policy:
        """The policy from :meth:`to_wire`'s shape; ``InvalidField`` (field
        ``policy``) for anything else."""
        keys = ("cancel_window_h", "late_fee_pct", "late_fee_therapist_pct")
        if not isinstance(obj, dict) or set(obj) != set(keys):
            raise InvalidField(f"policy must be an object with {', '.join(keys)}", field="policy")
        try:
            return cls(**{k: obj[k] for k in keys})
        except ValueError:
            raise InvalidField(
                "policy's fields must be whole numbers >= 0, percentages <= 100", field="policy"
            ) from None
