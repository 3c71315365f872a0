"""Therapists' payouts (PROTOCOL.md §6): earnings and withdrawals.

:class:`WithdrawalState` and :class:`Withdrawal` (a row of the ``withdrawals``
table), and :class:`Payouts`, the part of :class:`wallet.ledger.Ledger` that
reports a therapist's earnings and moves them out: ``awaiting_invoice`` (the
money set aside in ``therapist_withdrawing``) -> ``scheduled`` (a payout date)
-> ``paid`` (the money gone to ``external:payouts``). Each step is one
movement of :mod:`wallet.entries`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import rfc3339
from core.errors import Conflict, NotFound
from wallet import billing
from wallet.accounts import (
    EXTERNAL_PAYOUTS,
    TxnKind,
    _new_id,
    _to_dt,
    check_amount,
    check_user_id,
    therapist_account,
    withdrawing_account,
)
from wallet.entries import LedgerBase
from wallet.tables import ledger_accounts, withdrawals

__all__ = ["Payouts", "Withdrawal", "WithdrawalState"]


class WithdrawalState(StrEnum):
    AWAITING_INVOICE = "awaiting_invoice"
    SCHEDULED = "scheduled"
    PAID = "paid"


#: Work done inside the transaction of a withdrawal's change, with the result.
AlsoInTxn = Callable[[AsyncConnection, "Withdrawal"], Awaitable[None]]


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


def _opt_ts(value: dt.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


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


class Payouts(LedgerBase):
    """A therapist's earnings and withdrawals, on top of :class:`LedgerBase`."""

    # -- reads ---------------------------------------------------------------------
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
        async with self.db.reading() as conn:
            available, withdrawing, paid_out = (await conn.execute(stmt)).one()
        return {
            "available_minor": int(available or 0),
            "withdrawing_minor": int(withdrawing or 0),
            "paid_out_minor": int(paid_out or 0),
        }

    async def withdrawal(self, withdrawal_id: str) -> Withdrawal:
        """One withdrawal; ``NotFound`` if there is none by that id."""
        async with self.db.reading() as conn:
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
        async with self.db.reading() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [_withdrawal(r) for r in rows]

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
        async with self.db.writing() as conn:
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

    async def invoice_received(
        self, withdrawal_id: str, now: float, *, also: AlsoInTxn | None = None
    ) -> Withdrawal:
        """The therapist's invoice came in: ``awaiting_invoice`` -> ``scheduled``,
        to be paid on the Friday of the week after ``now``'s week (weeks start
        on Monday, in the deployment's time zone). ``also`` runs inside the
        same transaction with the scheduled withdrawal (the app queues the
        "withdrawal scheduled" email there: both land, or neither).

        ``NotFound`` for an unknown id, ``Conflict`` from any other state.
        """
        at = _to_dt(now)
        async with self.db.writing() as conn:
            current = await self._locked_withdrawal(conn, withdrawal_id)
            self._require_state(current, WithdrawalState.AWAITING_INVOICE)
            payout = billing.payout_date(at, self.timezone)
            await conn.execute(
                update(withdrawals)
                .where(withdrawals.c.id == withdrawal_id)
                .values(state=str(WithdrawalState.SCHEDULED), invoiced_at=at, payout_date=payout)
            )
            scheduled = dataclasses.replace(
                current,
                state=WithdrawalState.SCHEDULED,
                invoiced_at=at.timestamp(),
                payout_date=payout,
            )
            if also is not None:
                await also(conn, scheduled)
        return scheduled

    async def mark_paid(self, withdrawal_id: str, now: float) -> Withdrawal:
        """The payout went out: ``scheduled`` -> ``paid``; the money leaves
        ``therapist_withdrawing`` for ``external:payouts``.

        ``NotFound`` for an unknown id, ``Conflict`` from any other state
        (paying twice included).
        """
        at = _to_dt(now)
        async with self.db.writing() as conn:
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

    # -- internals -----------------------------------------------------------------
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
