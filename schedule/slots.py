"""Open slots, slot checks and weekly series (PROTOCOL.md §8). Pure.

No I/O, no clock: callers pass ``now`` and the busy intervals in. Instants are
epoch seconds (floats); windows are wall clock in the availability's zone.

How wall clock becomes instants, across daylight-saving changes:

- A slot starts at a window's start and every ``step`` minutes after, in wall
  clock. A start that does not exist (inside a spring-forward gap) is skipped;
  one that exists twice (inside a fall-back overlap) is taken at its first
  occurrence (``fold=0``), so every wall-clock start gives at most one slot.
- A slot lasts exactly ``length`` minutes of real time (``end = start +
  length * 60``), whatever the clocks do meanwhile, and must end no later than
  the window's end as an instant. A window's end that does not exist (in a
  gap) is the instant the clocks jump; one that exists twice is its first
  occurrence. So on a spring-forward night a 00:00-03:00 window is two real
  hours long, on a fall-back night four.
- Two intervals conflict when ``s < other_e + buffer`` and ``other_s < e +
  buffer``: a booking blocks ``[start, end + buffer)``, as the database's
  capacity guarantee does.
"""

from __future__ import annotations

import datetime
import zoneinfo
from collections.abc import Sequence

from schedule.model import Availability, Window

__all__ = ["conflicts", "fits", "open_slots", "weekly_series"]

_UTC = datetime.UTC
_DAY = datetime.timedelta(days=1)
_WEEK = datetime.timedelta(weeks=1)


def _positive(name: str, value: int, minimum: int = 1) -> int:
    if type(value) is not int or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}")
    return value


def _exists(local: datetime.datetime) -> bool:
    """Whether the aware wall time ``local`` is a real one (not in a gap)."""
    back = local.astimezone(_UTC).astimezone(local.tzinfo)
    return back.replace(tzinfo=None) == local.replace(tzinfo=None)


def _instant(wall: datetime.datetime, zone: zoneinfo.ZoneInfo) -> float:
    """The epoch of naive ``wall`` in ``zone``: its first occurrence; for a wall
    time inside a gap, the instant the clocks jump (the first real instant
    whose wall clock is past it)."""
    local = wall.replace(tzinfo=zone, fold=0)
    if _exists(local):
        return local.timestamp()
    # In a gap, fold=1 maps with the offset after the jump (an instant before
    # it) and fold=0 with the offset before (an instant after it). Search the
    # whole second between them where the offset changes; tz transitions fall
    # on whole seconds.
    lo = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    hi = int(local.timestamp()) + 1
    before = datetime.datetime.fromtimestamp(lo, zone).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.datetime.fromtimestamp(mid, zone).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return float(hi)


def _slot_at(
    wall: datetime.datetime, zone: zoneinfo.ZoneInfo, length_s: int, end_at: float
) -> tuple[float, float] | None:
    """The slot starting at naive ``wall`` (first occurrence), or ``None`` when
    that wall time does not exist or the slot would end after ``end_at``."""
    local = wall.replace(tzinfo=zone, fold=0)
    if not _exists(local):
        return None
    start = local.timestamp()
    end = start + length_s
    return (start, end) if end <= end_at else None


def _window_slots(
    day: datetime.date,
    window: Window,
    zone: zoneinfo.ZoneInfo,
    length_s: int,
    step: datetime.timedelta,
) -> list[tuple[float, float]]:
    """Every slot of one window on one date (no notice, no busy)."""
    end_wall = datetime.datetime.combine(day, window.end)
    end_at = _instant(end_wall, zone)
    found: list[tuple[float, float]] = []
    wall = datetime.datetime.combine(day, window.start)
    while wall < end_wall:
        slot = _slot_at(wall, zone, length_s, end_at)
        if slot is not None:
            found.append(slot)
        wall += step
    return found


