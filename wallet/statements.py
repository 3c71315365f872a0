"""What a user's sessions cost it or earned it, for the call log (PROTOCOL.md
§3.3, the ``amount_minor`` extension): read from the session-charge
transactions, so the call log and the transactions never disagree.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import func, select

from wallet.accounts import TxnKind
from wallet.entries import LedgerBase
from wallet.tables import ledger_entries, ledger_transactions


class Statements(LedgerBase):
    async def session_amounts(
        self, account_id: str, session_ids: Collection[str]
    ) -> dict[str, int]:
        """For each of ``session_ids`` charged already, what it moved on
        ``account_id`` (a client's account: what it paid; a therapist's: what
        it earned), as a positive number. A session not charged yet (open, or
        ended a moment ago) is absent."""
        if not session_ids:
            return {}
        t, e = ledger_transactions, ledger_entries
        stmt = (
            select(t.c.session_id, func.sum(e.c.amount_minor))
            .join(e, e.c.transaction_id == t.c.id)
            .where(
                t.c.kind == str(TxnKind.SESSION_CHARGE),
                t.c.session_id.in_(sorted(set(session_ids))),
                e.c.account_id == account_id,
            )
            .group_by(t.c.session_id)
        )
        async with self.db.reading() as conn:
            rows = (await conn.execute(stmt)).all()
        return {str(sid): abs(int(total)) for sid, total in rows}
