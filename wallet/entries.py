"""The wallet's double-entry ledger (PROTOCOL.md §6) over :class:`core.db.Database`:
:class:`LedgerBase`, its balances, top-ups, refunds and session charges, and
the machinery every movement goes through (the locks, the once-only claim,
the entries). Withdrawals are :mod:`wallet.payouts`', the audit
:mod:`wallet.audit`'s; :class:`wallet.ledger.Ledger` is all of them.

Money is an ``int`` count of the deployment's currency's minor unit. Every
movement is one database transaction that writes a ``ledger_transactions``
row, a set of ``ledger_entries`` that sums to zero, and the balances of the
accounts it touches (``ledger_accounts.balance_minor``, kept in step with the
entries). The accounts::

    client:<id>                  a client's wallet
    therapist:<id>               a therapist's earnings, available to withdraw
    therapist_withdrawing:<id>   asked for, not yet paid out
    platform:revenue             the platform's share of each charge
    external:payments            the outside world: money paid in (goes negative)
    external:payouts             the outside world: money paid out

and the movements::

    topup            external:payments -> client
    session_charge   client -> therapist (its share) + platform:revenue (the rest)
    withdrawal       therapist -> therapist_withdrawing
    withdrawal_paid  therapist_withdrawing -> external:payouts
    refund           client -> external:payments
    booking_charge   a booking's hold -> therapist (its share) + platform:revenue
    cancellation_fee a booking's hold -> therapist (its share of the fee) + platform:revenue

A hold (:mod:`wallet.holds`, PROTOCOL.md §8) is not a movement: the money
stays in the client's balance, ``wallet_holds`` says how much of it is kept
for a booking, and every movement that takes money from a client may take
only the balance less its active holds (:meth:`LedgerBase._lock` reads both
under the client's row lock).

No balance but the outside world's ever goes below zero, whatever runs at the
same time on however many servers: a movement locks the rows of the accounts
it touches, in the order of their ids (``SELECT ... FOR UPDATE`` on
PostgreSQL; on SQLite ``BEGIN IMMEDIATE`` takes the database's single write
lock first), reads their balances, refuses with
:class:`~core.errors.InsufficientFunds` what would overdraw one, and only
then writes. A CHECK constraint stands behind it.

Idempotency: ``(kind, reference)`` is unique. A top-up's reference is the
operator's; a session's charge uses the session id; a booking's charge or
cancellation fee the booking id; a withdrawal's two steps use the withdrawal
id. The transaction row is inserted first (``ON CONFLICT DO NOTHING``): a
replay, even one racing the original on another server, finds the original
(PostgreSQL makes the second insert wait for the first to commit) and changes
nothing.

Instants are epoch seconds (floats) in and out, stored as UTC timestamps to the
microsecond; ``now`` is always the caller's.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from sqlalchemy import Select, func, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from core.db import Database
from core.errors import Conflict, Forbidden, InsufficientFunds, InvalidField
from core.identity import Role
from core.logs import get_logger
from wallet import billing
from wallet.accounts import (
    _EXTERNAL,
    EXTERNAL_PAYMENTS,
    MAX_AMOUNT_MINOR,
    PLATFORM_REVENUE,
    Entry,
    Transaction,
    TxnKind,
    _account_kind,
    _entry_view,
    _method,
    _new_id,
    _to_dt,
    check_amount,
    check_reference,
    check_user_id,
    client_account,
    therapist_account,
)
from wallet.tables import (
    HOLD_HELD,
    checkouts,
    ledger_accounts,
    ledger_entries,
    ledger_transactions,
    wallet_holds,
)

__all__ = ["LedgerBase"]

log = get_logger("dispatch.wallet", component="ledger")

_CURRENCY_RE: Final = re.compile(r"[A-Z]{3}")


class LedgerBase:
    """Balances and movements of one deployment (one currency): the part of
    :class:`wallet.ledger.Ledger` that the withdrawals and the audit build on.

    ``therapist_share_pct`` (0..100) splits each session charge
    (:func:`wallet.billing.split`); ``timezone`` (an IANA name) is where a
    withdrawal's payout date is reckoned (:func:`wallet.billing.payout_date`).
    Bad settings raise ``ValueError``.
    """

    def __init__(
        self, db: Database, *, currency: str, therapist_share_pct: int, timezone: str
    ) -> None:
        if not _CURRENCY_RE.fullmatch(currency):
            raise ValueError(f"currency must be an ISO 4217 code such as GBP, not {currency!r}")
        if type(therapist_share_pct) is not int or not 0 <= therapist_share_pct <= 100:
            raise ValueError(f"therapist_share_pct must be 0..100, not {therapist_share_pct!r}")
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {timezone!r}") from None
        self.db = db
        self.currency = currency
        self.therapist_share_pct = therapist_share_pct
        self.timezone = timezone

    # -- reads ---------------------------------------------------------------------
    @staticmethod
    def charged_session_ids() -> Select[tuple[str | None]]:
        """A subquery of the ids of every session already charged: for
        :mod:`signaling.metering`'s settling sweep, which finds the ended
        sessions not in it (one statement, no table of the wallet's exposed)."""
        return select(ledger_transactions.c.session_id).where(
            ledger_transactions.c.kind == "session_charge",
            ledger_transactions.c.session_id.is_not(None),
        )

    async def balance(self, client_id: str) -> int:
        """The client's wallet balance (0 for a client never seen)."""
        return await self._balance(client_account(client_id))

    async def transactions(
        self, user_id: str, role: Role | str, *, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The user's entries, newest first, in the shape of PROTOCOL.md §6:
        ``id`` (the transaction's), ``kind``, ``amount_minor`` (signed, from the
        user's side), ``balance_after_minor``, ``session_id``, ``booking_id``
        (a ``booking_charge``'s or ``cancellation_fee``'s booking, §8; else
        ``None``), ``created_at``, and ``method``, how a top-up was paid
        (:func:`wallet.accounts._method`; ``None`` for other kinds).

        A client's are its wallet's; a therapist's are its earnings' (a
        session's or booking's share is an ``earning``, a withdrawal takes
        money out).
        ``Forbidden`` for an operator, who has no account.
        """
        role = Role(role)
        if role is Role.CLIENT:
            account = client_account(user_id)
        elif role is Role.THERAPIST:
            account = therapist_account(user_id)
        else:
            raise Forbidden("an operator has no ledger entries")
        e, t, k = ledger_entries, ledger_transactions, checkouts
        stmt = (
            select(
                t.c.id,
                t.c.kind,
                t.c.reference,
                e.c.amount_minor,
                e.c.balance_after_minor,
                t.c.session_id,
                t.c.created_at,
                k.c.method,
            )
            .select_from(
                e.join(t, e.c.transaction_id == t.c.id).outerjoin(
                    # A top-up paid through a checkout has the checkout's id
                    # for its reference (wallet.checkouts).
                    k,
                    (t.c.kind == str(TxnKind.TOPUP)) & (k.c.id == t.c.reference),
                )
            )
            .where(e.c.account_id == account)
            .order_by(e.c.id.desc())
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        async with self.db.reading() as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            {
                **_entry_view(
                    r.id,
                    r.kind,
                    account,
                    int(r.amount_minor),
                    int(r.balance_after_minor),
                    r.session_id,
                    r.created_at.timestamp(),
                    r.reference,
                ),
                "method": _method(r.kind, r.method),
            }
            for r in rows
        ]

    # -- movements -----------------------------------------------------------------
    async def topup(
        self, client_id: str, amount_minor: int, reference: str, now: float
    ) -> Transaction:
        """Credit the client's wallet with money paid in outside the service.

        Once per ``reference``: a replay credits nothing and returns the first
        result (``replayed`` set), also when the replays race each other on
        several servers. The same reference for another client or amount is a
        ``Conflict``. ``InvalidField`` for an amount that is not a whole
        number > 0, a bad client id or reference.
        """
        client_id = check_user_id(client_id, "client_id")
        amount_minor = check_amount(amount_minor)
        reference = check_reference(reference)
        account = client_account(client_id)
        legs = [(EXTERNAL_PAYMENTS, -amount_minor), (account, amount_minor)]
        return await self._once(TxnKind.TOPUP, reference, account, amount_minor, legs, now)

    async def refund(
        self, client_id: str, amount_minor: int, reference: str, now: float
    ) -> Transaction:
        """Pay money in the client's wallet back out (client -> external:payments).

        Once per ``reference``, like :meth:`topup`; ``InsufficientFunds`` if
        the wallet holds less than ``amount_minor``.
        """
        client_id = check_user_id(client_id, "client_id")
        amount_minor = check_amount(amount_minor)
        reference = check_reference(reference)
        account = client_account(client_id)
        legs = [(account, -amount_minor), (EXTERNAL_PAYMENTS, amount_minor)]
        return await self._once(TxnKind.REFUND, reference, account, -amount_minor, legs, now)

    async def charge_session(
        self,
        session_id: str,
        client_id: str,
        therapist_id: str,
        charge_minor: int | Callable[[int], int],
        now: float,
    ) -> Transaction | None:
        """Write a session's charge: the client pays ``charge_minor``, the
        therapist is credited its share, the platform the rest.

        ``charge_minor`` may instead be a function of what the client may
        spend (its balance less its active holds, read under the lock of its
        row) to the charge: the charge is then decided in the same transaction
        that writes it, with no read before it (:meth:`signaling.metering.Metering.settle`).

        Once per session: ``None`` if the charge was already written (by this
        or another server). The client's balance never goes below zero: if it
        is short, what is there is charged and the difference recorded as
        ``shortfall_minor`` (and logged); billing is designed so that this
        does not happen. A charge of 0 writes a transaction without entries,
        so that the session still counts as billed. Money held for bookings
        (:mod:`wallet.holds`) is not the session's: only the balance less the
        client's active holds can be charged.
        """
        session_id = check_user_id(session_id, "session_id")
        client = client_account(check_user_id(client_id, "client_id"))
        therapist = therapist_account(check_user_id(therapist_id, "therapist_id"))
        fixed = None if callable(charge_minor) else _check_charge(charge_minor)
        at = _to_dt(now)
        if fixed == 0:
            # Nothing moves: the transaction row alone marks the session billed
            # (one statement, no transaction around it), with no account to
            # lock (the platform's revenue row is every charge's, so its lock
            # is the one charges queue on).
            async with self.db.write_one() as conn:
                txn_id = await self._claim(conn, TxnKind.SESSION_CHARGE, session_id, session_id, at)
            if txn_id is None:
                return None
            return Transaction(
                txn_id, TxnKind.SESSION_CHARGE, session_id, session_id, at.timestamp(), ()
            )
        async with self.db.writing() as conn:
            txn_id = await self._claim(conn, TxnKind.SESSION_CHARGE, session_id, session_id, at)
            if txn_id is None:
                return None
            balances = await self._lock(conn, [client, therapist, PLATFORM_REVENUE], at)
            if fixed is not None:
                due = fixed
            else:
                assert callable(charge_minor)
                due = _check_charge(charge_minor(max(balances[client], 0)))
            charged = min(due, balances[client])
            shortfall = due - charged
            to_therapist, to_platform = billing.split(charged, self.therapist_share_pct)
            if shortfall:
                await conn.execute(
                    update(ledger_transactions)
                    .where(ledger_transactions.c.id == txn_id)
                    .values(shortfall_minor=shortfall)
                )
            legs = [(client, -charged), (therapist, to_therapist), (PLATFORM_REVENUE, to_platform)]
            entries = await self._move(conn, txn_id, legs, balances, at)
        if shortfall:
            log.warning(
                "ledger.charge_short",
                session_id=session_id,
                charge_minor=due,
                shortfall_minor=shortfall,
            )
        return Transaction(
            txn_id,
            TxnKind.SESSION_CHARGE,
            session_id,
            session_id,
            at.timestamp(),
            entries,
            shortfall,
        )

    # -- internals -----------------------------------------------------------------
    async def _balance(self, account: str) -> int:
        stmt = select(ledger_accounts.c.balance_minor).where(ledger_accounts.c.id == account)
        async with self.db.reading() as conn:
            value = (await conn.execute(stmt)).scalar_one_or_none()
        return int(value or 0)

    async def _claim(
        self,
        conn: AsyncConnection,
        kind: TxnKind,
        reference: str,
        session_id: str | None,
        at: dt.datetime,
    ) -> str | None:
        """Insert the transaction row; its id, or ``None`` if ``(kind,
        reference)`` was already written. Always the first write of a
        movement: it waits for nothing but a racing twin."""
        values = {
            "id": _new_id("txn"),
            "kind": str(kind),
            "reference": reference,
            "session_id": session_id,
            "shortfall_minor": 0,
            "created_at": at,
        }
        stmt = self.db.insert_or_nothing(
            ledger_transactions, values, ["kind", "reference"]
        ).returning(ledger_transactions.c.id)
        txn_id: str | None = (await conn.execute(stmt)).scalar_one_or_none()
        return txn_id

    async def _lock(
        self, conn: AsyncConnection, accounts: Sequence[str], at: dt.datetime
    ) -> dict[str, int]:
        """Make sure the accounts exist, lock their rows in the order of their
        ids (so two movements never wait on each other in a circle) and return
        what each may spend: its balance, less, for a client's wallet, the
        money its active holds keep for bookings (:mod:`wallet.holds`; a
        client's holds change only under its row's lock, so the sum read here
        stays true until the transaction ends)."""
        ids = sorted(set(accounts))
        rows = [
            {
                "id": account,
                "kind": _account_kind(account),
                "currency": self.currency,
                "balance_minor": 0,
                "created_at": at,
            }
            for account in ids
        ]
        await conn.execute(self.db.insert_or_nothing(ledger_accounts, rows, ["id"]))
        stmt = (
            select(ledger_accounts.c.id, ledger_accounts.c.balance_minor)
            .where(ledger_accounts.c.id.in_(ids))
            .order_by(ledger_accounts.c.id)
            .with_for_update()
        )
        balances = {r.id: int(r.balance_minor) for r in await conn.execute(stmt)}
        clients = [a for a in ids if _account_kind(a) == "client"]
        if clients:
            held = (
                select(wallet_holds.c.client_id, func.sum(wallet_holds.c.amount_minor))
                .where(
                    wallet_holds.c.client_id.in_([a.split(":", 1)[1] for a in clients]),
                    wallet_holds.c.state == HOLD_HELD,
                )
                .group_by(wallet_holds.c.client_id)
            )
            for client_id, total in await conn.execute(held):
                balances[client_account(client_id)] -= int(total)
        return balances

    async def _move(
        self,
        conn: AsyncConnection,
        txn_id: str,
        legs: Sequence[tuple[str, int]],
        balances: Mapping[str, int],
        at: dt.datetime,
    ) -> tuple[Entry, ...]:
        """Write the legs (zero ones are left out) as entries and move the
        balances, all of whose rows :meth:`_lock` holds. ``InsufficientFunds``,
        writing nothing, if an account but the outside world's would go below
        zero."""
        legs = [(account, amount) for account, amount in legs if amount != 0]
        if sum(amount for _, amount in legs) != 0:
            raise AssertionError("the legs of a transaction must sum to zero")
        for account, amount in legs:
            # Debits only: a credit is always welcome, whatever is held.
            if (
                _account_kind(account) != _EXTERNAL
                and amount < 0
                and balances[account] + amount < 0
            ):
                raise InsufficientFunds(
                    "not enough funds",
                    available_minor=balances[account],
                )
        entries: list[Entry] = []
        try:
            for account, amount in legs:
                stmt = (
                    update(ledger_accounts)
                    .where(ledger_accounts.c.id == account)
                    .values(balance_minor=ledger_accounts.c.balance_minor + amount)
                    .returning(ledger_accounts.c.balance_minor)
                )
                after = int((await conn.execute(stmt)).scalar_one())
                entries.append(Entry(account, amount, after))
        except sa_exc.IntegrityError:
            # The CHECK behind the locks: cannot happen while they hold.
            raise InsufficientFunds("not enough funds") from None
        if entries:
            await conn.execute(
                ledger_entries.insert(),
                [
                    {
                        "transaction_id": txn_id,
                        "account_id": entry.account_id,
                        "amount_minor": entry.amount_minor,
                        "balance_after_minor": entry.balance_after_minor,
                        "created_at": at,
                    }
                    for entry in entries
                ],
            )
        return tuple(entries)

    async def _once(
        self,
        kind: TxnKind,
        reference: str,
        account: str,
        amount_minor: int,
        legs: Sequence[tuple[str, int]],
        now: float,
    ) -> Transaction:
        """A movement keyed by an outside reference (top-up, refund): written
        once; a replay returns the first one, or ``Conflict`` if the first one
        moved another amount on ``account``."""
        at = _to_dt(now)
        async with self.db.writing() as conn:
            txn_id = await self._claim(conn, kind, reference, None, at)
            if txn_id is None:
                first = await self._load(conn, kind, reference)
                entry = first.entry_for(account)
                if entry is None or entry.amount_minor != amount_minor:
                    raise Conflict(
                        f"this reference was already used for another {kind}",
                        field="reference",
                    )
                return dataclasses.replace(first, replayed=True)
            balances = await self._lock(conn, [a for a, _ in legs], at)
            entries = await self._move(conn, txn_id, legs, balances, at)
        return Transaction(txn_id, kind, reference, None, at.timestamp(), entries)

    async def _load(self, conn: AsyncConnection, kind: TxnKind, reference: str) -> Transaction:
        """The transaction ``(kind, reference)`` with its entries."""
        t, e = ledger_transactions, ledger_entries
        row = (
            (await conn.execute(select(t).where(t.c.kind == str(kind), t.c.reference == reference)))
            .mappings()
            .one()
        )
        legs = await conn.execute(
            select(e.c.account_id, e.c.amount_minor, e.c.balance_after_minor)
            .where(e.c.transaction_id == row["id"])
            .order_by(e.c.id)
        )
        return Transaction(
            id=row["id"],
            kind=TxnKind(row["kind"]),
            reference=row["reference"],
            session_id=row["session_id"],
            created_at=row["created_at"].timestamp(),
            entries=tuple(
                Entry(r.account_id, int(r.amount_minor), int(r.balance_after_minor)) for r in legs
            ),
            shortfall_minor=int(row["shortfall_minor"]),
        )


def _check_charge(charge_minor: int) -> int:
    if type(charge_minor) is not int or not 0 <= charge_minor <= MAX_AMOUNT_MINOR:
        raise InvalidField(
            f"charge_minor must be a whole number from 0 to {MAX_AMOUNT_MINOR}",
            field="charge_minor",
        )
    return charge_minor
