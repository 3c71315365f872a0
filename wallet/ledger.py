"""The wallet's double-entry ledger (PROTOCOL.md §6) over :class:`core.db.Database`.

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

No balance but the outside world's ever goes below zero, whatever runs at the
same time on however many servers: a movement locks the rows of the accounts
it touches, in the order of their ids (``SELECT ... FOR UPDATE`` on
PostgreSQL; on SQLite ``BEGIN IMMEDIATE`` takes the database's single write
lock first), reads their balances, refuses with
:class:`~core.errors.InsufficientFunds` what would overdraw one, and only
then writes. A CHECK constraint stands behind it.

Idempotency: ``(kind, reference)`` is unique. A top-up's reference is the
operator's; a session's charge uses the session id; a withdrawal's two steps
use the withdrawal id. The transaction row is inserted first (``ON CONFLICT DO
NOTHING``): a replay, even one racing the original on another server, finds
the original (PostgreSQL makes the second insert wait for the first to commit)
and changes nothing.

Instants are epoch seconds (floats) in and out, stored as UTC timestamps to the
microsecond; ``now`` is always the caller's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import math
import re
import secrets
import time
import zoneinfo
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import Insert, Select, Table, func, select, union, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import rfc3339
from core.db import Database, translate_errors
from core.errors import Conflict, Forbidden, InsufficientFunds, InvalidField, NotFound
from core.identity import Role
from core.logs import get_logger
from core.validation import ID_RULE, is_id
from wallet import billing
from wallet.tables import ledger_accounts, ledger_entries, ledger_transactions, withdrawals

__all__ = [
    "EXTERNAL_PAYMENTS",
    "EXTERNAL_PAYOUTS",
    "MAX_AMOUNT_MINOR",
    "PLATFORM_REVENUE",
    "REFERENCE_MAX",
    "Entry",
    "Ledger",
    "Transaction",
    "TxnKind",
    "Withdrawal",
    "WithdrawalState",
    "check_amount",
    "check_reference",
    "check_user_id",
    "client_account",
    "therapist_account",
    "withdrawing_account",
]

log = get_logger("dispatch.wallet", component="ledger")

PLATFORM_REVENUE: Final = "platform:revenue"
EXTERNAL_PAYMENTS: Final = "external:payments"
EXTERNAL_PAYOUTS: Final = "external:payouts"

#: The largest single amount the ledger takes (10 billion in major units):
#: far beyond any real payment, far below where 64-bit sums could overflow.
MAX_AMOUNT_MINOR: Final = 10**12
#: Top-up references: 1..128 characters, no control characters.
REFERENCE_MAX: Final = 128

_CURRENCY_RE: Final = re.compile(r"[A-Z]{3}")
_EXTERNAL: Final = "external"


class TxnKind(StrEnum):
    TOPUP = "topup"
    SESSION_CHARGE = "session_charge"
    WITHDRAWAL = "withdrawal"
    WITHDRAWAL_PAID = "withdrawal_paid"
    REFUND = "refund"


class WithdrawalState(StrEnum):
    AWAITING_INVOICE = "awaiting_invoice"
    SCHEDULED = "scheduled"
    PAID = "paid"


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
        )


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """A therapist's withdrawal; ``payout_date`` is set once it is scheduled."""

    id: str
    therapist_id: str
    amount_minor: int
    state: WithdrawalState
    created_at: float
    invoiced_at: float | None
    payout_date: dt.date | None
    paid_at: float | None

    def public(self) -> dict[str, Any]:
        """W of PROTOCOL.md §6 (plus ``therapist_id``, ``invoiced_at``, ``paid_at``)."""
        return {
            "id": self.id,
            "therapist_id": self.therapist_id,
            "amount_minor": self.amount_minor,
            "state": str(self.state),
            "created_at": rfc3339(self.created_at),
            "payout_date": None if self.payout_date is None else self.payout_date.isoformat(),
            "invoiced_at": None if self.invoiced_at is None else rfc3339(self.invoiced_at),
            "paid_at": None if self.paid_at is None else rfc3339(self.paid_at),
        }