def _day_slots(
    av: Availability, day: datetime.date, length_min: int, step_min: int
) -> list[tuple[float, float]]:
    zone = av.zone
    step = datetime.timedelta(minutes=step_min)
    found: list[tuple[float, float]] = []
    for window in av.windows_on(day):
        found.extend(_window_slots(day, window, zone, length_min * 60, step))
    return found


def conflicts(
    start: float, end: float, other_start: float, other_end: float, buffer_s: float
) -> bool:
    """Whether ``[start, end]`` and ``[other_start, other_end]`` are too close:
    each blocks up to its end plus ``buffer_s``. Symmetric; touching intervals
    conflict only if the buffer is positive."""
    return start < other_end + buffer_s and other_start < end + buffer_s


def open_slots(
    av: Availability,
    *,
    first_day: datetime.date,
    days: int,
    length_min: int,
    step_min: int,
    buffer_min: int,
    min_notice_s: float,
    now: float,
    busy: Sequence[tuple[float, float]],
) -> list[tuple[float, float]]:
    """The bookable ``(start, end)`` slots on ``days`` dates from ``first_day``
    (dates in ``av``'s zone), sorted by start, no duplicates.

    A slot is one of its date's window slots (see the module docstring),
    starts at or after ``now + min_notice_s``, and conflicts (with
    ``buffer_min`` minutes of buffer) with none of ``busy``. ``days`` 0 gives
    no slots; lengths and steps must be whole minutes >= 1 (``ValueError``).
    """
    _positive("days", days, 0)
    _positive("length_min", length_min)
    _positive("step_min", step_min)
    _positive("buffer_min", buffer_min, 0)
    buffer_s = buffer_min * 60
    earliest = now + min_notice_s
    busy_sorted = sorted(busy)
    found: set[tuple[float, float]] = set()
    for offset in range(days):
        for start, end in _day_slots(av, first_day + offset * _DAY, length_min, step_min):
            if start < earliest:
                continue
            if any(conflicts(start, end, bs, be, buffer_s) for bs, be in busy_sorted):
                continue
            found.add((start, end))
    return sorted(found)


def fits(av: Availability, start: float, length_min: int, step_min: int) -> bool:
    """Whether a booking of ``length_min`` minutes may start at ``start``: it is
    one of the slot starts of its date's windows (the date of ``start`` in
    ``av``'s zone), exactly as :func:`open_slots` makes them. Notice and busy
    are not looked at."""
    _positive("length_min", length_min)
    _positive("step_min", step_min)
    zone = av.zone
    wall = datetime.datetime.fromtimestamp(start, zone).replace(tzinfo=None)
    step = datetime.timedelta(minutes=step_min)
    day = wall.date()
    for window in av.windows_on(day):
        window_start = datetime.datetime.combine(day, window.start)
        end_wall = datetime.datetime.combine(day, window.end)
        if not window_start <= wall < end_wall or (wall - window_start) % step:
            continue
        slot = _slot_at(wall, zone, length_min * 60, _instant(end_wall, zone))
        return slot is not None and slot[0] == start
    return False


def weekly_series(start: float, tz: str, weeks: int) -> list[float]:
    """``weeks`` starts a week apart at the same wall-clock time in ``tz`` as
    ``start`` (the first is ``start`` itself): 09:00 London stays 09:00 London
    across a daylight-saving change, so the gap between two may be 7 days
    plus or minus the change.

    A week whose wall time does not exist (a gap) gets the instant zoneinfo
    gives it (the wall time read with the offset before the jump, i.e. later
    by the gap); it is then not a slot start and :func:`fits` refuses it. A
    wall time that exists twice keeps the occurrence ``start`` had.
    """
    _positive("weeks", weeks)
    zone = zoneinfo.ZoneInfo(tz)
    local = datetime.datetime.fromtimestamp(start, zone)
    wall = local.replace(tzinfo=None)
    series = [start]
    for k in range(1, weeks):
        series.append((wall + k * _WEEK).replace(tzinfo=zone, fold=local.fold).timestamp())
    return series
