"""The billing arithmetic and payout dates of ``wallet.billing`` (PROTOCOL.md §6).

Examples pin the protocol's numbers; hypothesis properties check the
invariants the ledger relies on: per-started-minute billing is exactly
``ceil(s / 60)``, a split never creates or loses a minor unit, a charge never
exceeds the balance, the funds timers agree with the final charge, and a
payout is always the Friday of the week after the invoice's (local) week,
across DST changes and year boundaries.
"""

from __future__ import annotations

import datetime
import math
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from wallet.billing import (
    MINUTE_S,
    FundsPlan,
    affordable_minutes,
    billable_minutes,
    charge_minor,
    final_charge,
    funds_plan,
    min_balance_minor,
    payout_date,
    split,
)

LONDON = ZoneInfo("Europe/London")
UTC = datetime.UTC

# Live durations up to a year; epoch instants up to 2100; money up to 10^9 minor units.
durations = st.floats(min_value=0, max_value=366 * 86400, allow_nan=False)
instants = st.floats(min_value=0, max_value=4.2e9, allow_nan=False)
balances = st.integers(min_value=0, max_value=10**9)
prices = st.integers(min_value=1, max_value=10**5)
percents = st.integers(min_value=0, max_value=100)


def _date(text: str) -> datetime.date:
    return datetime.date.fromisoformat(text)


# -- billable_minutes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("live_s", "minutes"),
    [
        (0, 0),
        (0.0, 0),
        (0.001, 1),
        (1e-300, 1),
        (59.999, 1),
        (60, 1),
        (60.0, 1),
        (60.001, 2),
        (math.nextafter(60.0, math.inf), 2),
        (120, 2),
        (3600, 60),
        (3600.5, 61),
    ],
)
def test_billable_minutes_counts_every_started_minute(live_s: float, minutes: int) -> None:
    assert billable_minutes(live_s) == minutes


@pytest.mark.parametrize("live_s", [-0.001, -60, -math.inf, math.inf, math.nan])
def test_billable_minutes_refuses_negative_or_non_finite(live_s: float) -> None:
    with pytest.raises(ValueError):
        billable_minutes(live_s)


@given(durations)
@example(60.0)
@example(math.nextafter(60.0, math.inf))
@example(math.nextafter(120.0, 0.0))
def test_billable_minutes_is_exactly_the_ceiling(live_s: float) -> None:
    # Fraction(float) is the float's exact value: no rounding in the division.
    assert billable_minutes(live_s) == math.ceil(Fraction(live_s) / MINUTE_S)


