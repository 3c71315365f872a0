"""A booking's state machine and the money of each step (PROTOCOL.md §8). Pure.

No I/O, no clock: callers pass ``now``. Each step takes the booking's current
state and returns ``(next state, Money)``, or raises a :mod:`core.errors`
error and decides nothing::

    scheduled --cancel by the client, now <= start - window--> cancelled            release all
    scheduled --cancel by the client, later (even after start)-> late_cancelled     fee
    scheduled --cancel by the therapist or an operator--------> therapist_cancelled release all
    scheduled --outcome "occurred", now >= start--------------> occurred            price
    scheduled --outcome "no_show", now >= start---------------> no_show             fee

Money: booking a session holds its price (an intro holds 0). ``price`` moves
the whole hold, the therapist getting its normal share
(:func:`wallet.billing.split`); the ``fee`` is ``price * late_fee_pct //
100`` and the therapist gets ``share(fee) * late_fee_therapist_pct // 100``;
the platform keeps the rest of what is charged, and what is not charged is
released. Integer arithmetic throughout: no minor unit is created or lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.errors import Conflict, InvalidField, TooEarly
from schedule.model import BookingState, Policy
from wallet.billing import split

__all__ = [
    "JOIN_EARLY_S",
    "UNMARKED_AFTER_S",
    "Money",
    "cancel",
    "check_join",
    "late_fee",
    "outcome",
    "unmarked",
]

#: A booking still ``scheduled`` this long after its end is "unmarked".
UNMARKED_AFTER_S = 48 * 3600.0
#: A booked call may be joined from this long before its start.
JOIN_EARLY_S = 10 * 60.0

Canceller = Literal["client", "therapist", "operator"]
Outcome = Literal["occurred", "no_show"]


@dataclass(frozen=True, slots=True)
class Money:
    """What one step moves out of the client's hold.

    ``charge_minor`` is taken from the hold (``therapist_minor`` of it to the
    therapist, the rest to platform revenue), ``release_minor`` goes back to
    the client's spendable balance; ``charge_minor + release_minor`` is the
    whole hold, and ``0 <= therapist_minor <= charge_minor``.
    """

    charge_minor: int
    therapist_minor: int
    release_minor: int

    @property
    def platform_minor(self) -> int:
        return self.charge_minor - self.therapist_minor

    @property
    def hold_minor(self) -> int:
        return self.charge_minor + self.release_minor


def _money_in(name: str, value: int) -> int:
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0")
    return value


def _release_all(price_minor: int) -> Money:
    return Money(charge_minor=0, therapist_minor=0, release_minor=price_minor)


def late_fee(policy: Policy, price_minor: int, share_pct: int) -> Money:
    """The money of a late cancel or a no-show: the fee charged, the therapist's
    part of it, the rest of the hold released. Shown to a client before it
    confirms a late cancel."""
    _money_in("price_minor", price_minor)
    fee = price_minor * policy.late_fee_pct // 100
    therapist_share, _ = split(fee, share_pct)
    therapist, _ = split(therapist_share, policy.late_fee_therapist_pct)
    return Money(charge_minor=fee, therapist_minor=therapist, release_minor=price_minor - fee)


def _full_charge(price_minor: int, share_pct: int) -> Money:
    therapist, _ = split(_money_in("price_minor", price_minor), share_pct)
    return Money(charge_minor=price_minor, therapist_minor=therapist, release_minor=0)


def _scheduled(state: BookingState, what: str) -> None:
    if state is not BookingState.SCHEDULED:
        raise Conflict(f"the booking is {state.value}; it can no longer be {what}")


def cancel(
    state: BookingState,
    *,
    by: Canceller,
    start: float,
    now: float,
    policy: Policy,
    price_minor: int,
    share_pct: int,
) -> tuple[BookingState, Money]:
    """Cancel a booking; after this returns the caller applies the state and money.

    Only a ``scheduled`` booking can be cancelled (else ``Conflict``). The
    client cancelling at least ``policy.cancel_window_h`` before the start
    (``now <= start - window``) gets everything back (``cancelled``); later,
    including after the start, it pays the late fee (``late_cancelled``). The
    therapist or an operator cancelling never costs the client anything
    (``therapist_cancelled``).
    """
    _scheduled(state, "cancelled")
    _money_in("price_minor", price_minor)
    if by == "client":
        if now <= start - policy.cancel_window_s:
            return BookingState.CANCELLED, _release_all(price_minor)
        return BookingState.LATE_CANCELLED, late_fee(policy, price_minor, share_pct)
    if by in ("therapist", "operator"):
        return BookingState.THERAPIST_CANCELLED, _release_all(price_minor)
    raise ValueError(f"unknown canceller {by!r}")


def outcome(
    state: BookingState,
    outcome: Outcome,
    *,
    start: float,
    now: float,
    policy: Policy,
    price_minor: int,
    share_pct: int,
) -> tuple[BookingState, Money]:
    """Mark what happened; after this returns the caller applies state and money.

    Checks, in this order: ``outcome`` is ``occurred`` or ``no_show``
    (``InvalidField``), the start has come (``now >= start``, else
    ``TooEarly``), the booking is still ``scheduled`` (else ``Conflict``: an
    outcome is given once). ``occurred`` charges the price (the therapist its
    normal share); ``no_show`` charges the late fee, as a late cancel does.
    An intro (price 0) moves nothing.
    """
    if outcome not in ("occurred", "no_show"):
        raise InvalidField("outcome must be occurred or no_show", field="outcome")
    if now < start:
        raise TooEarly("an outcome can only be given after the start")
    _scheduled(state, "marked")
    if outcome == "occurred":
        return BookingState.OCCURRED, _full_charge(price_minor, share_pct)
    return BookingState.NO_SHOW, late_fee(policy, price_minor, share_pct)


def unmarked(state: BookingState, end: float, now: float) -> bool:
    """Whether a booking is left without an outcome: still ``scheduled`` at
    least 48 hours after its end (operators see these)."""
    return state is BookingState.SCHEDULED and now >= end + UNMARKED_AFTER_S


def check_join(state: BookingState, *, start: float, end: float, now: float) -> None:
    """Whether the booking's call may be opened or rejoined now; raises if not.

    From :data:`JOIN_EARLY_S` (10 minutes) before the start (earlier:
    ``TooEarly``) to the end; only a ``scheduled`` booking, or an ``occurred``
    one whose end has not come (a call marked occurred early may be rejoined),
    else ``Conflict``.
    """
    if state not in (BookingState.SCHEDULED, BookingState.OCCURRED):
        raise Conflict(f"the booking is {state.value}")
    if now < start - JOIN_EARLY_S:
        raise TooEarly("a booked call opens 10 minutes before its start")
    if now > end:
        raise Conflict("the booking's time is over")