def _public_kind(kind: str, account_id: str) -> str:
    """A transaction's kind as the account's owner sees it: a therapist's
    share of a session charge is an ``earning``."""
    if kind == TxnKind.SESSION_CHARGE and _account_kind(account_id) == "therapist":
        return "earning"
    return kind


def _entry_view(
    txn_id: str,
    kind: str,
    account_id: str,
    amount_minor: int,
    balance_after_minor: int,
    session_id: str | None,
    created_at: float,
) -> dict[str, Any]:
    return {
        "id": txn_id,
        "kind": _public_kind(kind, account_id),
        "amount_minor": amount_minor,
        "balance_after_minor": balance_after_minor,
        "session_id": session_id,
        "created_at": rfc3339(created_at),
    }


# -- conversions and checks ------------------------------------------------------------


def _to_dt(ts: float) -> dt.datetime:
    if not math.isfinite(ts):
        raise ValueError("now must be a finite number of epoch seconds")
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


def _opt_ts(value: dt.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


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


def _withdrawal(row: RowMapping) -> Withdrawal:
    return Withdrawal(
        id=row["id"],
        therapist_id=row["therapist_id"],
        amount_minor=int(row["amount_minor"]),
        state=WithdrawalState(row["state"]),
        created_at=row["created_at"].timestamp(),
        invoiced_at=_opt_ts(row["invoiced_at"]),
        payout_date=row["payout_date"],
        paid_at=_opt_ts(row["paid_at"]),
    )


# -- the ledger ------------------------------------------------------------------------


class Ledger:
    """Balances, movements and withdrawals of one deployment (one currency).

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
        user's side), ``balance_after_minor``, ``session_id``, ``created_at``.

        A client's are its wallet's; a therapist's are its earnings' (a
        session's share is an ``earning``, a withdrawal takes money out).
        ``Forbidden`` for an operator, who has no account.
        """
        role = Role(role)
        if role is Role.CLIENT:
            account = client_account(user_id)
        elif role is Role.THERAPIST:
            account = therapist_account(user_id)
        else:
            raise Forbidden("an operator has no ledger entries")
        e, t = ledger_entries, ledger_transactions
        stmt = (
            select(
                t.c.id,
                t.c.kind,
                e.c.amount_minor,
                e.c.balance_after_minor,
                t.c.session_id,
                t.c.created_at,
            )
            .select_from(e.join(t, e.c.transaction_id == t.c.id))
            .where(e.c.account_id == account)
            .order_by(e.c.id.desc())
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            _entry_view(
                r.id,
                r.kind,
                account,
                int(r.amount_minor),
                int(r.balance_after_minor),
                r.session_id,
                r.created_at.timestamp(),
            )
            for r in rows
        ]

    async def earnings(self, therapist_id: str) -> dict[str, int]:
        """``available_minor`` (can be withdrawn), ``withdrawing_minor`` (asked
        for, not yet paid), ``paid_out_minor`` (paid, all time)."""

        def balance_of(account: str) -> Any:
            return (
                select(ledger_accounts.c.balance_minor)
                .where(ledger_accounts.c.id == account)
                .scalar_subquery()
            )

        paid = (
            select(func.coalesce(func.sum(withdrawals.c.amount_minor), 0))
            .where(
                withdrawals.c.therapist_id == therapist_id,
                withdrawals.c.state == str(WithdrawalState.PAID),
            )
            .scalar_subquery()
        )
        stmt = select(
            balance_of(therapist_account(therapist_id)),
            balance_of(withdrawing_account(therapist_id)),
            paid,
        )
        async with self._read() as conn:
            available, withdrawing, paid_out = (await conn.execute(stmt)).one()
        return {
            "available_minor": int(available or 0),
            "withdrawing_minor": int(withdrawing or 0),
            "paid_out_minor": int(paid_out or 0),
        }

    async def withdrawal(self, withdrawal_id: str) -> Withdrawal:
        """One withdrawal; ``NotFound`` if there is none by that id."""
        async with self._read() as conn:
            row = (
                (await conn.execute(select(withdrawals).where(withdrawals.c.id == withdrawal_id)))
                .mappings()
                .one_or_none()
            )
        if row is None:
            raise NotFound("no such withdrawal")
        return _withdrawal(row)

    async def withdrawals(
        self,
        *,
        therapist_id: str | None = None,
        state: WithdrawalState | str | None = None,
        limit: int | None = None,
    ) -> list[Withdrawal]:
        """Withdrawals, newest first, of one therapist or all, in one state or any."""
        stmt = select(withdrawals).order_by(withdrawals.c.created_at.desc(), withdrawals.c.id)
        if therapist_id is not None:
            stmt = stmt.where(withdrawals.c.therapist_id == therapist_id)
        if state is not None:
            stmt = stmt.where(withdrawals.c.state == str(WithdrawalState(state)))
        if limit is not None:
            stmt = stmt.limit(limit)
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [_withdrawal(r) for r in rows]

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
        charge_minor: int,
        now: float,
    ) -> Transaction | None:
        """Write a session's charge: the client pays ``charge_minor``, the
        therapist is credited its share, the platform the rest.

        Once per session: ``None`` if the charge was already written (by this
        or another server). The client's balance never goes below zero: if it
        is short, what is there is charged and the difference recorded as
        ``shortfall_minor`` (and logged); billing is designed so that this
        does not happen. A charge of 0 writes a transaction without entries,
        so that the session still counts as billed.
        """
        session_id = check_user_id(session_id, "session_id")
        client = client_account(check_user_id(client_id, "client_id"))
        therapist = therapist_account(check_user_id(therapist_id, "therapist_id"))
        if type(charge_minor) is not int or not 0 <= charge_minor <= MAX_AMOUNT_MINOR:
            raise InvalidField(
                f"charge_minor must be a whole number from 0 to {MAX_AMOUNT_MINOR}",
                field="charge_minor",
            )
        at = _to_dt(now)
        async with self._write() as conn:
            txn_id = await self._claim(conn, TxnKind.SESSION_CHARGE, session_id, session_id, at)
            if txn_id is None:
                return None
            balances = await self._lock(conn, [client, therapist, PLATFORM_REVENUE], at)
            charged = min(charge_minor, balances[client])
            shortfall = charge_minor - charged
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
                charge_minor=charge_minor,
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

    # -- withdrawals ---------------------------------------------------------------
    async def request_withdrawal(
        self, therapist_id: str, amount_minor: int, now: float
    ) -> Withdrawal:
        """Set ``amount_minor`` of the therapist's available earnings aside
        for a payout (state ``awaiting_invoice``).

        The money moves to ``therapist_withdrawing`` in the same transaction,
        so it cannot be withdrawn twice. ``InvalidField`` for an amount that
        is not a whole number > 0, ``InsufficientFunds`` above what is
        available.
        """
        therapist_id = check_user_id(therapist_id, "therapist_id")
        amount_minor = check_amount(amount_minor)
        at = _to_dt(now)
        withdrawal = Withdrawal(
            id=_new_id("wd"),
            therapist_id=therapist_id,
            amount_minor=amount_minor,
            state=WithdrawalState.AWAITING_INVOICE,
            created_at=at.timestamp(),
            invoiced_at=None,
            payout_date=None,
            paid_at=None,
        )
        available, aside = therapist_account(therapist_id), withdrawing_account(therapist_id)
        async with self._write() as conn:
            txn_id = await self._claim(conn, TxnKind.WITHDRAWAL, withdrawal.id, None, at)
            assert txn_id is not None, "a new withdrawal id is never taken"
            balances = await self._lock(conn, [available, aside], at)
            legs = [(available, -amount_minor), (aside, amount_minor)]
            await self._move(conn, txn_id, legs, balances, at)
            await conn.execute(
                withdrawals.insert().values(
                    id=withdrawal.id,
                    therapist_id=therapist_id,
                    amount_minor=amount_minor,
                    state=str(withdrawal.state),
                    created_at=at,
                )
            )
        return withdrawal

    async def invoice_received(self, withdrawal_id: str, now: float) -> Withdrawal:
        """The therapist's invoice came in: ``awaiting_invoice`` -> ``scheduled``,
        to be paid on the Friday of the week after ``now``'s week (weeks start
        on Monday, in the deployment's time zone).

        ``NotFound`` for an unknown id, ``Conflict`` from any other state.
        """
        at = _to_dt(now)
        async with self._write() as conn:
            current = await self._locked_withdrawal(conn, withdrawal_id)
            self._require_state(current, WithdrawalState.AWAITING_INVOICE)
            payout = billing.payout_date(at, self.timezone)
            await conn.execute(
                update(withdrawals)
                .where(withdrawals.c.id == withdrawal_id)
                .values(state=str(WithdrawalState.SCHEDULED), invoiced_at=at, payout_date=payout)
            )
        return dataclasses.replace(
            current,
            state=WithdrawalState.SCHEDULED,
            invoiced_at=at.timestamp(),
            payout_date=payout,
        )

    async def mark_paid(self, withdrawal_id: str, now: float) -> Withdrawal:
        """The payout went out: ``scheduled`` -> ``paid``; the money leaves
        ``therapist_withdrawing`` for ``external:payouts``.

        ``NotFound`` for an unknown id, ``Conflict`` from any other state
        (paying twice included).
        """
        at = _to_dt(now)
        async with self._write() as conn:
            current = await self._locked_withdrawal(conn, withdrawal_id)
            self._require_state(current, WithdrawalState.SCHEDULED)
            txn_id = await self._claim(conn, TxnKind.WITHDRAWAL_PAID, current.id, None, at)
            if txn_id is None:  # pragma: no cover - the state says it was not paid
                raise Conflict("the withdrawal was already paid", state="paid")
            aside = withdrawing_account(current.therapist_id)
            balances = await self._lock(conn, [aside, EXTERNAL_PAYOUTS], at)
            legs = [(aside, -current.amount_minor), (EXTERNAL_PAYOUTS, current.amount_minor)]
            await self._move(conn, txn_id, legs, balances, at)
            await conn.execute(
                update(withdrawals)
                .where(withdrawals.c.id == withdrawal_id)
                .values(state=str(WithdrawalState.PAID), paid_at=at)
            )
        return dataclasses.replace(current, state=WithdrawalState.PAID, paid_at=at.timestamp())

    # -- audit ---------------------------------------------------------------------
    async def check(self) -> dict[str, Any]:
        """Audit the whole ledger.

        ``balanced`` is true when every transaction's entries sum to zero
        (``unbalanced_transactions`` lists those that do not), no account but
        the outside world's is or ever was below zero (``negative_accounts``),
        every account's stored balance equals the sum of its entries
        (``accounts_out_of_step``), and every account is in the deployment's
        currency (``other_currency_accounts``). ``transactions`` counts them.
        """
        a, e, t = ledger_accounts, ledger_entries, ledger_transactions
        unbalanced = (
            select(e.c.transaction_id)
            .group_by(e.c.transaction_id)
            .having(func.sum(e.c.amount_minor) != 0)
            .order_by(e.c.transaction_id)
        )
        negative = union(
            select(a.c.id).where(a.c.kind != _EXTERNAL, a.c.balance_minor < 0),
            select(e.c.account_id)
            .select_from(e.join(a, e.c.account_id == a.c.id))
            .where(a.c.kind != _EXTERNAL, e.c.balance_after_minor < 0),
        )
        sums = (
            select(e.c.account_id, func.sum(e.c.amount_minor).label("total"))
            .group_by(e.c.account_id)
            .subquery()
        )
        out_of_step = (
            select(a.c.id)
            .select_from(a.outerjoin(sums, sums.c.account_id == a.c.id))
            .where(a.c.balance_minor != func.coalesce(sums.c.total, 0))
            .order_by(a.c.id)
        )
        # Entries on accounts that have no row cannot exist (foreign key).
        other_currency = select(a.c.id).where(a.c.currency != self.currency).order_by(a.c.id)
        async with self._read() as conn:
            count = (await conn.execute(select(func.count()).select_from(t))).scalar_one()
            bad_txns = list((await conn.execute(unbalanced)).scalars())
            negatives = sorted((await conn.execute(negative)).scalars())
            stepped = list((await conn.execute(out_of_step)).scalars())
            foreign = list((await conn.execute(other_currency)).scalars())
        return {
            "balanced": not (bad_txns or negatives or stepped or foreign),
            "currency": self.currency,
            "transactions": int(count),
            "unbalanced_transactions": bad_txns,
            "negative_accounts": negatives,
            "accounts_out_of_step": stepped,
            "other_currency_accounts": foreign,
        }

    # -- internals -----------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        with translate_errors():
            async with self.db.engine.connect() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """One database transaction that commits when the block ends and rolls
        back when it raises. On SQLite it holds the write lock from the start
        (``BEGIN IMMEDIATE``), so nothing read inside can change before the
        writes; on PostgreSQL the account rows are locked as they are read
        (:meth:`_lock`)."""
        with translate_errors():
            async with self.db.engine.connect() as conn, conn.begin():
                if self.db.dialect == "sqlite":
                    # pysqlite begins lazily, at the first write: take the lock now.
                    await conn.exec_driver_sql("BEGIN IMMEDIATE")
                yield conn

    def _insert_or_nothing(
        self, table: Table, values: Mapping[str, Any] | Sequence[Mapping[str, Any]], key: list[str]
    ) -> Insert:
        rows: Any = [dict(v) for v in values] if isinstance(values, Sequence) else dict(values)
        if self.db.dialect == "postgresql":
            return pg_insert(table).values(rows).on_conflict_do_nothing(index_elements=key)
        return sqlite_insert(table).values(rows).on_conflict_do_nothing(index_elements=key)

    async def _balance(self, account: str) -> int:
        stmt = select(ledger_accounts.c.balance_minor).where(ledger_accounts.c.id == account)
        async with self._read() as conn:
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
        stmt = self._insert_or_nothing(
            ledger_transactions, values, ["kind", "reference"]
        ).returning(ledger_transactions.c.id)
        txn_id: str | None = (await conn.execute(stmt)).scalar_one_or_none()
        return txn_id

    async def _lock(
        self, conn: AsyncConnection, accounts: Sequence[str], at: dt.datetime
    ) -> dict[str, int]:
        """Make sure the accounts exist, lock their rows in the order of their
        ids (so two movements never wait on each other in a circle) and return
        their balances."""
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
        await conn.execute(self._insert_or_nothing(ledger_accounts, rows, ["id"]))
        stmt = (
            select(ledger_accounts.c.id, ledger_accounts.c.balance_minor)
            .where(ledger_accounts.c.id.in_(ids))
            .order_by(ledger_accounts.c.id)
            .with_for_update()
        )
        return {r.id: int(r.balance_minor) for r in await conn.execute(stmt)}

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
            if _account_kind(account) != _EXTERNAL and balances[account] + amount < 0:
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
        async with self._write() as conn:
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

    async def _locked_withdrawal(self, conn: AsyncConnection, withdrawal_id: str) -> Withdrawal:
        stmt = select(withdrawals).where(withdrawals.c.id == withdrawal_id).with_for_update()
        row = (await conn.execute(stmt)).mappings().one_or_none()
        if row is None:
            raise NotFound("no such withdrawal")
        return _withdrawal(row)

    @staticmethod
    def _require_state(withdrawal: Withdrawal, state: WithdrawalState) -> None:
        if withdrawal.state is not state:
            raise Conflict(
                f"the withdrawal is {withdrawal.state}, not {state}",
                state=str(withdrawal.state),
            )
