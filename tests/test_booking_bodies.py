"""Scheduled care's bodies and queries (PROTOCOL.md §8): the pure parsers, and
arbitrary JSON in every field of ``POST /v1/bookings`` and of an availability
through the app: a 2xx or a 4xx, never a 5xx."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from core.errors import BadInput, InvalidField
from core.identity import mint
from dispatch.app import create_app
from dispatch.booking_bodies import (
    parse_booking,
    parse_instant,
    parse_range,
    parse_slot_query,
)
from dispatch.settings import load_settings
from schedule.model import BookingType

SECRET = "booking-bodies-secret-" + "q" * 40
NOW = dt.datetime(2026, 3, 9, 9, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-10T10:00:00Z", "2026-03-10T10:00:00+00:00"),
        ("2026-03-10T10:00Z", "2026-03-10T10:00:00+00:00"),
        ("2026-03-10t10:00:00.123456789z", "2026-03-10T10:00:00.123456+00:00"),
        ("2026-03-10T11:00:00+01:00", "2026-03-10T10:00:00+00:00"),
    ],
)
def test_instants_need_a_zone_and_are_read_as_utc(text: str, expected: str) -> None:
    got = dt.datetime.fromtimestamp(parse_instant(text, "start"), tz=dt.UTC)
    assert got.isoformat() == expected


@pytest.mark.parametrize(
    "bad",
    ["2026-03-10T10:00:00", "2026-03-10", "2026-02-30T10:00Z", "1999-12-31T23:00Z", 5, None, ""],
)
def test_bad_instants_are_invalid_fields(bad: object) -> None:
    with pytest.raises(InvalidField) as info:
        parse_instant(bad, "start")
    assert info.value.fields == {"field": "start"}


def test_a_booking_body() -> None:
    draft = parse_booking(
        {"therapist_id": "t1", "type": "session", "start": "2026-03-10T10:00Z", "repeat_weekly": 3}
    )
    assert (draft.therapist_id, draft.client_id, draft.type, draft.repeat_weekly) == (
        "t1",
        None,
        BookingType.SESSION,
        3,
    )
    with pytest.raises(BadInput):
        parse_booking([])
    for bad, field in (
        ({"type": "session", "start": "2026-03-10T10:00Z"}, "therapist_id"),
        ({"therapist_id": "t1", "start": "2026-03-10T10:00Z"}, "type"),
        ({"therapist_id": "t1", "type": "session"}, "start"),
        ({"therapist_id": "t1", "type": "session", "start": "x"}, "start"),
        (
            {"therapist_id": "t1", "type": "session", "start": "2026-03-10T10:00Z", "client_id": 1},
            "client_id",
        ),
        (
            {
                "therapist_id": "t1",
                "type": "session",
                "start": "2026-03-10T10:00Z",
                "repeat_weekly": True,
            },
            "repeat_weekly",
        ),
    ):
        with pytest.raises(InvalidField) as info:
            parse_booking(bad)
        assert info.value.fields["field"] == field


def test_slot_queries_and_ranges() -> None:
    q = parse_slot_query({})
    assert (q.type, q.first_day, q.days) == (BookingType.SESSION, None, 7)
    q = parse_slot_query({"type": "intro", "from": "2026-03-29", "days": "31"})
    assert (q.type, q.first_day, q.days) == (BookingType.INTRO, dt.date(2026, 3, 29), 31)
    lo, hi = parse_range({}, NOW)
    assert (NOW - lo, hi - lo) == (31 * 86400, 366 * 86400)
    lo, hi = parse_range({"from": "2026-03-01", "to": "2026-03-02T12:00:00Z"}, NOW)
    assert hi - lo == 36 * 3600
    for params in ({"from": "2026-03-02", "to": "2026-03-01"}, {"to": "2027-12-01"}):
        with pytest.raises(InvalidField):
            parse_range(params, NOW)


# -- any JSON through the app ----------------------------------------------------------

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
_PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _auth(role: str, sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(SECRET, role, sub)}"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    overrides = {
        "dev": True,
        "secret": SECRET,
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'dispatch.db'}",
        "http_rate_per_s": 10000.0,
        "http_rate_burst": 10000,
    }
    with TestClient(create_app(load_settings(overrides, env={}))) as c:
        profile = {"name": "T", "regions": ["GB-ENG"], "languages": ["en"]}
        assert (
            c.put("/v1/therapists/t1", json=profile, headers=_auth("operator", "op")).status_code
            == 201
        )
        yield c


BOOKING: dict[str, Any] = {"therapist_id": "t1", "type": "session", "start": "2030-01-07T10:00:00Z"}
AVAILABILITY: dict[str, Any] = {
    "timezone": "Europe/London",
    "weekly": [{"day": "mon", "start": "09:00", "end": "17:00"}],
    "overrides": [],
}


@_PROPERTY
@given(field=st.sampled_from([*BOOKING, "client_id", "repeat_weekly", "extra"]), value=_JSON)
def test_any_json_in_a_booking_is_a_4xx_never_a_5xx(
    client: TestClient, field: str, value: Any
) -> None:
    for role, sub in (("client", "c1"), ("operator", "op"), ("therapist", "t1")):
        r = client.post("/v1/bookings", json={**BOOKING, field: value}, headers=_auth(role, sub))
        assert r.status_code < 500, r.text
        assert r.status_code in (200, 201) or r.json()["error"]["code"]


@_PROPERTY
@given(field=st.sampled_from([*AVAILABILITY, "weekly_hours", "extra"]), value=_JSON)
def test_any_json_in_an_availability_is_a_4xx_never_a_5xx(
    client: TestClient, field: str, value: Any
) -> None:
    r = client.put(
        "/v1/therapists/t1/availability",
        json={**AVAILABILITY, field: value},
        headers=_auth("therapist", "t1"),
    )
    assert r.status_code < 500, r.text
    got = client.get("/v1/therapists/t1/availability", headers=_auth("client", "c1"))
    assert got.status_code == 200
    if r.status_code == 200:
        assert got.json() == r.json()  # an accepted one reads back whole
