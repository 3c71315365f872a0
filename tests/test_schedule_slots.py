"""Availability (``schedule.model``) and slots (``schedule.slots``), PROTOCOL.md §8.

Examples pin the wire shape, every refusal of ``parse_availability`` and the
slots of concrete days (London's 2026 daylight-saving changes, São Paulo's
midnight gap, Lord Howe's 30-minute change). Hypothesis properties check, over
zones with odd offsets and changes and over dates around those changes: every
slot lies inside one of its date's windows as real time (measured by brute
force, independently of the code under test), starts on the window's step in
wall clock, lasts exactly its length, respects notice and busy intervals, and
nothing bookable is left out; ``fits`` agrees with ``open_slots``; a weekly
series keeps its wall-clock time.
"""

from __future__ import annotations

import datetime
import functools
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import InvalidField
from schedule.model import (
    MAX_OVERRIDES,
    MAX_WEEKLY_WINDOWS,
    Availability,
    Override,
    WeeklyWindow,
    Window,
    parse_availability,
)
from schedule.slots import conflicts, fits, open_slots, weekly_series

UTC = datetime.UTC
ZONES = (
    "Europe/London",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "America/Sao_Paulo",
    "Asia/Kathmandu",
)
PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def T(h: int, m: int = 0) -> datetime.time:
    return datetime.time(h, m)


def D(text: str) -> datetime.date:
    return datetime.date.fromisoformat(text)


def at(text: str, tz: str) -> float:
    """Epoch of a naive ISO wall time in ``tz`` (first occurrence)."""
    return datetime.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


def london(day: str, *times: str) -> list[float]:
    return [at(f"{day}T{t}", "Europe/London") for t in times]


def utc(text: str) -> float:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def slots_of(av: Availability, day: str, **kw: Any) -> list[tuple[float, float]]:
    args: dict[str, Any] = {
        "days": 1,
        "length_min": 50,
        "step_min": 30,
        "buffer_min": 10,
        "min_notice_s": 0.0,
        "now": 0.0,
        "busy": [],
    }
    args.update(kw)
    return open_slots(av, first_day=D(day), **args)


def utc_hhmm(slots: list[tuple[float, float]]) -> list[tuple[str, str]]:
    return [
        (
            datetime.datetime.fromtimestamp(s, UTC).strftime("%H:%M"),
            datetime.datetime.fromtimestamp(e, UTC).strftime("%H:%M"),
        )
        for s, e in slots
    ]


def one_day(tz: str, day: str, *windows: tuple[str, str]) -> Availability:
    return parse_availability(
        {
            "timezone": tz,
            "overrides": [{"date": day, "slots": [{"start": s, "end": e} for s, e in windows]}],
        }
    )


# -- parse_availability / the wire shape -------------------------------------------

WIRE = {
    "timezone": "Europe/London",
    "weekly": [
        {"day": "wed", "start": "14:00", "end": "17:30"},
        {"day": "mon", "start": "13:00", "end": "17:00"},
        {"day": "mon", "start": "09:00", "end": "12:00"},
    ],
    "overrides": [
        {"date": "2026-12-25", "slots": []},
        {"date": "2026-12-24", "slots": [{"start": "09:00", "end": "10:00"}]},
    ],
}


def test_parse_normalises_and_round_trips() -> None:
    av = parse_availability(WIRE)
    assert av.timezone == "Europe/London"
    assert av.weekly == (
        WeeklyWindow(0, T(9), T(12)),
        WeeklyWindow(0, T(13), T(17)),
        WeeklyWindow(2, T(14), T(17, 30)),
    )
    assert av.overrides == (
        Override(D("2026-12-24"), (Window(T(9), T(10)),)),
        Override(D("2026-12-25"), ()),
    )
    assert av.weekly_hours == 10.5
    wire = av.to_wire()
    assert wire == {
        "timezone": "Europe/London",
        "weekly": [
            {"day": "mon", "start": "09:00", "end": "12:00"},
            {"day": "mon", "start": "13:00", "end": "17:00"},
            {"day": "wed", "start": "14:00", "end": "17:30"},
        ],
        "overrides": [
            {"date": "2026-12-24", "slots": [{"start": "09:00", "end": "10:00"}]},
            {"date": "2026-12-25", "slots": []},
        ],
        "weekly_hours": 10.5,
    }
    # A GET's answer (with weekly_hours) can be PUT back unchanged.
    assert parse_availability(wire) == av


