"""A booking's state machine and its money (``schedule.policy``, PROTOCOL.md §8).

Every transition from every state, by every actor, at the boundaries of the
cancellation window and the start, with the protocol's default numbers
pinned; hypothesis properties check that money is conserved (charge + release
is the hold, the therapist never gets more than is charged) and that the
fee follows the policy's percentages exactly.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import Conflict, InvalidField, TooEarly
from schedule.model import INTRO_USED_STATES, BookingState, Policy
from schedule.policy import (
    JOIN_EARLY_S,
    UNMARKED_AFTER_S,
    Money,
    cancel,
    check_join,
    late_fee,
    outcome,
    unmarked,
)
from wallet.billing import split

PROPS = settings(max_examples=200, deadline=None)
S = BookingState
DEFAULT = Policy(cancel_window_h=24, late_fee_pct=100, late_fee_therapist_pct=50)
START = 1_800_000_000.0
HOUR = 3600.0
PRICE = 6000
SHARE = 60
NOT_SCHEDULED = [s for s in BookingState if s is not S.SCHEDULED]


def _cancel(state: BookingState = S.SCHEDULED, **kw: Any) -> tuple[BookingState, Money]:
    args: dict[str, Any] = {
        "by": "client",
        "start": START,
        "now": START - 48 * HOUR,
        "policy": DEFAULT,
        "price_minor": PRICE,
        "share_pct": SHARE,
    }
    args.update(kw)
    return cancel(state, **args)


def _outcome(what: Any, state: BookingState = S.SCHEDULED, **kw: Any) -> tuple[BookingState, Money]:
    args: dict[str, Any] = {
        "start": START,
        "now": START + 60,
        "policy": DEFAULT,
        "price_minor": PRICE,
        "share_pct": SHARE,
    }
    args.update(kw)
    return outcome(state, what, **args)


# -- cancel ----------------------------------------------------------------------


def test_client_cancel_in_time_releases_everything() -> None:
    assert _cancel() == (S.CANCELLED, Money(0, 0, PRICE))
    # Exactly the window before the start still counts as in time.
    assert _cancel(now=START - 24 * HOUR) == (S.CANCELLED, Money(0, 0, PRICE))


def test_client_cancel_late_pays_the_fee() -> None:
    # 100 % of 6000; the therapist's normal share is 60 % (3600), it gets 50 % of that.
    late = (S.LATE_CANCELLED, Money(charge_minor=6000, therapist_minor=1800, release_minor=0))
    assert _cancel(now=START - 24 * HOUR + 0.001) == late
    assert _cancel(now=START - 1) == late
    assert _cancel(now=START) == late
    assert _cancel(now=START + 30 * 60) == late  # after the start: still a late cancel
    assert late[1].platform_minor == 4200
    assert late[1].hold_minor == PRICE


def test_a_partial_fee_releases_the_rest() -> None:
    policy = Policy(cancel_window_h=12, late_fee_pct=50, late_fee_therapist_pct=30)
    state, money = _cancel(now=START - 11 * HOUR, policy=policy, price_minor=6001, share_pct=70)
    # fee 3000; share(3000) at 70 % = 2100; 30 % of that = 630; 3001 released.
    assert (state, money) == (S.LATE_CANCELLED, Money(3000, 630, 3001))
    assert _cancel(now=START - 12 * HOUR, policy=policy)[0] is S.CANCELLED


def test_a_zero_window_makes_every_client_cancel_before_the_start_free() -> None:
    policy = Policy(cancel_window_h=0, late_fee_pct=100, late_fee_therapist_pct=50)
    assert _cancel(now=START, policy=policy)[0] is S.CANCELLED
    assert _cancel(now=START + 1, policy=policy)[0] is S.LATE_CANCELLED


@pytest.mark.parametrize("by", ["therapist", "operator"])
@pytest.mark.parametrize("now", [START - 100 * HOUR, START - 1, START, START + 10 * HOUR])
def test_therapist_or_operator_cancel_never_costs_the_client(by: str, now: float) -> None:
    assert _cancel(by=by, now=now) == (S.THERAPIST_CANCELLED, Money(0, 0, PRICE))


@pytest.mark.parametrize("state", NOT_SCHEDULED)
@pytest.mark.parametrize("by", ["client", "therapist", "operator"])
@pytest.mark.parametrize("now", [START - 48 * HOUR, START + HOUR])
def test_only_a_scheduled_booking_can_be_cancelled(
    state: BookingState, by: str, now: float
) -> None:
    with pytest.raises(Conflict) as caught:
        _cancel(state, by=by, now=now)
    assert caught.value.code == "conflict"
    assert caught.value.status == 409
    assert state.value in caught.value.message


def test_unknown_canceller_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        _cancel(by="stranger")


# -- outcome ---------------------------------------------------------------------


def test_occurred_charges_the_price_with_the_normal_share() -> None:
    assert _outcome("occurred") == (S.OCCURRED, Money(6000, 3600, 0))
    assert _outcome("occurred", now=START) == (S.OCCURRED, Money(6000, 3600, 0))
    assert _outcome("occurred", price_minor=999, share_pct=33) == (S.OCCURRED, Money(999, 329, 0))


def test_no_show_charges_the_late_fee() -> None:
    assert _outcome("no_show") == (S.NO_SHOW, Money(6000, 1800, 0))
    policy = Policy(cancel_window_h=24, late_fee_pct=0, late_fee_therapist_pct=50)
    assert _outcome("no_show", policy=policy) == (S.NO_SHOW, Money(0, 0, PRICE))


@pytest.mark.parametrize("state", list(BookingState))
@pytest.mark.parametrize("what", ["occurred", "no_show"])
def test_outcome_before_the_start_is_too_early(state: BookingState, what: str) -> None:
    with pytest.raises(TooEarly) as caught:
        _outcome(what, state, now=START - 0.001)
    assert (caught.value.code, caught.value.status) == ("too_early", 422)


@pytest.mark.parametrize("state", NOT_SCHEDULED)
@pytest.mark.parametrize("what", ["occurred", "no_show"])
def test_outcome_twice_or_after_a_cancel_is_a_conflict(state: BookingState, what: str) -> None:
    with pytest.raises(Conflict) as caught:
        _outcome(what, state)
    assert caught.value.status == 409


@pytest.mark.parametrize("what", ["", "OCCURRED", "cancelled", None, 1])
def test_outcome_must_be_occurred_or_no_show(what: Any) -> None:
    with pytest.raises(InvalidField) as caught:
        _outcome(what)
    assert caught.value.fields == {"field": "outcome"}


@pytest.mark.parametrize("by", ["client", "therapist", "operator"])
@pytest.mark.parametrize("now", [START - 48 * HOUR, START - HOUR, START + HOUR])
def test_an_intro_moves_no_money(by: str, now: float) -> None:
    state, money = _cancel(by=by, now=now, price_minor=0)
    assert money == Money(0, 0, 0)
    assert state in (S.CANCELLED, S.LATE_CANCELLED, S.THERAPIST_CANCELLED)
    for what in ("occurred", "no_show"):
        assert _outcome(what, price_minor=0)[1] == Money(0, 0, 0)


def test_the_intro_counts_as_used_unless_cancelled_in_time_or_by_the_therapist() -> None:
    assert frozenset({S.CANCELLED, S.THERAPIST_CANCELLED}).isdisjoint(INTRO_USED_STATES)
    assert set(BookingState) == INTRO_USED_STATES | {S.CANCELLED, S.THERAPIST_CANCELLED}


def test_money_must_be_whole_minor_units() -> None:
    with pytest.raises(TypeError):
        _cancel(now=START, price_minor=60.0)
    with pytest.raises(TypeError):
        _outcome("occurred", price_minor=True)
    with pytest.raises(ValueError):
        _outcome("occurred", price_minor=-1)
    with pytest.raises(ValueError):
        _outcome("occurred", share_pct=101)


# -- unmarked, check_join -------------------------------------------------------------


def test_unmarked_48_hours_after_the_end() -> None:
    end = START + 50 * 60
    assert UNMARKED_AFTER_S == 48 * HOUR
    assert not unmarked(S.SCHEDULED, end, end + 48 * HOUR - 0.001)
    assert unmarked(S.SCHEDULED, end, end + 48 * HOUR)
    assert unmarked(S.SCHEDULED, end, end + 1000 * HOUR)
    for state in NOT_SCHEDULED:
        assert not unmarked(state, end, end + 1000 * HOUR)


def test_check_join_window() -> None:
    end = START + 50 * 60
    with pytest.raises(TooEarly):
        check_join(S.SCHEDULED, start=START, end=end, now=START - JOIN_EARLY_S - 0.001)
    for now in (START - JOIN_EARLY_S, START, end):
        check_join(S.SCHEDULED, start=START, end=end, now=now)
    check_join(S.OCCURRED, start=START, end=end, now=START + 60)  # rejoin after a drop
    with pytest.raises(Conflict):
        check_join(S.SCHEDULED, start=START, end=end, now=end + 0.001)
    for state in NOT_SCHEDULED:
        if state is not S.OCCURRED:
            with pytest.raises(Conflict):
                check_join(state, start=START, end=end, now=START)


# -- Policy on the wire ---------------------------------------------------------------


def test_policy_round_trips() -> None:
    assert DEFAULT.to_wire() == {
        "cancel_window_h": 24,
        "late_fee_pct": 100,
        "late_fee_therapist_pct": 50,
    }
    assert Policy.from_wire(DEFAULT.to_wire()) == DEFAULT
    assert DEFAULT.cancel_window_s == 24 * HOUR


@pytest.mark.parametrize(
    "obj",
    [
        None,
        [],
        {},
        {"cancel_window_h": 24, "late_fee_pct": 100},
        {"cancel_window_h": 24, "late_fee_pct": 100, "late_fee_therapist_pct": 50, "x": 1},
        {"cancel_window_h": -1, "late_fee_pct": 100, "late_fee_therapist_pct": 50},
        {"cancel_window_h": 24, "late_fee_pct": 101, "late_fee_therapist_pct": 50},
        {"cancel_window_h": 24, "late_fee_pct": 100, "late_fee_therapist_pct": 100.0},
        {"cancel_window_h": "24", "late_fee_pct": 100, "late_fee_therapist_pct": 50},
        {"cancel_window_h": True, "late_fee_pct": 100, "late_fee_therapist_pct": 50},
    ],
)
def test_policy_from_wire_refuses(obj: Any) -> None:
    with pytest.raises(InvalidField) as caught:
        Policy.from_wire(obj)
    assert caught.value.fields == {"field": "policy"}


# -- properties -----------------------------------------------------------------------

policies = st.builds(
    Policy,
    cancel_window_h=st.integers(0, 24 * 14),
    late_fee_pct=st.integers(0, 100),
    late_fee_therapist_pct=st.integers(0, 100),
)
prices = st.integers(0, 10**7)
percents = st.integers(0, 100)
OUTCOMES = ["occurred", "no_show"]
offsets = st.floats(-30 * 86400, 30 * 86400, allow_nan=False)


def _conserved(money: Money, hold: int) -> None:
    assert all(type(v) is int for v in (money.charge_minor, money.therapist_minor))
    assert money.charge_minor + money.release_minor == hold
    assert 0 <= money.therapist_minor <= money.charge_minor <= hold
    assert money.release_minor >= 0
    assert money.platform_minor >= 0


@PROPS
@given(policies, prices, percents, offsets, st.sampled_from(["client", "therapist", "operator"]))
def test_cancel_conserves_money(
    policy: Policy, price: int, share: int, offset: float, by: Any
) -> None:
    now = START + offset
    state, money = cancel(
        S.SCHEDULED, by=by, start=START, now=now, policy=policy, price_minor=price, share_pct=share
    )
    _conserved(money, price)
    if by != "client":
        assert (state, money) == (S.THERAPIST_CANCELLED, Money(0, 0, price))
    elif now <= START - policy.cancel_window_h * HOUR:
        assert (state, money) == (S.CANCELLED, Money(0, 0, price))
    else:
        assert state is S.LATE_CANCELLED
        assert money == late_fee(policy, price, share)


@PROPS
@given(policies, prices, percents, st.floats(0, 30 * 86400), st.sampled_from(OUTCOMES))
def test_outcome_conserves_money(
    policy: Policy, price: int, share: int, after: float, what: Any
) -> None:
    state, money = outcome(
        S.SCHEDULED,
        what,
        start=START,
        now=START + after,
        policy=policy,
        price_minor=price,
        share_pct=share,
    )
    _conserved(money, price)
    if what == "occurred":
        assert state is S.OCCURRED
        assert money == Money(price, split(price, share)[0], 0)
    else:
        assert state is S.NO_SHOW
        assert money == late_fee(policy, price, share)


@PROPS
@given(policies, prices, percents)
def test_the_fee_follows_the_percentages(policy: Policy, price: int, share: int) -> None:
    money = late_fee(policy, price, share)
    _conserved(money, price)
    # Exact rationals: each floor loses less than one minor unit.
    fee_exact = Fraction(price * policy.late_fee_pct, 100)
    assert fee_exact - 1 < money.charge_minor <= fee_exact
    normal_share = money.charge_minor * share // 100
    therapist_exact = Fraction(normal_share * policy.late_fee_therapist_pct, 100)
    assert therapist_exact - 1 < money.therapist_minor <= therapist_exact
    # A full fee paying the therapist 100 % of its share is the same as "occurred".
    full = Policy(policy.cancel_window_h, 100, 100)
    assert late_fee(full, price, share) == Money(price, split(price, share)[0], 0)
