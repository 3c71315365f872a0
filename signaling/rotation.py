"""Re-encryption of one encrypted column under the cipher's primary key
(``dispatch keys rotate``): the walk every store of encrypted text shares
(chat and notes in :mod:`signaling.records`, safeguarding concerns and
feedback comments in ``care/``).

The table is walked by its key, ``batch`` rows per transaction, so a large
table never holds one long transaction and an interrupted rotation can be run
again (a row already under the primary key is simply re-encrypted). Rows whose
column is NULL are skipped. A row that no key opens raises
:class:`signaling.crypto.DataKeyError`, the rows before it rotated.
"""

from __future__ import annotations

from sqlalchemy import Column, Table, bindparam, select, update

from core.db import Database
from signaling.crypto import Cipher


async def rotate_column(
    db: Database, cipher: Cipher, table: Table, key: Column[str], column: Column[bytes], batch: int
) -> int:
    """Re-encrypt ``column`` of every row of ``table``; returns how many rows."""
    done, after = 0, ""
    stmt = (
        update(table)
        .where(key == bindparam("row_key"))
        .values({column.name: bindparam("new_value")})
    )
    while True:
        async with db.session() as s, s.begin():
            rows = (
                await s.execute(
                    select(key, column)
                    .where(key > after, column.is_not(None))
                    .order_by(key)
                    .limit(batch)
                )
            ).all()
            if not rows:
                return done
            params = [{"row_key": r[0], "new_value": cipher.rotate(bytes(r[1]))} for r in rows]
            conn = await s.connection()
            await conn.execute(stmt, params)
        done += len(rows)
        after = rows[-1][0]