def test_weekly_hours_counts_minutes_and_ignores_overrides() -> None:
    av = parse_availability(
        {
            "timezone": "Asia/Kolkata",
            "weekly": [{"day": "sun", "start": "00:00", "end": "00:59"}],
            "overrides": [{"date": "2026-01-04", "slots": [{"start": "00:00", "end": "23:59"}]}],
        }
    )
    assert av.weekly_hours == pytest.approx(59 / 60)
    assert av.weekly_hours < 1
    assert av.to_wire()["weekly_hours"] == 0.98


def test_empty_and_missing_lists() -> None:
    assert parse_availability({"timezone": "UTC"}) == Availability.empty("UTC")
    assert parse_availability({"timezone": "UTC", "weekly": None, "overrides": None}) == (
        Availability("UTC")
    )
    assert Availability.empty("UTC").weekly_hours == 0
    assert Availability.empty("UTC").to_wire() == {
        "timezone": "UTC",
        "weekly": [],
        "overrides": [],
        "weekly_hours": 0,
    }
    with pytest.raises(InvalidField):
        Availability.empty("Mars/Olympus_Mons")


def test_windows_on_prefers_the_override() -> None:
    av = parse_availability(WIRE)
    assert av.windows_on(D("2026-12-21")) == (Window(T(9), T(12)), Window(T(13), T(17)))
    assert av.windows_on(D("2026-12-22")) == ()
    assert av.windows_on(D("2026-12-23")) == (Window(T(14), T(17, 30)),)
    assert av.windows_on(D("2026-12-24")) == (Window(T(9), T(10)),)
    assert av.windows_on(D("2026-12-25")) == ()  # a Friday off


def _with(**changes: Any) -> dict[str, Any]:
    return {"timezone": "Europe/London", "weekly": [], "overrides": [], **changes}


def _window(start: str, end: str) -> dict[str, str]:
    return {"start": start, "end": end}


