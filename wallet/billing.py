"""Billing arithmetic and payout dates (PROTOCOL.md §6), pure.

No I/O, no ``await``, no clock: callers pass every instant in. Money is an
``int`` count of the currency's minor unit (pence, cents) and never a float;
the functions that take money refuse anything but an ``int`` (``TypeError``)
so a float cannot slip into the ledger unnoticed. Instants and durations are
float seconds (epoch seconds, as the pool core keeps them).

A session is billed per *started* minute from the moment it went ``live``:
minute ``k`` (1-based) starts at ``started_at + (k - 1) * 60`` and is owed in
full as soon as it starts. A live time of exactly ``k * 60`` seconds is ``k``
minutes; the next minute starts only after that instant.

Bad arguments are programming or configuration faults, not user input, so
they raise plain ``ValueError`` rather than a protocol error of
:mod:`core.errors`.
"""

from __future__ import annotations

import datetime
import math
import zoneinfo
from dataclasses import dataclass

__all__ = [
    "MINUTE_S",
    "FundsPlan",
    "affordable_minutes",
    "billable_minutes",
    "charge_minor",
    "final_charge",
    "funds_plan",
    "min_balance_minor",
    "payout_date",
    "split",
]

#: Seconds in a billed minute.
MINUTE_S = 60

# Weekday numbers of datetime.date.weekday().
_FRIDAY = 4
# From the Monday of the invoice's week to the Friday of the week after it.
_MONDAY_TO_NEXT_FRIDAY = datetime.timedelta(days=7 + _FRIDAY)


def _int(name: str, value: int, *, minimum: int = 0) -> int:
    """``value`` if it is a true ``int`` (not a bool, not a float) >= ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def billable_minutes(live_s: float) -> int:
    """The minutes billed for ``live_s`` seconds live: every started minute counts.

    Exactly ``ceil(live_s / 60)``, computed on the float's exact rational value
    (no rounding in a division): 0 s -> 0, 0.001 s -> 1, 60 s -> 1,
    60.001 s -> 2. A negative or non-finite duration raises ``ValueError``.
    """
    if isinstance(live_s, float) and not math.isfinite(live_s):
        raise ValueError(f"live_s must be finite, got {live_s!r}")
    if live_s < 0:
        raise ValueError(f"live_s must be >= 0, got {live_s!r}")
    numerator, denominator = live_s.as_integer_ratio()
    # Ceiling division in integers: -(-a // b).
    return -(-numerator // (MINUTE_S * denominator))


def charge_minor(minutes: int, price_per_minute_minor: int) -> int:
    """What ``minutes`` billed minutes cost at ``price_per_minute_minor``."""
    return _int("minutes", minutes) * _int("price_per_minute_minor", price_per_minute_minor)


def split(charge_minor: int, therapist_share_pct: int) -> tuple[int, int]:
    """Split a charge into ``(therapist, platform)`` minor units.

    ``therapist = floor(charge * pct / 100)`` in integer arithmetic and the
    platform keeps the rest, so the two always sum to exactly ``charge_minor``:
    rounding never creates or loses a minor unit, and the therapist's part is
    within one unit below the exact share. ``therapist_share_pct`` outside
    0..100 raises ``ValueError``.
    """
    _int("charge_minor", charge_minor)
    _int("therapist_share_pct", therapist_share_pct)
    if therapist_share_pct > 100:
        raise ValueError(f"therapist_share_pct must be <= 100, got {therapist_share_pct}")
    therapist = charge_minor * therapist_share_pct // 100
    return therapist, charge_minor - therapist


def min_balance_minor(price_per_minute_minor: int, min_minutes: int) -> int:
    """The least balance a client needs to ask for a session (price * minutes).

    ``POST /v1/requests`` answers 402 ``insufficient_funds`` to a balance
    below this.
    """
    return _int("price_per_minute_minor", price_per_minute_minor) * _int("min_minutes", min_minutes)


def affordable_minutes(balance_minor: int, price_per_minute_minor: int) -> int:
    """Whole minutes ``balance_minor`` pays for: ``balance // price`` (price > 0)."""
    _int("balance_minor", balance_minor)
    _int("price_per_minute_minor", price_per_minute_minor, minimum=1)
    return balance_minor // price_per_minute_minor


