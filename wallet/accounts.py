"""The ledger's values and account ids (PROTOCOL.md §6).

The accounts' ids (``client:<id>``, ``therapist:<id>``, ...) and the constants
around them, the kinds of movement (:class:`TxnKind`), what a movement returns
(:class:`Transaction` and its :class:`Entry` legs, with the view
``GET /v1/transactions`` shows), the checks of what callers pass in
(:func:`check_amount`, :func:`check_user_id`, :func:`check_reference`), and the
small conversions the ledger's modules share. Nothing here touches the
database; the movements are :mod:`wallet.entries`'.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from core.clock import rfc3339
from core.errors import InvalidField
from core.validation import ID_RULE, is_id

__all__ = [
    "BOOKING_KINDS",
    "EXTERNAL_PAYMENTS",
    "EXTERNAL_PAYOUTS",
    "MAX_AMOUNT_MINOR",
    "PLATFORM_REVENUE",
    "REFERENCE_MAX",
    "Entry",
    "Transaction",
    "TxnKind",
    "check_amount",
    "check_reference",
    "check_user_id",
    "client_account",
    "therapist_account",
    "withdrawing_account",
]

PLATFORM_REVENUE: Final = "platform:revenue"
EXTERNAL_PAYMENTS: Final = "external:payments"
EXTERNAL_PAYOUTS: Final = "external:payouts"

#: The largest single amount the ledger takes (10 billion in major units):
#: far beyond any real payment, far below where 64-bit sums could overflow.
MAX_AMOUNT_MINOR: Final = 10**12
#: Top-up references: 1..128 characters, no control characters.
REFERENCE_MAX: Final = 128

#: The kind of the outside world's accounts, the only ones that may go below zero.
_EXTERNAL: Final = "external"


class TxnKind(StrEnum):
    TOPUP = "topup"
    SESSION_CHARGE = "session_charge"
    WITHDRAWAL = "withdrawal"
    WITHDRAWAL_PAID = "withdrawal_paid"
    REFUND = "refund"
    #: A booked session that took place: the hold becomes a charge (PROTOCOL.md §8).
    BOOKING_CHARGE = "booking_charge"
    #: A late cancel or a no-show: the fee is taken from the hold (PROTOCOL.md §8).
    CANCELLATION_FEE = "cancellation_fee"


#: The kinds whose reference is a booking's id (:mod:`wallet.holds`).
BOOKING_KINDS: Final = frozenset({TxnKind.BOOKING_CHARGE, TxnKind.CANCELLATION_FEE})


def client_account(client_id: str) -> str:
    return f"client:{client_id}"


def therapist_account(therapist_id: str) -> str:
    return f"therapist:{therapist_id}"


def withdrawing_account(therapist_id: str) -> str:
    return f"therapist_withdrawing:{therapist_id}"


def _account_kind(account_id: str) -> str:
    return account_id.split(":", 1)[0]


# -- values --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One leg of a transaction: what it did to one account."""

    account_id: str
    amount_minor: int
    balance_after_minor: int


@dataclass(frozen=True, slots=True)
class Transaction:
    """One movement and its entries (which sum to zero).

    ``shortfall_minor``: what a session charge could not take because the
    client's balance was short (0 otherwise). ``replayed``: this call found
    the movement already written (by an earlier call with the same
    reference) and wrote nothing; the rest is the first call's result.
    """

    id: str
    kind: TxnKind
    reference: str
    session_id: str | None
    created_at: float
    entries: tuple[Entry, ...]
    shortfall_minor: int = 0
    replayed: bool = dataclasses.field(default=False, compare=False)

    def entry_for(self, account_id: str) -> Entry | None:
        """This transaction's entry on ``account_id``, if it has one."""
        return next((e for e in self.entries if e.account_id == account_id), None)

    def view(self, account_id: str) -> dict[str, Any]:
        """The transaction as ``GET /v1/transactions`` shows it to the owner of
        ``account_id`` (``LookupError`` if it did not touch that account)."""
        entry = self.entry_for(account_id)
        if entry is None:
            raise LookupError(f"transaction {self.id} has no entry on {account_id}")
        return _entry_view(
            self.id,
            self.kind,
            account_id,
            entry.amount_minor,
            entry.balance_after_minor,
            self.session_id,
            self.created_at,
            self.reference,
        )


def _public_kind(kind: str, account_id: str) -> str:
    """A transaction's kind as the account's owner sees it: a therapist's
    share of a session charge, of a booking's charge or of a cancellation fee
    is an ``earning`` (the ``booking_id`` of the view tells a booking's apart)."""
    earns = kind == TxnKind.SESSION_CHARGE or kind in BOOKING_KINDS
    if earns and _account_kind(account_id) == "therapist":
        return "earning"
    return kind


def _method(kind: str, checkout_method: str | None) -> str | None:
    """How a top-up was paid, as its receipt says (PROTOCOL.md §9): the
    method of the checkout it credited (``card``: Stripe, ``test``: the
    ``--dev`` page), else ``operator`` (``POST /v1/wallet/topups``); ``None``
    for every other kind."""
    if kind != TxnKind.TOPUP:
        return None
    return checkout_method or "operator"


def _entry_view(
    txn_id: str,
    kind: str,
    account_id: str,
    amount_minor: int,
    balance_after_minor: int,
    session_id: str | None,
    created_at: float,
    reference: str,
) -> dict[str, Any]:
    return {
        "id": txn_id,
        "kind": _public_kind(kind, account_id),
        "amount_minor": amount_minor,
        "balance_after_minor": balance_after_minor,
        "session_id": session_id,
        # A booking's charge or fee is keyed by the booking (PROTOCOL.md §8).
        "booking_id": reference if kind in BOOKING_KINDS else None,
        "created_at": rfc3339(created_at),
    }


# -- conversions and checks ------------------------------------------------------------


def _to_dt(ts: float) -> dt.datetime:
    if not math.isfinite(ts):
        raise ValueError("now must be a finite number of epoch seconds")
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


def _new_id(prefix: str) -> str:
    """A server id that sorts by creation time within a process."""
    return f"{prefix}_{time.time_ns() // 1000:014x}{secrets.token_hex(5)}"


def check_amount(value: object, name: str = "amount_minor") -> int:
    """A movement's amount: a whole number (not a bool) of minor units,
    1..:data:`MAX_AMOUNT_MINOR`; ``InvalidField`` naming ``name`` otherwise."""
    if type(value) is not int or not 0 < value <= MAX_AMOUNT_MINOR:
        raise InvalidField(
            f"{name} must be a whole number of minor units from 1 to {MAX_AMOUNT_MINOR}",
            field=name,
        )
    return value


def check_user_id(value: object, name: str) -> str:
    """A user or session id (PROTOCOL.md §2); ``InvalidField`` naming ``name``."""
    if not isinstance(value, str) or not is_id(value):
        raise InvalidField(f"{name} must be {ID_RULE}", field=name)
    return value


def check_reference(value: object) -> str:
    """A top-up or refund reference: 1..128 characters, no control characters."""
    if (
        type(value) is not str
        or not 1 <= len(value) <= REFERENCE_MAX
        or any(not ch.isprintable() for ch in value)
    ):
        raise InvalidField(
            f"reference must be a string of 1..{REFERENCE_MAX} printable characters",
            field="reference",
        )
    return value