def _weekly(day: Any = "mon", start: Any = "09:00", end: Any = "10:00") -> dict[str, Any]:
    return {"day": day, "start": start, "end": end}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ("x", "body"),
        ({"weekly": []}, "timezone"),
        (_with(timezone="Mars/Base"), "timezone"),
        (_with(timezone="localtime"), "timezone"),
        (_with(timezone="../../etc/passwd"), "timezone"),
        (_with(timezone=""), "timezone"),
        (_with(timezone=3), "timezone"),
        (_with(extra=1), "body"),
        (_with(weekly={}), "weekly"),
        (_with(weekly=["mon"]), "weekly[0]"),
        (_with(weekly=[_weekly(day="monday")]), "weekly[0].day"),
        (_with(weekly=[_weekly(day=0)]), "weekly[0].day"),
        (_with(weekly=[_weekly(start="9:00")]), "weekly[0].start"),
        (_with(weekly=[_weekly(start="09:00:00")]), "weekly[0].start"),
        (_with(weekly=[_weekly(start="24:00")]), "weekly[0].start"),
        (_with(weekly=[_weekly(end="24:00")]), "weekly[0].end"),
        (_with(weekly=[_weekly(end="10:60")]), "weekly[0].end"),
        (_with(weekly=[_weekly(end=" 10:00")]), "weekly[0].end"),
        (_with(weekly=[_weekly(end="\uff11\uff10:\uff10\uff10")]), "weekly[0].end"),
        (_with(weekly=[_weekly(end=1000)]), "weekly[0].end"),
        (_with(weekly=[_weekly(end="09:00")]), "weekly[0].end"),
        (_with(weekly=[_weekly(start="10:00", end="09:00")]), "weekly[0].end"),
        (_with(weekly=[{"day": "mon", "start": "09:00"}]), "weekly[0]"),
        (_with(weekly=[{**_weekly(), "note": "x"}]), "weekly[0]"),
        (_with(weekly=[_weekly(), _weekly(start="09:59", end="11:00")]), "weekly"),
        (_with(weekly=[_weekly(start="08:00", end="12:00"), _weekly()]), "weekly"),
        (_with(weekly=[_weekly()] * 2), "weekly"),
        (_with(weekly=[_weekly()] * (MAX_WEEKLY_WINDOWS + 1)), "weekly"),
        (_with(overrides=[{"date": "2026-02-30", "slots": []}]), "overrides[0].date"),
        (_with(overrides=[{"date": "20260101", "slots": []}]), "overrides[0].date"),
        (_with(overrides=[{"date": "2026-1-01", "slots": []}]), "overrides[0].date"),
        (_with(overrides=[{"slots": []}]), "overrides[0].date"),
        (_with(overrides=[{"date": "2026-01-01", "slots": {}}]), "overrides[0].slots"),
        (
            _with(
                overrides=[{"date": "2026-01-01", "slots": [{"start": "10:00", "end": "09:00"}]}]
            ),
            "overrides[0].slots[0].end",
        ),
        (
            _with(
                overrides=[
                    {
                        "date": "2026-01-01",
                        "slots": [
                            {"start": "10:00", "end": "12:00"},
                            {"start": "09:00", "end": "10:30"},
                        ],
                    }
                ]
            ),
            "overrides[0].slots",
        ),
        (
            _with(overrides=[{"date": "2026-01-01"}, {"date": "2026-01-01", "slots": []}]),
            "overrides[1].date",
        ),
        (
            _with(
                overrides=[{"date": f"2026-01-{i % 28 + 1:02d}"} for i in range(MAX_OVERRIDES + 1)]
            ),
            "overrides",
        ),
    ],
)
def test_parse_refuses_with_the_field(body: Any, field: str) -> None:
    with pytest.raises(InvalidField) as caught:
        parse_availability(body)
    assert caught.value.fields == {"field": field}
    assert caught.value.status == 422
    # Messages name the field, never echo the value.
    assert "passwd" not in caught.value.message


def test_touching_windows_are_not_overlapping() -> None:
    av = parse_availability(
        _with(weekly=[_weekly(start="10:00", end="11:00"), _weekly(start="09:00", end="10:00")])
    )
    assert [w.start for w in av.weekly] == [T(9), T(10)]
    # The same times on different days never overlap.
    parse_availability(_with(weekly=[_weekly(day=d) for d in ("mon", "tue", "sun")]))


def test_limits_are_inclusive() -> None:
    weekly = [
        _weekly(day=d, start=f"{h:02d}:00", end=f"{h:02d}:30")
        for d in ("mon", "tue", "wed")
        for h in range(24)
    ][:MAX_WEEKLY_WINDOWS]
    assert len(parse_availability(_with(weekly=weekly)).weekly) == MAX_WEEKLY_WINDOWS
    first = D("2026-01-01")
    overrides = [
        {"date": (first + datetime.timedelta(days=i)).isoformat()} for i in range(MAX_OVERRIDES)
    ]
    assert len(parse_availability(_with(overrides=overrides)).overrides) == MAX_OVERRIDES


def test_override_dates_within_two_years_of_today() -> None:
    today = D("2026-05-01")

    def body(day: str) -> dict[str, Any]:
        return _with(overrides=[{"date": day, "slots": []}])

    for day in ("2026-05-01", "2028-05-01", "2024-05-01"):
        parse_availability(body(day), today=today)
    for day in ("2028-05-03", "2024-04-29", "9999-12-31"):
        with pytest.raises(InvalidField) as caught:
            parse_availability(body(day), today=today)
        assert caught.value.fields == {"field": "overrides[0].date"}
    # Stored data is read back without a today: no distance check.
    parse_availability(body("9999-12-31"))


def test_value_types_refuse_bad_construction() -> None:
    with pytest.raises(ValueError):
        Window(T(10), T(10))
    with pytest.raises(ValueError):
        Window(datetime.time(9, 0, 30), T(10))
    with pytest.raises(ValueError):
        WeeklyWindow(7, T(9), T(10))
    with pytest.raises(ValueError):
        WeeklyWindow(0, T(11), T(10))