@given(durations, durations)
def test_billable_minutes_is_monotone(a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert billable_minutes(low) <= billable_minutes(high)


@given(durations)
def test_a_started_minute_covers_at_most_sixty_seconds(live_s: float) -> None:
    minutes = billable_minutes(live_s)
    assert (minutes - 1) * MINUTE_S < live_s <= minutes * MINUTE_S


# -- charge_minor, min_balance_minor, affordable_minutes -------------------------


def test_charge_minor_is_minutes_times_price() -> None:
    assert charge_minor(0, 150) == 0
    assert charge_minor(7, 150) == 1050
    assert charge_minor(3, 0) == 0


@pytest.mark.parametrize(("minutes", "price"), [(-1, 150), (1, -150)])
def test_charge_minor_refuses_negatives(minutes: int, price: int) -> None:
    with pytest.raises(ValueError):
        charge_minor(minutes, price)


@pytest.mark.parametrize(
    ("call", "args"),
    [
        (charge_minor, (2, 1.5)),
        (charge_minor, (2.0, 150)),
        (split, (150.0, 60)),
        (affordable_minutes, (1500.0, 150)),
        (min_balance_minor, (150, True)),
    ],
)
def test_money_must_be_an_int_never_a_float(call: Any, args: tuple[Any, ...]) -> None:
    with pytest.raises(TypeError):
        call(*args)


def test_min_balance_is_price_times_minutes() -> None:
    # The protocol defaults: 150 minor units a minute, 10 minutes.
    assert min_balance_minor(150, 10) == 1500
    assert min_balance_minor(150, 0) == 0
    with pytest.raises(ValueError):
        min_balance_minor(150, -1)


@given(balances, prices, st.integers(min_value=0, max_value=1000))
def test_min_balance_gate_means_the_minimum_minutes_are_affordable(
    balance: int, price: int, min_minutes: int
) -> None:
    # A balance passes the 402 gate exactly when it pays for min_minutes.
    passes = balance >= min_balance_minor(price, min_minutes)
    assert passes == (affordable_minutes(balance, price) >= min_minutes)


def test_affordable_minutes_examples() -> None:
    assert affordable_minutes(0, 150) == 0
    assert affordable_minutes(149, 150) == 0
    assert affordable_minutes(150, 150) == 1
    assert affordable_minutes(1499, 150) == 9
    assert affordable_minutes(1500, 150) == 10


@pytest.mark.parametrize(("balance", "price"), [(1500, 0), (1500, -1), (-1, 150)])
def test_affordable_minutes_refuses_bad_arguments(balance: int, price: int) -> None:
    with pytest.raises(ValueError):
        affordable_minutes(balance, price)


@given(balances, prices)
def test_affordable_minutes_is_the_most_the_balance_pays_for(balance: int, price: int) -> None:
    minutes = affordable_minutes(balance, price)
    assert minutes * price <= balance < (minutes + 1) * price


# -- split -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("charge", "pct", "parts"),
    [
        (1500, 60, (900, 600)),
        (150, 60, (90, 60)),
        (1, 60, (0, 1)),
        (99, 33, (32, 67)),
        (0, 60, (0, 0)),
        (1234, 0, (0, 1234)),
        (1234, 100, (1234, 0)),
    ],
)
def test_split_examples(charge: int, pct: int, parts: tuple[int, int]) -> None:
    assert split(charge, pct) == parts


@pytest.mark.parametrize(("charge", "pct"), [(100, -1), (100, 101), (-1, 60)])
def test_split_refuses_bad_arguments(charge: int, pct: int) -> None:
    with pytest.raises(ValueError):
        split(charge, pct)


@given(st.integers(min_value=0, max_value=10**15), percents)
def test_split_never_creates_or_loses_a_minor_unit(charge: int, pct: int) -> None:
    therapist, platform = split(charge, pct)
    assert therapist + platform == charge
    assert therapist >= 0
    assert platform >= 0
    # Floor of the exact share: never above it, less than one unit below it.
    exact = Fraction(charge * pct, 100)
    assert 0 <= exact - therapist < 1


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=0, max_value=99))
def test_a_bigger_share_never_pays_the_therapist_less(charge: int, pct: int) -> None:
    assert split(charge, pct)[0] <= split(charge, pct + 1)[0]


# -- funds_plan ------------------------------------------------------------------


def test_funds_plan_examples() -> None:
    # 1000 at 150 a minute: 6 minutes (900), the 7th cannot start.
    assert funds_plan(1000.0, 1000, 150) == FundsPlan(exhausted_at=1360.0, funds_low_at=1300.0)
    # Exactly one minute: warned at once, ended after sixty seconds.
    assert funds_plan(1000.0, 150, 150) == FundsPlan(exhausted_at=1060.0, funds_low_at=1000.0)
    # Not even one minute: exhausted at once, nothing to warn about.
    assert funds_plan(1000.0, 149, 150) == FundsPlan(exhausted_at=1000.0, funds_low_at=None)
    assert funds_plan(1000.0, 0, 150) == FundsPlan(exhausted_at=1000.0, funds_low_at=None)


def test_funds_plan_is_frozen() -> None:
    plan = funds_plan(0.0, 1500, 150)
    with pytest.raises(AttributeError):
        plan.exhausted_at = 1.0  # type: ignore[misc]


