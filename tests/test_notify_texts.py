"""notify.texts: who gets a text about a waiting request, as pure functions (no I/O)."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notify.texts import (
    Candidate,
    QuietHours,
    TextContact,
    check_timezone,
    is_quiet,
    recipients,
    text_body,
)
from pool.model import Request, State, TherapistProfile

T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z
DELAY, COOLDOWN, CAP = 30.0, 600.0, 25


def request(**changes: object) -> Request:
    base = Request(
        id="r1",
        client_id="c1",
        region="GB-ENG",
        language="en",
        topics=("anxiety",),
        notes="private",
        age=None,
        guardian_consent=False,
        created_at=T0,
        state=State.WAITING,
    )
    return base.replace(**changes)


def cand(tid: str, **contact: object) -> Candidate:
    busy = bool(contact.pop("busy", False))
    watching = bool(contact.pop("watching", False))
    paused = bool(contact.pop("paused_for_client", False))
    profile_changes = contact.pop("profile", {})
    assert isinstance(profile_changes, dict)
    fields_of_profile: dict[str, object] = {
        "regions": ("GB-ENG",),
        "languages": ("en",),
        "topics": ("anxiety",),
        **profile_changes,
    }
    profile = TherapistProfile(id=tid, name=f"Dr {tid}", **fields_of_profile)  # type: ignore[arg-type]
    fields: dict[str, object] = {"phone": "+447700900123", "sms_opt_in": True, **contact}
    return Candidate(
        profile=profile,
        contact=TextContact(therapist_id=tid, **fields),  # type: ignore[arg-type]
        busy=busy,
        watching=watching,
        paused_for_client=paused,
    )


def pick(cands: list[Candidate], now: float = T0 + DELAY, **kw: object) -> list[str]:
    options: dict[str, object] = {
        "delay_s": DELAY,
        "cooldown_s": COOLDOWN,
        "max_per_request": CAP,
        **kw,
    }
    return recipients(request(), cands, now, **options)  # type: ignore[arg-type]


def test_the_body_names_no_client_detail() -> None:
    assert text_body("https://care.example.com/") == (
        "Someone is waiting on quick connect. Open your console: https://care.example.com/console"
    )


def test_nobody_before_the_delay_and_everyone_eligible_at_it() -> None:
    cands = [cand("t1"), cand("t2")]
    assert pick(cands, now=T0 + DELAY - 0.001) == []
    assert pick(cands, now=T0 + DELAY) == ["t1", "t2"]


@pytest.mark.parametrize("state", [State.CLAIMED, State.MATCHED, State.CANCELLED, State.EXPIRED])
def test_a_request_no_longer_waiting_sends_none(state: State) -> None:
    assert (
        recipients(
            request(state=state), [cand("t1")], T0 + 99, delay_s=0, cooldown_s=0, max_per_request=9
        )
        == []
    )


@pytest.mark.parametrize(
    ("what", "changes"),
    [
        ("no phone", {"phone": None}),
        ("not opted in", {"sms_opt_in": False}),
        ("phone refused before", {"phone_failed": True}),
        ("busy (claim or session)", {"busy": True}),
        ("an available console open", {"watching": True}),
        ("paused for this new client", {"paused_for_client": True}),
        ("texted 599 s ago", {"last_texted_at": T0 + DELAY - 599}),
        ("another region", {"profile": {"regions": ("US-CA",)}}),
        ("declined by this client", {"profile": {}}),
    ],
)
def test_who_gets_no_text(what: str, changes: dict[str, object]) -> None:
    c = cand("t1", **changes)
    req = request(declined=frozenset({"t1"})) if what.startswith("declined") else request()
    got = recipients(
        req, [c, cand("t2")], T0 + DELAY, delay_s=DELAY, cooldown_s=COOLDOWN, max_per_request=CAP
    )
    assert got == ["t2"], what


def test_the_cooldown_ends_exactly() -> None:
    c = cand("t1", last_texted_at=T0 + DELAY - COOLDOWN)
    assert pick([c]) == ["t1"]


def test_order_longest_since_last_text_first_then_id_and_the_cap() -> None:
    cands = [
        cand("t-recent", last_texted_at=T0 - 700),
        cand("t-b"),
        cand("t-old", last_texted_at=T0 - 90_000),
        cand("t-a"),
    ]
    assert pick(cands) == ["t-a", "t-b", "t-old", "t-recent"]
    assert pick(cands, max_per_request=2) == ["t-a", "t-b"]
    # Already texted about this request: never again, and they use up the cap.
    assert pick(cands, max_per_request=3, already={"t-a", "t-b"}) == ["t-old"]
    assert pick(cands, max_per_request=2, already={"t-a", "t-b"}) == []


# -- quiet hours ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["22:00-07:00", "00:00-23:59", "09:30-09:31", "23:59-00:00"])
def test_quiet_hours_round_trip(text: str) -> None:
    assert str(QuietHours.parse(text)) == text


@pytest.mark.parametrize(
    "text", ["", "22:00", "22:00-22:00", "24:00-07:00", "7:00-08:00", "22:60-07:00", "a-b", "1-2-3"]
)
def test_quiet_hours_refused(text: str) -> None:
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        QuietHours.parse(text)


def _at(zone: str, *local: int) -> float:
    return dt.datetime(*local, tzinfo=zoneinfo.ZoneInfo(zone)).timestamp()  # type: ignore[misc]


def test_quiet_hours_across_midnight_in_the_therapists_zone() -> None:
    q = QuietHours.parse("22:00-07:00")
    zone = "America/New_York"
    assert is_quiet(q, zone, _at(zone, 2026, 1, 10, 23, 30))
    assert is_quiet(q, zone, _at(zone, 2026, 1, 11, 6, 59))
    assert not is_quiet(q, zone, _at(zone, 2026, 1, 11, 7, 0))
    assert not is_quiet(q, zone, _at(zone, 2026, 1, 10, 21, 59))
    # The same instant is 04:30 in London: quiet there too, by London's clock.
    assert is_quiet(q, "Europe/London", _at(zone, 2026, 1, 10, 23, 30))
    assert not is_quiet(None, zone, _at(zone, 2026, 1, 10, 23, 30))


def test_quiet_hours_follow_daylight_saving() -> None:
    """London: 01:00 UTC is 01:00 local in winter and 02:00 local in summer."""
    q = QuietHours.parse("01:30-02:30")
    winter = dt.datetime(2026, 1, 15, 1, 0, tzinfo=dt.UTC).timestamp()
    summer = dt.datetime(2026, 7, 15, 1, 0, tzinfo=dt.UTC).timestamp()
    assert not is_quiet(q, "Europe/London", winter)
    assert is_quiet(q, "Europe/London", summer)
    # The night the clocks go forward (29 March 2026, 01:00 -> 02:00): 01:59 UTC
    # is 02:59 local, past the quiet hours.
    jump = dt.datetime(2026, 3, 29, 1, 59, tzinfo=dt.UTC).timestamp()
    assert not is_quiet(q, "Europe/London", jump)


def test_a_quiet_therapist_is_skipped_and_others_texted() -> None:
    zone = "Europe/London"
    now = _at(zone, 2026, 5, 28, 23, 0)
    quiet = cand("t-night", timezone=zone, quiet_hours=QuietHours.parse("22:00-07:00"))
    other = cand("t-day", timezone="Asia/Tokyo", quiet_hours=QuietHours.parse("22:00-07:00"))
    got = recipients(
        request(created_at=now - DELAY),
        [quiet, other],
        now,
        delay_s=DELAY,
        cooldown_s=COOLDOWN,
        max_per_request=CAP,
    )
    assert got == ["t-day"]  # 07:00 the next morning in Tokyo: awake


def test_check_timezone() -> None:
    assert check_timezone("Europe/London").key == "Europe/London"
    for bad in ("", "Mars/Olympus", "../etc/passwd", "Europe/London\x00"):
        with pytest.raises(ValueError, match="IANA"):
            check_timezone(bad)


@given(
    start=st.integers(0, 1439),
    end=st.integers(0, 1439),
    minute=st.integers(0, 1439),
)
def test_quiet_hours_cover_exactly_their_minutes(start: int, end: int, minute: int) -> None:
    if start == end:
        return
    q = QuietHours(start, end)
    length = (end - start) % 1440
    assert q.covers(minute) == ((minute - start) % 1440 < length)


@given(
    lasts=st.lists(st.one_of(st.none(), st.floats(T0 - 10**6, T0)), min_size=0, max_size=30),
    cap=st.integers(0, 40),
)
def test_the_cap_and_the_order_hold_for_any_crowd(lasts: list[float | None], cap: int) -> None:
    cands = [cand(f"t{i:02d}", last_texted_at=last) for i, last in enumerate(lasts)]
    got = pick(cands, max_per_request=cap)
    assert len(got) <= cap and len(set(got)) == len(got)
    eligible = [
        c.contact
        for c in cands
        if c.contact.last_texted_at is None or T0 + DELAY - c.contact.last_texted_at >= COOLDOWN
    ]
    assert len(got) == min(cap, len(eligible))
    order = {c.therapist_id: c for c in eligible}
    keys = [(order[t].last_texted_at is not None, order[t].last_texted_at or 0.0, t) for t in got]
    assert keys == sorted(keys)