# -- conflicts -------------------------------------------------------------------


def test_conflicts_with_buffer() -> None:
    # A booking blocks [start, end + buffer): 10:00-10:50 with 10 min blocks to 11:00.
    b = (utc("2026-06-01T10:00"), utc("2026-06-01T10:50"))
    assert conflicts(utc("2026-06-01T11:00"), utc("2026-06-01T11:50"), *b, 600) is False
    assert conflicts(utc("2026-06-01T10:59"), utc("2026-06-01T11:49"), *b, 600) is True
    assert conflicts(utc("2026-06-01T09:00"), utc("2026-06-01T09:50"), *b, 600) is False
    assert conflicts(utc("2026-06-01T09:01"), utc("2026-06-01T09:51"), *b, 600) is True
    # No buffer: touching intervals do not conflict; identical ones do.
    assert conflicts(utc("2026-06-01T10:50"), utc("2026-06-01T11:00"), *b, 0) is False
    assert conflicts(*b, *b, 0) is True


@PROPS
@given(
    st.integers(0, 10_000),
    st.integers(1, 500),
    st.integers(0, 10_000),
    st.integers(1, 500),
    st.integers(0, 100),
)
def test_conflicts_is_symmetric_and_means_blocked_ranges_overlap(
    s: int, n: int, os_: int, on: int, buf: int
) -> None:
    got = conflicts(s, s + n, os_, os_ + on, buf)
    assert got == conflicts(os_, os_ + on, s, s + n, buf)
    # Integer grid: [s, s+n+buf) and [os, os+on+buf) share a point.
    assert got == bool(set(range(s, s + n + buf)) & set(range(os_, os_ + on + buf)))


# -- open_slots: concrete days -----------------------------------------------------------

MONDAY = parse_availability(_with(weekly=[_weekly(start="09:00", end="12:00")]))


def test_an_ordinary_morning() -> None:
    # 2026-06-01 is a Monday; London is on BST (UTC+1).
    got = slots_of(MONDAY, "2026-06-01")
    assert utc_hhmm(got) == [
        ("08:00", "08:50"),
        ("08:30", "09:20"),
        ("09:00", "09:50"),
        ("09:30", "10:20"),
        ("10:00", "10:50"),
    ]
    assert slots_of(MONDAY, "2026-06-02") == []
    assert slots_of(MONDAY, "2026-06-01", days=0) == []
    week = slots_of(MONDAY, "2026-05-27", days=7)
    assert week == got


def test_busy_and_buffer_remove_slots() -> None:
    busy = [(at("2026-06-01T10:00", "Europe/London"), at("2026-06-01T10:50", "Europe/London"))]
    got = slots_of(MONDAY, "2026-06-01", busy=busy)
    assert utc_hhmm(got) == [("08:00", "08:50"), ("10:00", "10:50")]  # 09:00 and 11:00 London
    # Without a buffer 09:00-09:50 and 11:00 still fit, 09:30 and 10:30 do not.
    got = slots_of(MONDAY, "2026-06-01", busy=busy, buffer_min=0)
    assert utc_hhmm(got) == [("08:00", "08:50"), ("10:00", "10:50")]
    got = slots_of(MONDAY, "2026-06-01", busy=busy, buffer_min=0, step_min=10)
    assert [s for s, _ in got] == [
        at(f"2026-06-01T{t}", "Europe/London")
        for t in ("09:00", "09:10", "10:50", "11:00", "11:10")
    ]


def test_min_notice() -> None:
    now = at("2026-06-01T08:15", "Europe/London")
    got = slots_of(MONDAY, "2026-06-01", now=now, min_notice_s=2 * 3600)
    assert [s for s, _ in got] == [
        at(f"2026-06-01T{t}", "Europe/London") for t in ("10:30", "11:00")
    ]
    exact = at("2026-06-01T10:30", "Europe/London")
    assert slots_of(MONDAY, "2026-06-01", now=exact, min_notice_s=0)[0][0] == exact


