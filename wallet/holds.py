"""Holds: money kept in a client's wallet for a booking (PROTOCOL.md §8).

Booking a session holds its price: "a hold, not a charge". A hold is a row of
``wallet_holds``, not a ledger movement: the money stays in the client's
``balance_minor`` and ``held_minor`` (:meth:`Holds.held`) says how much of it
is spoken for. What a client may spend is the balance less its active holds
(:meth:`Holds.available`), and every movement that takes money from a client
takes at most that (:meth:`wallet.entries.LedgerBase._lock` subtracts the
holds), so a session billed per minute, a refund or another booking can never
use money a booking is keeping.

A hold ends once, one of two ways:

* charged (:meth:`Holds.settle_hold_in`): ``charge_minor`` of it moves as a
  ``booking_charge`` (the session took place) or a ``cancellation_fee`` (a
  late cancel, a no-show): the client pays, the therapist is credited
  ``therapist_minor``, the platform the rest; the rest of the hold goes back
  to the client's spendable money;
* released (:meth:`Holds.release_hold_in`): all of it goes back.

The booking store (:mod:`schedule.store`) writes a booking and its hold, or a
booking's outcome and its money, in one database transaction: these methods
take the caller's connection (``..._in``) and never commit. Locks follow
:mod:`wallet.entries`: a ledger transaction row first (a settlement's claim),
then the accounts' rows in the order of their ids, then hold rows. A client's
holds are inserted and ended only under its account row's lock, which is what
makes "balance less holds" true for whoever holds that lock (``FOR UPDATE`` on
PostgreSQL; on SQLite the transaction's ``BEGIN IMMEDIATE``).

Each step is idempotent on the hold's id (the booking's): a replay finds what
the first call did and changes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import ScalarSelect, func, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from core.errors import Conflict, InsufficientFunds, InvalidField, NotFound
from core.logs import get_logger
from wallet.accounts import (
    BOOKING_KINDS,
    MAX_AMOUNT_MINOR,
    PLATFORM_REVENUE,
    Transaction,
    TxnKind,
    _to_dt,
    check_amount,
    check_user_id,
    client_account,
    therapist_account,
)
from wallet.entries import LedgerBase
from wallet.tables import (
    HOLD_CHARGED,
    HOLD_HELD,
    HOLD_RELEASED,
    ledger_accounts,
    wallet_holds,
)

__all__ = ["Hold", "HoldState", "Holds"]

log = get_logger("dispatch.wallet", component="holds")

#: The most holds one call may place (a weekly series is at most 12).
MAX_HOLDS_PER_CALL: Final = 52


class HoldState(StrEnum):
    HELD = HOLD_HELD
    CHARGED = HOLD_CHARGED
    RELEASED = HOLD_RELEASED


@dataclass(frozen=True, slots=True)
class Hold:
    """One hold. ``charged_minor``: what its settlement charged (0 while held
    and once released); ``settled_at`` is set when it ends. ``replayed``: this
    call found the hold already placed (or ended) and changed nothing."""

    id: str
    client_id: str
    amount_minor: int
    state: HoldState
    charged_minor: int
    created_at: float
    settled_at: float | None
    replayed: bool = dataclasses.field(default=False, compare=False)


def _hold(row: RowMapping) -> Hold:
    settled = row["settled_at"]
    return Hold(
        id=row["id"],
        client_id=row["client_id"],
        amount_minor=int(row["amount_minor"]),
        state=HoldState(row["state"]),
        charged_minor=int(row["charged_minor"]),
        created_at=row["created_at"].timestamp(),
        settled_at=None if settled is None else settled.timestamp(),
    )


def _active_sum(client_id: str) -> ScalarSelect[Any]:
    """The scalar subquery of the client's active holds' total (0 if none)."""
    return (
        select(func.coalesce(func.sum(wallet_holds.c.amount_minor), 0))
        .where(wallet_holds.c.client_id == client_id, wallet_holds.c.state == HOLD_HELD)
        .scalar_subquery()
    )


class Holds(LedgerBase):
    """Holds for bookings, on top of :class:`LedgerBase` (module docstring)."""

    # -- reads ---------------------------------------------------------------------
    async def held(self, client_id: str) -> int:
        """What the client's active holds keep (``held_minor``; 0 if none)."""
        async with self.db.reading() as conn:
            value = (await conn.execute(select(_active_sum(client_id)))).scalar_one()
        return int(value or 0)

    async def available(self, client_id: str) -> int:
        """What the client may spend: its balance less its active holds, read
        in one statement (one snapshot). It is never below zero while the
        ledger is sound (:meth:`wallet.audit.Audit.check`)."""
        balance = (
            select(func.coalesce(func.max(ledger_accounts.c.balance_minor), 0))
            .where(ledger_accounts.c.id == client_account(client_id))
            .scalar_subquery()
        )
        async with self.db.reading() as conn:
            row = (await conn.execute(select(balance, _active_sum(client_id)))).one()
        return int(row[0] or 0) - int(row[1] or 0)

    async def hold(self, hold_id: str) -> Hold | None:
        """The hold by that id, if there is one."""
        async with self.db.reading() as conn:
            return await self._get(conn, hold_id)

    # -- changes, inside the caller's transaction -------------------------------------
    async def hold_in(
        self, conn: AsyncConnection, hold_id: str, client_id: str, amount_minor: int, now: float
    ) -> Hold:
        """Hold ``amount_minor`` of the client's money for ``hold_id`` (a
        booking's id), in the caller's transaction (:meth:`hold_many_in`)."""
        [placed] = await self.hold_many_in(conn, client_id, [(hold_id, amount_minor)], now)
        return placed

    async def hold_many_in(
        self,
        conn: AsyncConnection,
        client_id: str,
        amounts: Sequence[tuple[str, int]],
        now: float,
    ) -> list[Hold]:
        """Place one hold per ``(hold_id, amount_minor)``, all or none, in the
        caller's transaction (a weekly series holds each session's price).

        ``InsufficientFunds`` (``balance_minor``, ``held_minor``,
        ``required_minor``: the total asked for) when the client's balance less
        its active holds is below the total. Idempotent per hold id: a hold
        already placed for the same client and amount is returned
        (``replayed``) and not counted again; the same id for another client
        or amount is a ``Conflict``. ``InvalidField`` for bad ids or amounts.
        """
        client_id = check_user_id(client_id, "client_id")
        if not 1 <= len(amounts) <= MAX_HOLDS_PER_CALL:
            raise InvalidField(f"1..{MAX_HOLDS_PER_CALL} holds at a time", field="holds")
        wanted: dict[str, int] = {}
        for hold_id, amount in amounts:
            hold_id = check_user_id(hold_id, "hold_id")
            if hold_id in wanted:
                raise InvalidField("the same hold id twice", field="hold_id")
            wanted[hold_id] = check_amount(amount)
        account = client_account(client_id)
        at = _to_dt(now)
        # The account's lock first: every hold of this client is placed or
        # ended under it, so what is read below cannot change before commit.
        spendable = (await self._lock(conn, [account], at))[account]
        found = {
            h.id: h
            for h in (
                _hold(r)
                for r in (
                    await conn.execute(select(wallet_holds).where(wallet_holds.c.id.in_(wanted)))
                ).mappings()
            )
        }
        for hold_id, old in found.items():
            if (old.client_id, old.amount_minor) != (client_id, wanted[hold_id]):
                raise Conflict("this hold was placed for another client or amount", field="hold_id")
        missing = [(h, a) for h, a in wanted.items() if h not in found]
        total = sum(a for _, a in missing)
        if total > spendable:
            held = int((await conn.execute(select(_active_sum(client_id)))).scalar_one() or 0)
            raise InsufficientFunds(
                "not enough money in the wallet for this booking",
                balance_minor=spendable + held,
                held_minor=held,
                required_minor=total,
            )
        if missing:
            await conn.execute(
                wallet_holds.insert(),
                [
                    {
                        "id": hold_id,
                        "client_id": client_id,
                        "amount_minor": amount,
                        "state": HOLD_HELD,
                        "charged_minor": 0,
                        "created_at": at,
                        "settled_at": None,
                    }
                    for hold_id, amount in missing
                ],
            )
        placed = {
            h: Hold(h, client_id, a, HoldState.HELD, 0, at.timestamp(), None) for h, a in missing
        }
        return [
            placed[h] if h in placed else dataclasses.replace(found[h], replayed=True)
            for h in wanted
        ]

    async def settle_hold_in(
        self,
        conn: AsyncConnection,
        hold_id: str,
        *,
        charge_minor: int,
        therapist_id: str,
        therapist_minor: int,
        kind: TxnKind | str,
        now: float,
    ) -> Transaction | None:
        """End a hold by charging ``charge_minor`` of it (``kind``
        ``booking_charge`` or ``cancellation_fee``, reference = the hold's id):
        the client pays it, the therapist is credited ``therapist_minor``, the
        platform the rest; the rest of the hold goes back. In the caller's
        transaction.

        Returns the ledger transaction (``replayed`` set when this settlement
        was already written), or ``None`` for a charge of 0 (the hold is
        released, nothing moves). ``NotFound`` for no such hold; ``Conflict``
        if the hold already ended another way; ``InvalidField`` unless
        ``0 <= therapist_minor <= charge_minor <= the hold``.
        """
        kind = TxnKind(kind)
        if kind not in BOOKING_KINDS:
            raise InvalidField("a hold is settled by a booking_charge or a cancellation_fee")
        for name, value in (("charge_minor", charge_minor), ("therapist_minor", therapist_minor)):
            if type(value) is not int or not 0 <= value <= MAX_AMOUNT_MINOR:
                raise InvalidField(f"{name} must be a whole number >= 0", field=name)
        if therapist_minor > charge_minor:
            raise InvalidField("the therapist's part exceeds the charge", field="therapist_minor")
        therapist = therapist_account(check_user_id(therapist_id, "therapist_id"))
        if charge_minor == 0:
            await self.release_hold_in(conn, hold_id, now)
            return None
        first = await self._get(conn, hold_id)
        if first is None:
            raise NotFound("no such hold")
        if charge_minor > first.amount_minor:
            raise InvalidField("the charge exceeds the hold", field="charge_minor")
        client = client_account(first.client_id)
        at = _to_dt(now)
        txn_id = await self._claim(conn, kind, hold_id, None, at)
        if txn_id is None:
            done = await self._load(conn, kind, hold_id)
            entry = done.entry_for(client)
            if entry is None or entry.amount_minor != -charge_minor:
                raise Conflict("this hold was already charged another amount", field="hold_id")
            return dataclasses.replace(done, replayed=True)
        balances = await self._lock(conn, [client, therapist, PLATFORM_REVENUE], at)
        hold = await self._locked(conn, hold_id)
        if hold.state is not HoldState.HELD:
            raise Conflict(f"this hold is already {hold.state}", field="hold_id")
        # The hold's own money is this movement's to take.
        balances[client] += hold.amount_minor
        await conn.execute(
            update(wallet_holds)
            .where(wallet_holds.c.id == hold_id)
            .values(state=HOLD_CHARGED, charged_minor=charge_minor, settled_at=at)
        )
        legs = [
            (client, -charge_minor),
            (therapist, therapist_minor),
            (PLATFORM_REVENUE, charge_minor - therapist_minor),
        ]
        entries = await self._move(conn, txn_id, legs, balances, at)
        log.info(
            "hold.charged",
            booking_id=hold_id,
            user_id=hold.client_id,
            kind=str(kind),
            charge_minor=charge_minor,
            released_minor=hold.amount_minor - charge_minor,
        )
        return Transaction(txn_id, kind, hold_id, None, at.timestamp(), entries)

    async def release_hold_in(self, conn: AsyncConnection, hold_id: str, now: float) -> Hold:
        """End a hold by giving all of it back, in the caller's transaction.
        Releasing a released hold changes nothing (``replayed``); ``Conflict``
        for a charged one, ``NotFound`` for none."""
        first = await self._get(conn, hold_id)
        if first is None:
            raise NotFound("no such hold")
        at = _to_dt(now)
        await self._lock(conn, [client_account(first.client_id)], at)
        hold = await self._locked(conn, hold_id)
        if hold.state is HoldState.RELEASED:
            return dataclasses.replace(hold, replayed=True)
        if hold.state is not HoldState.HELD:
            raise Conflict(f"this hold is already {hold.state}", field="hold_id")
        await conn.execute(
            update(wallet_holds)
            .where(wallet_holds.c.id == hold_id)
            .values(state=HOLD_RELEASED, settled_at=at)
        )
        log.info("hold.released", booking_id=hold_id, user_id=hold.client_id)
        return dataclasses.replace(hold, state=HoldState.RELEASED, settled_at=at.timestamp())

    # -- internals -----------------------------------------------------------------
    async def _get(self, conn: AsyncConnection, hold_id: str) -> Hold | None:
        stmt = select(wallet_holds).where(wallet_holds.c.id == hold_id)
        row = (await conn.execute(stmt)).mappings().one_or_none()
        return None if row is None else _hold(row)

    async def _locked(self, conn: AsyncConnection, hold_id: str) -> Hold:
        stmt = select(wallet_holds).where(wallet_holds.c.id == hold_id).with_for_update()
        return _hold((await conn.execute(stmt)).mappings().one())