@given(instants, balances, prices)
def test_funds_plan_shape(started_at: float, balance: int, price: int) -> None:
    plan = funds_plan(started_at, balance, price)
    minutes = affordable_minutes(balance, price)
    assert plan.exhausted_at == started_at + minutes * MINUTE_S
    assert plan.exhausted_at >= started_at
    if minutes == 0:
        assert plan.funds_low_at is None
        assert plan.exhausted_at == started_at
    else:
        assert plan.funds_low_at is not None
        assert plan.funds_low_at >= started_at
        assert plan.exhausted_at - plan.funds_low_at == pytest.approx(MINUTE_S)


@given(instants, balances, prices)
def test_a_session_ended_at_exhaustion_costs_what_the_balance_pays(
    started_at: float, balance: int, price: int
) -> None:
    plan = funds_plan(started_at, balance, price)
    charge = final_charge(started_at, plan.exhausted_at, balance, price)
    assert charge <= balance
    assert charge == affordable_minutes(balance, price) * price


@given(instants, balances, prices, st.floats(min_value=0.001, max_value=86400))
def test_one_moment_past_exhaustion_the_next_minute_is_unaffordable(
    started_at: float, balance: int, price: int, late_s: float
) -> None:
    plan = funds_plan(started_at, balance, price)
    ended_at = plan.exhausted_at + late_s
    # Uncapped, a session still running after exhausted_at owes more than
    # the balance: (M + 1) * price > balance. That is why it must end then.
    uncapped = charge_minor(billable_minutes(ended_at - started_at), price)
    assert uncapped > balance
    # final_charge caps it, so a late timer never drives the balance negative.
    assert final_charge(started_at, ended_at, balance, price) == (
        affordable_minutes(balance, price) * price
    )


@given(
    instants,
    balances,
    prices,
    st.floats(min_value=0.001, max_value=MINUTE_S - 0.001),
)
def test_between_warning_and_exhaustion_the_last_minute_is_running(
    started_at: float, balance: int, price: int, after_warning_s: float
) -> None:
    plan = funds_plan(started_at, balance, price)
    assume(plan.funds_low_at is not None)
    assert plan.funds_low_at is not None
    minutes = affordable_minutes(balance, price)
    now = plan.funds_low_at + after_warning_s
    # The affordable minute M is the one in progress: billed, and paid for.
    assert billable_minutes(now - started_at) == minutes
    assert final_charge(started_at, now, balance, price) == minutes * price <= balance


# -- final_charge ----------------------------------------------------------------


def test_final_charge_examples() -> None:
    # Never went live: nothing to pay.
    assert final_charge(None, 5000.0, 1500, 150) == 0
    assert final_charge(None, 5000.0, 0, 150) == 0
    # Went live, ended at once: zero minutes started.
    assert final_charge(1000.0, 1000.0, 1500, 150) == 0
    # 90 s live: two started minutes.
    assert final_charge(1000.0, 1090.0, 1500, 150) == 300
    # 30 minutes live but only 10 affordable: the cap holds.
    assert final_charge(1000.0, 2800.0, 1500, 150) == 1500
    # 1000 at 150 a minute: 6 minutes, the 100 left stays in the wallet.
    assert final_charge(1000.0, 2800.0, 1000, 150) == 900


def test_final_charge_refuses_an_end_before_the_start() -> None:
    with pytest.raises(ValueError):
        final_charge(1000.0, 999.0, 1500, 150)


@given(instants, durations, balances, prices)
def test_final_charge_never_exceeds_the_balance(
    started_at: float, live_s: float, balance: int, price: int
) -> None:
    ended_at = started_at + live_s
    charge = final_charge(started_at, ended_at, balance, price)
    assert 0 <= charge <= balance
    assert charge % price == 0


@given(instants, durations, balances, prices)
def test_final_charge_is_minutes_times_price_when_affordable(
    started_at: float, live_s: float, balance: int, price: int
) -> None:
    ended_at = started_at + live_s
    minutes = billable_minutes(ended_at - started_at)
    assume(minutes * price <= balance)
    assert final_charge(started_at, ended_at, balance, price) == minutes * price


@given(instants, durations, durations, balances, prices)
def test_final_charge_grows_with_the_session(
    started_at: float, a: float, b: float, balance: int, price: int
) -> None:
    low, high = sorted((a, b))
    assert final_charge(started_at, started_at + low, balance, price) <= final_charge(
        started_at, started_at + high, balance, price
    )