def test_overrides_replace_the_week() -> None:
    av = parse_availability(
        _with(
            weekly=[_weekly(start="09:00", end="12:00")],
            overrides=[
                {"date": "2026-06-01", "slots": []},
                {"date": "2026-06-02", "slots": [{"start": "18:00", "end": "19:00"}]},
            ],
        )
    )
    assert slots_of(av, "2026-06-01") == []
    assert slots_of(av, "2026-06-02") == [
        (at("2026-06-02T18:00", "Europe/London"), at("2026-06-02T18:50", "Europe/London"))
    ]
    assert len(slots_of(av, "2026-06-08")) == 5


def test_london_spring_forward_2026_03_29() -> None:
    # 01:00 GMT the clocks jump to 02:00 BST: wall 01:00-01:59 does not exist,
    # and the window 00:00-03:00 is two real hours (00:00Z-02:00Z).
    av = one_day("Europe/London", "2026-03-29", ("00:00", "03:00"))
    assert utc_hhmm(slots_of(av, "2026-03-29")) == [
        ("00:00", "00:50"),
        ("00:30", "01:20"),  # 00:30 GMT to 02:20 BST: 50 real minutes
        ("01:00", "01:50"),  # 02:00 BST
    ]
    # A window ending inside the gap ends when the clocks jump (01:00Z).
    av = one_day("Europe/London", "2026-03-29", ("00:00", "01:30"))
    assert utc_hhmm(slots_of(av, "2026-03-29", step_min=10)) == [
        ("00:00", "00:50"),
        ("00:10", "01:00"),
    ]
    # A window starting inside the gap starts at 02:00 BST.
    av = one_day("Europe/London", "2026-03-29", ("01:30", "04:00"))
    assert utc_hhmm(slots_of(av, "2026-03-29")) == [
        ("01:00", "01:50"),
        ("01:30", "02:20"),
        ("02:00", "02:50"),
    ]
    # An ordinary day-time window is just shifted by the new offset.
    av = one_day("Europe/London", "2026-03-29", ("09:00", "10:00"))
    assert utc_hhmm(slots_of(av, "2026-03-29")) == [("08:00", "08:50")]


def test_london_fall_back_2026_10_25() -> None:
    # 02:00 BST the clocks go back to 01:00 GMT: wall 01:00-01:59 happens twice;
    # the window 00:00-03:00 is four real hours (23:00Z-03:00Z). A start that
    # exists twice is taken once, at its first occurrence.
    av = one_day("Europe/London", "2026-10-25", ("00:00", "03:00"))
    assert utc_hhmm(slots_of(av, "2026-10-25")) == [
        ("23:00", "23:50"),
        ("23:30", "00:20"),
        ("00:00", "00:50"),  # 01:00 BST
        ("00:30", "01:20"),  # 01:30 BST to 01:20 GMT: 50 real minutes
        ("02:00", "02:50"),  # 02:00 GMT
    ]
    # A window ending at an ambiguous time ends at its first occurrence.
    av = one_day("Europe/London", "2026-10-25", ("00:00", "01:30"))
    assert utc_hhmm(slots_of(av, "2026-10-25")) == [("23:00", "23:50"), ("23:30", "00:20")]


def test_sao_paulo_midnight_gap_2018_11_04() -> None:
    # Brazil's old DST began at midnight: 00:00-00:59 did not exist that day.
    av = one_day("America/Sao_Paulo", "2018-11-04", ("00:00", "02:00"))
    assert utc_hhmm(slots_of(av, "2018-11-04")) == [("03:00", "03:50")]  # 01:00 -02


def test_lord_howe_half_hour_change_2026_10_04() -> None:
    # 02:00 +10:30 becomes 02:30 +11: only half an hour is skipped.
    av = one_day("Australia/Lord_Howe", "2026-10-04", ("01:00", "04:00"))
    assert utc_hhmm(slots_of(av, "2026-10-04")) == [
        ("14:30", "15:20"),  # 01:00 +10:30
        ("15:00", "15:50"),  # 01:30 +10:30
        ("15:30", "16:20"),  # 02:30 +11 (02:00 does not exist)
        ("16:00", "16:50"),  # 03:00 +11; 03:30 would end at 04:20
    ]


