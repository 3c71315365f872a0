"""Clients' checkouts (PROTOCOL.md §9): the rows of card top-ups and the one
step that turns a paid checkout into money in the wallet.

:class:`Checkout` is a row of the ``checkouts`` table; :class:`Checkouts` is
the part of :class:`wallet.ledger.Ledger` that records checkouts and credits
them. Where the money comes from (Stripe, or the ``--dev`` test page) is
:mod:`wallet.cards`'.

Crediting (:meth:`Checkouts.credit_checkout`) is one database transaction:
the ledger's top-up (``external:payments -> client:<id>``, its reference the
checkout's id) and the checkout row marked ``paid`` land together or not at
all. It happens once per checkout id, whatever arrives twice: Stripe's
retries, the same event on several servers at once, a replayed "Pay" of the
test page. The top-up's transaction row is the first write (``(kind,
reference)`` is unique; on PostgreSQL a racing twin waits for it to commit and
then writes nothing), so the row lock order is the ledger's own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from core.errors import Conflict, NotFound
from core.logs import get_logger
from wallet.accounts import (
    EXTERNAL_PAYMENTS,
    Transaction,
    TxnKind,
    _to_dt,
    check_amount,
    check_reference,
    check_user_id,
    client_account,
)
from wallet.entries import LedgerBase
from wallet.tables import checkouts

__all__ = ["Checkout", "CheckoutState", "Checkouts", "Credit", "Method"]

log = get_logger("dispatch.wallet", component="checkouts")


class CheckoutState(StrEnum):
    OPEN = "open"
    PAID = "paid"
    EXPIRED = "expired"


class Method(StrEnum):
    """How a checkout is paid: ``card`` through Stripe, ``test`` on the
    ``--dev`` page (no money moves)."""

    CARD = "card"
    TEST = "test"


@dataclass(frozen=True, slots=True)
class Checkout:
    """One checkout; ``paid_at`` is set once it is paid."""

    id: str
    client_id: str
    amount_minor: int
    currency: str
    method: Method
    state: CheckoutState
    created_at: float
    paid_at: float | None

    def public(self) -> dict[str, Any]:
        """What ``GET /v1/wallet/checkout/{id}`` shows its client."""
        return {
            "checkout_id": self.id,
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "state": str(self.state),
        }


@dataclass(frozen=True, slots=True)
class Credit:
    """What :meth:`Checkouts.credit_checkout` did: the checkout as it now is,
    and the top-up (``replayed`` set when an earlier call had written it)."""

    checkout: Checkout
    transaction: Transaction

    @property
    def replayed(self) -> bool:
        return self.transaction.replayed


def _checkout(row: RowMapping) -> Checkout:
    return Checkout(
        id=row["id"],
        client_id=row["client_id"],
        amount_minor=int(row["amount_minor"]),
        currency=row["currency"],
        method=Method(row["method"]),
        state=CheckoutState(row["state"]),
        created_at=row["created_at"].timestamp(),
        paid_at=None if row["paid_at"] is None else row["paid_at"].timestamp(),
    )


class Checkouts(LedgerBase):
    """Checkouts and their crediting, on top of :class:`LedgerBase`."""

    # -- reads ---------------------------------------------------------------------
    async def checkout(self, checkout_id: str) -> Checkout:
        """One checkout; ``NotFound`` if there is none by that id."""
        async with self.db.reading() as conn:
            row = (
                (await conn.execute(select(checkouts).where(checkouts.c.id == checkout_id)))
                .mappings()
                .one_or_none()
            )
        if row is None:
            raise NotFound("no such checkout")
        return _checkout(row)

    # -- changes -------------------------------------------------------------------
    async def open_checkout(
        self, checkout_id: str, client_id: str, amount_minor: int, method: Method, now: float
    ) -> Checkout:
        """Record a checkout that was just created (state ``open``), in the
        ledger's currency. A row already there (the payment's webhook won the
        race with this call) is left as it is and returned."""
        checkout_id = check_reference(checkout_id)
        client_id = check_user_id(client_id, "client_id")
        amount_minor = check_amount(amount_minor)
        at = _to_dt(now)
        values = {
            "id": checkout_id,
            "client_id": client_id,
            "amount_minor": amount_minor,
            "currency": self.currency,
            "method": str(method),
            "state": str(CheckoutState.OPEN),
            "created_at": at,
            "paid_at": None,
        }
        async with self.db.writing() as conn:
            await conn.execute(self.db.insert_or_nothing(checkouts, values, ["id"]))
            return await self._locked_checkout(conn, checkout_id)

    async def credit_checkout(
        self,
        checkout_id: str,
        client_id: str,
        amount_minor: int,
        method: Method,
        now: float,
    ) -> Credit:
        """Credit a paid checkout to the client's wallet and mark it ``paid``,
        in one transaction, once per ``checkout_id`` (module docstring).

        ``client_id`` and ``amount_minor`` are what the payment says (for
        Stripe, its ``client_reference_id`` and ``amount_total``: the source
        of truth). A checkout with no row yet is recorded as it is credited;
        one whose row says otherwise is credited as the payment says, the row
        corrected and the difference logged. A replay writes nothing and
        returns the first credit (``replayed``). ``Conflict`` if the id was
        already the reference of another top-up (another client or amount);
        ``InvalidField`` for a bad id, client id or amount.
        """
        checkout_id = check_reference(checkout_id)
        client_id = check_user_id(client_id, "client_id")
        amount_minor = check_amount(amount_minor)
        account = client_account(client_id)
        at = _to_dt(now)
        async with self.db.writing() as conn:
            txn_id = await self._claim(conn, TxnKind.TOPUP, checkout_id, None, at)
            if txn_id is None:
                first = await self._load(conn, TxnKind.TOPUP, checkout_id)
                entry = first.entry_for(account)
                if entry is None or entry.amount_minor != amount_minor:
                    raise Conflict(
                        "this checkout was already credited to another client or amount",
                        field="checkout_id",
                    )
                row = await self._paid_row(conn, checkout_id, client_id, amount_minor, method, at)
                return Credit(row, dataclasses.replace(first, replayed=True))
            legs = [(EXTERNAL_PAYMENTS, -amount_minor), (account, amount_minor)]
            balances = await self._lock(conn, [a for a, _ in legs], at)
            entries = await self._move(conn, txn_id, legs, balances, at)
            paid = await self._paid_row(conn, checkout_id, client_id, amount_minor, method, at)
        log.info(
            "checkout.credited",
            checkout_id=checkout_id,
            user_id=client_id,
            amount_minor=amount_minor,
            method=str(method),
        )
        txn = Transaction(txn_id, TxnKind.TOPUP, checkout_id, None, at.timestamp(), entries)
        return Credit(paid, txn)

    async def expire_checkout(self, checkout_id: str, now: float) -> Checkout | None:
        """An ``open`` checkout that can no longer be paid turns ``expired``;
        a paid one stays paid. ``None`` for a checkout with no row."""
        async with self.db.writing() as conn:
            await conn.execute(
                update(checkouts)
                .where(checkouts.c.id == checkout_id, checkouts.c.state == str(CheckoutState.OPEN))
                .values(state=str(CheckoutState.EXPIRED))
            )
            row = (
                (await conn.execute(select(checkouts).where(checkouts.c.id == checkout_id)))
                .mappings()
                .one_or_none()
            )
        return None if row is None else _checkout(row)

    # -- internals -----------------------------------------------------------------
    async def _locked_checkout(self, conn: AsyncConnection, checkout_id: str) -> Checkout:
        stmt = select(checkouts).where(checkouts.c.id == checkout_id).with_for_update()
        return _checkout((await conn.execute(stmt)).mappings().one())

    async def _paid_row(
        self,
        conn: AsyncConnection,
        checkout_id: str,
        client_id: str,
        amount_minor: int,
        method: Method,
        at: dt.datetime,
    ) -> Checkout:
        """Make the checkout's row say ``paid`` for ``client_id`` and
        ``amount_minor`` (inserting it if there is none; ``method`` is used
        only then), and return it."""
        values = {
            "id": checkout_id,
            "client_id": client_id,
            "amount_minor": amount_minor,
            "currency": self.currency,
            "method": str(method),
            "state": str(CheckoutState.PAID),
            "created_at": at,
            "paid_at": at,
        }
        await conn.execute(self.db.insert_or_nothing(checkouts, values, ["id"]))
        row = await self._locked_checkout(conn, checkout_id)
        if (row.client_id, row.amount_minor) != (client_id, amount_minor):
            log.warning(
                "checkout.corrected",
                checkout_id=checkout_id,
                user_id=client_id,
                recorded_user_id=row.client_id,
                amount_minor=amount_minor,
                recorded_amount_minor=row.amount_minor,
            )
        if row.state is CheckoutState.PAID and (row.client_id, row.amount_minor) == (
            client_id,
            amount_minor,
        ):
            return row
        paid_at = at if row.paid_at is None else dt.datetime.fromtimestamp(row.paid_at, dt.UTC)
        await conn.execute(
            update(checkouts)
            .where(checkouts.c.id == checkout_id)
            .values(
                client_id=client_id,
                amount_minor=amount_minor,
                state=str(CheckoutState.PAID),
                paid_at=paid_at,
            )
        )
        return dataclasses.replace(
            row,
            client_id=client_id,
            amount_minor=amount_minor,
            state=CheckoutState.PAID,
            paid_at=paid_at.timestamp(),
        )