@dataclass(frozen=True)
class FundsPlan:
    """When a live session runs out of money.

    ``exhausted_at``: the session ends (reason ``funds_exhausted``) at this
    instant. ``funds_low_at``: ``session.funds_low`` goes out at this instant
    (``seconds_left`` = ``exhausted_at - funds_low_at``, 60 up to float
    rounding), or ``None`` when the session is exhausted at once and there is
    nothing to warn about.
    """

    exhausted_at: float
    funds_low_at: float | None


def funds_plan(started_at: float, balance_minor: int, price_per_minute_minor: int) -> FundsPlan:
    """The funds timers of a session that went live at ``started_at``.

    Why these instants: billing is per started minute and a started minute is
    owed in full, so the client may only *start* a minute they can pay for.
    With ``M = balance // price`` affordable minutes, minutes 1..M start at
    ``started_at + (k - 1) * 60`` and are covered; minute ``M + 1`` would start
    at ``started_at + M * 60`` and is not, so the session must end exactly
    then: ``exhausted_at = started_at + M * 60``. Ended at that instant the live
    time is ``M * 60`` s, i.e. ``M`` billed minutes, ``M * price <= balance``;
    any later and it would be ``M + 1`` minutes, ``(M + 1) * price > balance``.
    A client who can afford 0 minutes is exhausted at once (``started_at``).

    ``session.funds_low`` goes out one minute before the money runs out, i.e.
    when the last affordable minute starts: ``exhausted_at - 60`` when
    ``M >= 1`` (for ``M == 1`` that is ``started_at`` itself). With ``M == 0``
    there is no minute left to warn in: ``funds_low_at`` is ``None``.

    ``balance_minor`` is the wallet before this session's charge (the charge
    is written only when the session ends), so a top-up during the session
    means a new plan: call again with the new balance and the same
    ``started_at``.
    """
    minutes = affordable_minutes(balance_minor, price_per_minute_minor)
    exhausted_at = started_at + minutes * MINUTE_S
    # From started_at rather than exhausted_at - 60: one float rounding, not two,
    # so the warning can never come before the session went live.
    funds_low_at = started_at + (minutes - 1) * MINUTE_S if minutes >= 1 else None
    return FundsPlan(exhausted_at=exhausted_at, funds_low_at=funds_low_at)


def final_charge(
    started_at: float | None,
    ended_at: float,
    balance_minor: int,
    price_per_minute_minor: int,
) -> int:
    """The client's charge for a session, in minor units.

    ``billable_minutes(ended_at - started_at) * price``, capped at
    ``affordable_minutes * price`` so the balance never goes below zero (the
    cap also absorbs a timer that fires a little after ``exhausted_at``).
    0 when the session never went live (``started_at is None``). An
    ``ended_at`` before ``started_at`` raises ``ValueError``.
    """
    affordable = affordable_minutes(balance_minor, price_per_minute_minor)
    if started_at is None:
        return 0
    minutes = billable_minutes(ended_at - started_at)
    return charge_minor(min(minutes, affordable), price_per_minute_minor)


def payout_date(invoice_at: datetime.datetime, tz: str) -> datetime.date:
    """The day a withdrawal whose invoice came in at ``invoice_at`` is paid.

    The Friday of the week *after* the one the invoice came in, weeks starting
    on Monday, the week being read on the calendar of time zone ``tz`` (an
    IANA name such as ``Europe/London``): an invoice on Monday 2026-11-16 or on
    Sunday 2026-11-22 (London) is paid on Friday 2026-11-27; one that is
    already Monday 2026-11-23 in ``tz`` is paid on Friday 2026-12-04. So the
    payout is 5 (invoice on a Sunday) to 11 (on a Monday) days after the
    invoice's local date.

    ``invoice_at`` must be timezone-aware and ``tz`` a known zone, else
    ``ValueError``.
    """
    if invoice_at.tzinfo is None or invoice_at.utcoffset() is None:
        raise ValueError("invoice_at must be timezone-aware")
    try:
        zone = zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {tz!r}") from exc
    local_day = invoice_at.astimezone(zone).date()
    monday = local_day - datetime.timedelta(days=local_day.weekday())
    return monday + _MONDAY_TO_NEXT_FRIDAY