def test_parameters_are_checked() -> None:
    for bad in ({"length_min": 0}, {"step_min": 0}, {"buffer_min": -1}, {"days": -1}):
        with pytest.raises(ValueError):
            slots_of(MONDAY, "2026-06-01", **bad)
    with pytest.raises(ValueError):
        weekly_series(0.0, "UTC", 0)


# -- fits and weekly_series: concrete ---------------------------------------------------


def test_fits_examples() -> None:
    london = "Europe/London"
    assert fits(MONDAY, at("2026-06-01T09:00", london), 50, 30)
    assert fits(MONDAY, at("2026-06-01T11:00", london), 50, 30)
    assert not fits(MONDAY, at("2026-06-01T11:30", london), 50, 30)  # ends after 12:00
    assert not fits(MONDAY, at("2026-06-01T09:10", london), 50, 30)  # off the step
    assert fits(MONDAY, at("2026-06-01T09:10", london), 50, 10)
    assert not fits(MONDAY, at("2026-06-01T09:00", london) + 1, 50, 30)
    assert not fits(MONDAY, at("2026-06-02T09:00", london), 50, 30)  # a Tuesday
    assert not fits(MONDAY, at("2026-06-01T08:30", london), 50, 30)
    assert fits(MONDAY, at("2026-06-01T11:00", london), 60, 30)
    assert not fits(MONDAY, at("2026-06-01T11:00", london), 61, 30)
    fall = one_day(london, "2026-10-25", ("00:00", "03:00"))
    assert fits(fall, utc("2026-10-25T00:30"), 50, 30)  # 01:30 BST
    assert not fits(fall, utc("2026-10-25T01:30"), 50, 30)  # 01:30 GMT, the second one
    with pytest.raises(ValueError):
        fits(MONDAY, 0.0, 0, 30)


def test_weekly_series_keeps_the_wall_clock_across_dst() -> None:
    london = "Europe/London"
    start = at("2026-03-16T09:00", london)
    series = weekly_series(start, london, 4)
    assert series[0] == start
    assert [datetime.datetime.fromtimestamp(s, ZoneInfo(london)).isoformat() for s in series] == [
        "2026-03-16T09:00:00+00:00",
        "2026-03-23T09:00:00+00:00",
        "2026-03-30T09:00:00+01:00",
        "2026-04-06T09:00:00+01:00",
    ]
    assert series[2] - series[1] == 7 * 86400 - 3600
    assert weekly_series(start, london, 1) == [start]
    # New York changes two weeks earlier: a London booking seen from there moves.
    ny = weekly_series(at("2026-03-02T10:00", "America/New_York"), "America/New_York", 2)
    assert ny[1] - ny[0] == 7 * 86400 - 3600


def test_weekly_series_into_a_gap_is_not_a_slot() -> None:
    london = "Europe/London"
    start = at("2026-03-22T01:30", london)
    series = weekly_series(start, london, 2)
    # 01:30 on 2026-03-29 does not exist: the instant is read with GMT (02:30 BST).
    assert series[1] == utc("2026-03-29T01:30")
    av = parse_availability(_with(weekly=[_weekly(day="sun", start="01:00", end="03:00")]))
    assert fits(av, series[0], 50, 30)
    assert not fits(av, series[1], 50, 30)


# -- properties ---------------------------------------------------------------------


@functools.cache
def _changes(tz: str) -> tuple[datetime.date, ...]:
    """Local dates 2017..2027 on which ``tz``'s offset changes."""
    zone = ZoneInfo(tz)
    found = []
    day = datetime.date(2017, 1, 1)
    while day.year < 2028:
        noon = datetime.datetime.combine(day, T(12)).replace(tzinfo=zone)
        if noon.utcoffset() != (noon + datetime.timedelta(days=1)).utcoffset():
            found.extend([day, day + datetime.timedelta(days=1)])
        day += datetime.timedelta(days=1)
    return tuple(found)