# -- payout_date -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("invoice_at", "tz", "payout"),
    [
        # The protocol's examples.
        (datetime.datetime(2026, 11, 16, 9, 0, tzinfo=LONDON), "Europe/London", "2026-11-27"),
        (datetime.datetime(2026, 11, 22, 23, 30, tzinfo=LONDON), "Europe/London", "2026-11-27"),
        # Sunday 23:30 UTC is already Monday 00:30 in Berlin (UTC+1 in November).
        (datetime.datetime(2026, 11, 22, 23, 30, tzinfo=UTC), "Europe/Berlin", "2026-12-04"),
        (datetime.datetime(2026, 11, 22, 23, 30, tzinfo=UTC), "Europe/London", "2026-11-27"),
        # A Friday invoice waits for the next week's Friday, not today.
        (datetime.datetime(2026, 11, 20, 12, 0, tzinfo=LONDON), "Europe/London", "2026-11-27"),
        # In summer London is UTC+1: Sunday 23:30 UTC is Monday there.
        (datetime.datetime(2026, 7, 19, 23, 30, tzinfo=UTC), "Europe/London", "2026-07-31"),
        (datetime.datetime(2026, 7, 19, 23, 30, tzinfo=UTC), "UTC", "2026-07-24"),
        # Clocks go forward on Sunday 2026-03-29 at 01:00 UTC.
        (datetime.datetime(2026, 3, 29, 22, 59, tzinfo=UTC), "Europe/London", "2026-04-03"),
        (datetime.datetime(2026, 3, 29, 23, 0, tzinfo=UTC), "Europe/London", "2026-04-10"),
        (datetime.datetime(2026, 3, 29, 0, 59, tzinfo=UTC), "Europe/London", "2026-04-03"),
        (datetime.datetime(2026, 3, 29, 1, 0, tzinfo=UTC), "Europe/London", "2026-04-03"),
        # Clocks go back on Sunday 2026-10-25 at 01:00 UTC; 01:30 happens twice.
        (
            datetime.datetime(2026, 10, 25, 1, 30, fold=0, tzinfo=LONDON),
            "Europe/London",
            "2026-10-30",
        ),
        (
            datetime.datetime(2026, 10, 25, 1, 30, fold=1, tzinfo=LONDON),
            "Europe/London",
            "2026-10-30",
        ),
        (datetime.datetime(2026, 10, 25, 23, 59, tzinfo=UTC), "Europe/London", "2026-10-30"),
        (datetime.datetime(2026, 10, 26, 0, 0, tzinfo=UTC), "Europe/London", "2026-11-06"),
        (datetime.datetime(2026, 10, 24, 23, 30, tzinfo=UTC), "Europe/London", "2026-10-30"),
        # Year boundaries: the week of Monday 2026-12-28 spans the new year.
        (datetime.datetime(2026, 12, 30, 10, 0, tzinfo=LONDON), "Europe/London", "2027-01-08"),
        (datetime.datetime(2026, 12, 31, 23, 30, tzinfo=UTC), "Europe/London", "2027-01-08"),
        (datetime.datetime(2027, 1, 3, 23, 30, tzinfo=UTC), "Europe/London", "2027-01-08"),
        (datetime.datetime(2027, 1, 3, 23, 30, tzinfo=UTC), "Europe/Paris", "2027-01-15"),
        # The payout lands in the next year: week of Monday 2025-12-22.
        (datetime.datetime(2025, 12, 26, 17, 0, tzinfo=LONDON), "Europe/London", "2026-01-02"),
        # West of UTC, a Monday 03:00 UTC is still Sunday.
        (datetime.datetime(2026, 11, 23, 3, 0, tzinfo=UTC), "America/New_York", "2026-11-27"),
    ],
)
def test_payout_date_examples(invoice_at: datetime.datetime, tz: str, payout: str) -> None:
    assert payout_date(invoice_at, tz) == _date(payout)


