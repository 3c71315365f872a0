"""The ledger's audit (``GET /v1/ledger/check``, ``dispatch ledger check``):
:class:`Audit`, the part of :class:`wallet.ledger.Ledger` that checks that the
books of :mod:`wallet.entries` hold together.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, literal, select, union

from wallet.accounts import _EXTERNAL, client_account
from wallet.entries import LedgerBase
from wallet.tables import (
    HOLD_HELD,
    ledger_accounts,
    ledger_entries,
    ledger_transactions,
    wallet_holds,
)

__all__ = ["Audit"]


class Audit(LedgerBase):
    """The audit of the whole ledger, on top of :class:`LedgerBase`."""

    async def check(self) -> dict[str, Any]:
        """Audit the whole ledger.

        ``balanced`` is true when every transaction's entries sum to zero
        (``unbalanced_transactions`` lists those that do not), no account but
        the outside world's is or ever was below zero (``negative_accounts``),
        every account's stored balance equals the sum of its entries
        (``accounts_out_of_step``), every account is in the deployment's
        currency (``other_currency_accounts``), and no client's active holds
        keep more than its balance (``overheld_accounts``, PROTOCOL.md §8).
        ``transactions`` counts them.
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
        h = wallet_holds
        held = (
            select(h.c.client_id, func.sum(h.c.amount_minor).label("total"))
            .where(h.c.state == HOLD_HELD)
            .group_by(h.c.client_id)
            .subquery()
        )
        # A hold with no account row at all keeps money from an empty wallet.
        wallet = a.c.id == literal("client:") + held.c.client_id
        overheld = (
            select(held.c.client_id)
            .select_from(held.outerjoin(a, wallet))
            .where(held.c.total > func.coalesce(a.c.balance_minor, 0))
            .order_by(held.c.client_id)
        )
        async with self.db.reading() as conn:
            count = (await conn.execute(select(func.count()).select_from(t))).scalar_one()
            bad_txns = list((await conn.execute(unbalanced)).scalars())
            negatives = sorted((await conn.execute(negative)).scalars())
            stepped = list((await conn.execute(out_of_step)).scalars())
            foreign = list((await conn.execute(other_currency)).scalars())
            overs = [client_account(c) for c in (await conn.execute(overheld)).scalars()]
        return {
            "balanced": not (bad_txns or negatives or stepped or foreign or overs),
            "currency": self.currency,
            "transactions": int(count),
            "unbalanced_transactions": bad_txns,
            "negative_accounts": negatives,
            "accounts_out_of_step": stepped,
            "other_currency_accounts": foreign,
            "overheld_accounts": overs,
        }