@st.composite
def day_windows(draw: st.DrawFn) -> list[tuple[datetime.time, datetime.time]]:
    """Non-overlapping windows in one day (possibly touching, possibly none)."""
    bounds = sorted(draw(st.sets(st.integers(0, 23 * 60 + 59), max_size=6)))
    windows = []
    for start, end in zip(bounds[::2], bounds[1::2], strict=False):
        windows.append((T(*divmod(start, 60)), T(*divmod(end, 60))))
    return windows


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Availability, datetime.date, int]:
    tz = draw(st.sampled_from(ZONES))
    changes = _changes(tz)
    if changes and draw(st.booleans()):
        around = draw(st.sampled_from(changes))
        first = around - datetime.timedelta(days=draw(st.integers(0, 2)))
    else:
        first = draw(st.dates(datetime.date(2017, 1, 1), datetime.date(2027, 12, 1)))
    days = draw(st.integers(1, 4))
    weekly = [
        {"day": d, "start": f"{s:%H:%M}", "end": f"{e:%H:%M}"}
        for d in draw(st.sets(st.sampled_from(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))))
        for s, e in draw(day_windows())
    ]
    overrides = []
    for offset in draw(st.sets(st.integers(0, days - 1), max_size=days)):
        slots = [{"start": f"{s:%H:%M}", "end": f"{e:%H:%M}"} for s, e in draw(day_windows())]
        overrides.append(
            {"date": (first + datetime.timedelta(days=offset)).isoformat(), "slots": slots}
        )
    av = parse_availability({"timezone": tz, "weekly": weekly, "overrides": overrides})
    return av, first, days


def _wall(ts: float, zone: ZoneInfo) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, zone).replace(tzinfo=None)


@functools.lru_cache(maxsize=8192)
def _first_instant_at_or_after(wall: datetime.datetime, tz: str) -> float:
    """Brute force, independent of the code under test: the first instant (a
    whole minute) whose wall clock in ``tz`` is ``>= wall``, found by walking
    minute by minute from three hours before any reading of ``wall`` (no
    clock ever goes back three hours)."""
    zone = ZoneInfo(tz)
    t = int(wall.replace(tzinfo=zone).timestamp()) - 3 * 3600
    assert _wall(t, zone) < wall
    while _wall(t, zone) < wall:
        t += 60
    return float(t)


def _span(day: datetime.date, window: Window, tz: str) -> tuple[float, float]:
    """The window as real time: from the first instant showing its start to the
    first instant showing its end."""
    return (
        _first_instant_at_or_after(datetime.datetime.combine(day, window.start), tz),
        _first_instant_at_or_after(datetime.datetime.combine(day, window.end), tz),
    )


def _candidates(av: Availability, first: datetime.date, days: int, length: int, step: int) -> Any:
    """Every (day, window, start) a slot could have: first occurrences of
    existing wall times on the step, inside the window as real time."""
    zone = av.zone
    for offset in range(days):
        day = first + datetime.timedelta(days=offset)
        for window in av.windows_on(day):
            lo, hi = _span(day, window, av.timezone)
            wall = datetime.datetime.combine(day, window.start)
            while wall < datetime.datetime.combine(day, window.end):
                start = _first_instant_at_or_after(wall, av.timezone)
                if _wall(start, zone) == wall and lo <= start and start + length * 60 <= hi:
                    yield day, window, start
                wall += datetime.timedelta(minutes=step)