def test_payout_date_refuses_a_naive_invoice_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        payout_date(datetime.datetime(2026, 11, 16, 9, 0), "Europe/London")


@pytest.mark.parametrize("tz", ["Nowhere/Atlantis", "", "../etc/passwd"])
def test_payout_date_refuses_an_unknown_zone(tz: str) -> None:
    with pytest.raises(ValueError, match="time zone"):
        payout_date(datetime.datetime(2026, 11, 16, 9, 0, tzinfo=UTC), tz)


def _oracle(invoice_at: datetime.datetime, tz: str) -> datetime.date:
    """The same rule by ISO week numbers (ISO weeks also start on Monday)."""
    year, week, _ = invoice_at.astimezone(ZoneInfo(tz)).date().isocalendar()
    return datetime.date.fromisocalendar(year, week, 5) + datetime.timedelta(weeks=1)


_ZONES = ["Europe/London", "UTC", "Europe/Berlin", "America/New_York", "Pacific/Kiritimati"]
invoice_times = st.datetimes(
    min_value=datetime.datetime(1990, 1, 1),
    max_value=datetime.datetime(2100, 12, 31),
    timezones=st.sampled_from([UTC, LONDON, ZoneInfo("Asia/Kolkata")]),
)


def _london_dst_windows() -> st.SearchStrategy[datetime.datetime]:
    """Instants within two days of a London clock change (last Sunday of Mar/Oct)."""

    def window(year: int, month: int, offset_s: int) -> datetime.datetime:
        last_sunday = max(
            datetime.date(year, month, day)
            for day in range(25, 32)
            if datetime.date(year, month, day).weekday() == 6
        )
        change = datetime.datetime(
            last_sunday.year, last_sunday.month, last_sunday.day, 1, 0, tzinfo=UTC
        )
        return change + datetime.timedelta(seconds=offset_s)

    return st.builds(
        window,
        st.integers(min_value=1997, max_value=2037),
        st.sampled_from([3, 10]),
        st.integers(min_value=-2 * 86400, max_value=2 * 86400),
    )


def _year_ends() -> st.SearchStrategy[datetime.datetime]:
    """Instants within ten days of a new year, in UTC."""
    return st.builds(
        lambda year, offset_s: (
            datetime.datetime(year, 1, 1, tzinfo=UTC) + datetime.timedelta(seconds=offset_s)
        ),
        st.integers(min_value=1991, max_value=2100),
        st.integers(min_value=-10 * 86400, max_value=10 * 86400),
    )


@given(
    st.one_of(invoice_times, _london_dst_windows(), _year_ends()),
    st.sampled_from(_ZONES),
)
def test_payout_is_the_friday_of_the_following_week(invoice_at: datetime.datetime, tz: str) -> None:
    payout = payout_date(invoice_at, tz)
    local_day = invoice_at.astimezone(ZoneInfo(tz)).date()
    monday = local_day - datetime.timedelta(days=local_day.weekday())
    assert payout.weekday() == 4
    assert payout == _oracle(invoice_at, tz)
    # Exactly the Friday of the week after: 11 days after that week's Monday,
    # so 5 (invoice on Sunday) to 11 (on Monday) days after the invoice's date.
    assert payout - monday == datetime.timedelta(days=11)
    assert 5 <= (payout - local_day).days <= 11


@given(st.one_of(_london_dst_windows(), _year_ends()), st.integers(0, 14 * 86400))
def test_payout_moves_by_whole_weeks_only(invoice_at: datetime.datetime, later_s: int) -> None:
    later = invoice_at + datetime.timedelta(seconds=later_s)
    first, second = payout_date(invoice_at, "Europe/London"), payout_date(later, "Europe/London")
    # A later invoice is never paid earlier; the date only jumps at a London Monday.
    assert first <= second
    assert (second - first).days % 7 == 0
    first_week = invoice_at.astimezone(LONDON).date().isocalendar()[:2]
    second_week = later.astimezone(LONDON).date().isocalendar()[:2]
    assert (first == second) == (first_week == second_week)
