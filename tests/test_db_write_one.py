"""core.db.Database.write_one: a write that is one statement runs with no
transaction around it on PostgreSQL (autocommit: no BEGIN and COMMIT round
trips), and as a locked write transaction on SQLite; on both it is written
when the block ends, and an idempotent insert in it is still idempotent."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select, text

from core.db import Database
from wallet.tables import ledger_transactions


def _txn(txn_id: str) -> dict[str, object]:
    return {
        "id": txn_id,
        "kind": "session_charge",
        "reference": "ses_1",
        "session_id": "ses_1",
        "shortfall_minor": 0,
        "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    }


async def _count(db: Database) -> int:
    async with db.reading() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(ledger_transactions))).scalar_one()
        )


async def test_one_write_is_written_and_stays_idempotent(db: Database, other_db: Database) -> None:
    stmt = db.insert_or_nothing(ledger_transactions, _txn("txn_1"), ["kind", "reference"])
    async with db.write_one() as conn:
        assert (await conn.execute(stmt.returning(ledger_transactions.c.id))).scalar() == "txn_1"
    assert await _count(other_db) == 1
    again = db.insert_or_nothing(ledger_transactions, _txn("txn_2"), ["kind", "reference"])
    async with db.write_one() as conn:
        assert (await conn.execute(again.returning(ledger_transactions.c.id))).scalar() is None
    assert await _count(other_db) == 1


async def test_on_postgresql_no_transaction_is_held_open(db: Database, other_db: Database) -> None:
    if db.dialect != "postgresql":
        # SQLite: a write transaction holding the file's lock (Database.writing).
        async with db.write_one() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
            assert conn.in_transaction()
        return
    stmt = db.insert_or_nothing(ledger_transactions, _txn("txn_1"), ["kind", "reference"])
    async with db.write_one() as conn:
        await conn.execute(stmt)
        # Committed by itself: another server sees it before the block ends.
        assert await _count(other_db) == 1
        # Each statement its own transaction: now() (the transaction's start)
        # moves from one to the next, where inside one transaction it stays.
        first = (await conn.execute(text("SELECT now()"))).scalar()
        second = (await conn.execute(text("SELECT now()"))).scalar()
        assert first != second
    async with db.writing() as conn:
        first = (await conn.execute(text("SELECT now()"))).scalar()
        second = (await conn.execute(text("SELECT now()"))).scalar()
        assert first == second