@PROPS
@given(
    scenarios(),
    st.sampled_from((15, 30, 50, 60, 90)),
    st.sampled_from((10, 15, 30, 45)),
    st.integers(0, 30),
    st.integers(0, 6 * 3600),
    st.integers(-36 * 3600, 96 * 3600),
    st.lists(st.tuples(st.integers(-48, 120), st.integers(5, 180)), max_size=6),
)
def test_open_slots_properties(
    scenario: tuple[Availability, datetime.date, int],
    length: int,
    step: int,
    buffer_min: int,
    notice: int,
    now_offset: int,
    busy_spec: list[tuple[int, int]],
) -> None:
    av, first, days = scenario
    base = datetime.datetime.combine(first, T(0)).replace(tzinfo=UTC).timestamp()
    now = base + now_offset
    busy = [(base + h * 1800, base + h * 1800 + m * 60) for h, m in busy_spec]
    got = open_slots(
        av,
        first_day=first,
        days=days,
        length_min=length,
        step_min=step,
        buffer_min=buffer_min,
        min_notice_s=notice,
        now=now,
        busy=busy,
    )
    zone = av.zone
    last = first + datetime.timedelta(days=days - 1)

    # Sorted, unique, exact real lengths, notice and busy respected.
    starts = [s for s, _ in got]
    assert starts == sorted(set(starts))
    for start, end in got:
        assert end - start == length * 60
        assert start >= now + notice
        assert not any(conflicts(start, end, bs, be, buffer_min * 60) for bs, be in busy)
        # Inside one of its date's windows, as real time; on the step in wall clock;
        # the first occurrence of its wall time.
        local = datetime.datetime.fromtimestamp(start, zone)
        assert first <= local.date() <= last
        assert _first_instant_at_or_after(local.replace(tzinfo=None), av.timezone) == start
        inside = [
            w
            for w in av.windows_on(local.date())
            if _span(local.date(), w, av.timezone)[0] <= start
            and end <= _span(local.date(), w, av.timezone)[1]
        ]
        assert len(inside) == 1
        offset = datetime.datetime.combine(local.date(), inside[0].start)
        assert (local.replace(tzinfo=None) - offset) % datetime.timedelta(minutes=step) == (
            datetime.timedelta(0)
        )

    # Nothing bookable is left out.
    expected = sorted(
        (start, start + length * 60)
        for _, _, start in _candidates(av, first, days, length, step)
        if start >= now + notice
        and not any(
            conflicts(start, start + length * 60, bs, be, buffer_min * 60) for bs, be in busy
        )
    )
    assert got == expected


@PROPS
@given(
    scenarios(),
    st.sampled_from((15, 30, 50, 60)),
    st.sampled_from((10, 15, 30)),
    st.lists(st.integers(-26 * 60, 5 * 24 * 60), max_size=20),
)
def test_fits_agrees_with_open_slots(
    scenario: tuple[Availability, datetime.date, int],
    length: int,
    step: int,
    probes: list[int],
) -> None:
    av, first, days = scenario
    # Whole days either side, so that probes near the ends see their full date.
    wide_first = first - datetime.timedelta(days=2)
    every = open_slots(
        av,
        first_day=wide_first,
        days=days + 8,
        length_min=length,
        step_min=step,
        buffer_min=0,
        min_notice_s=0,
        now=0,
        busy=[],
    )
    starts = {s for s, _ in every}
    for start in starts:
        assert fits(av, start, length, step)
    base = datetime.datetime.combine(first, T(0)).replace(tzinfo=UTC).timestamp()
    for minutes in probes:
        probe = base + minutes * 60
        assert fits(av, probe, length, step) == (probe in starts)
        assert not fits(av, probe + 0.5, length, step)


@PROPS
@given(
    st.sampled_from(ZONES),
    st.integers(
        int(datetime.datetime(2017, 1, 1, tzinfo=UTC).timestamp()) // 60,
        int(datetime.datetime(2027, 1, 1, tzinfo=UTC).timestamp()) // 60,
    ),
    st.integers(1, 12),
)
def test_weekly_series_properties(tz: str, minute: int, weeks: int) -> None:
    zone = ZoneInfo(tz)
    start = float(minute * 60)
    series = weekly_series(start, tz, weeks)
    assert len(series) == weeks
    assert series[0] == start
    wall = _wall(start, zone)
    for k, ts in enumerate(series):
        want = wall + datetime.timedelta(weeks=k)
        got = _wall(ts, zone)
        if _wall(_first_instant_at_or_after(want, tz), zone) != want:
            # ``want`` falls in a gap: no instant shows it; the series moves
            # past it by the size of the gap.
            assert got > want
        else:
            assert got == want
        if k:
            # A week apart, give or take the offset changes in between (< 3 h).
            assert abs(ts - series[k - 1] - 7 * 86400) < 3 * 3600
    assert series == sorted(series)
