"""Per-client data keys (PROTOCOL.md §10): envelope encryption that makes
erasure final.

Each client that has care records of its own (form answers) gets a fresh
Fernet key, stored in ``data_keys`` sealed by the service's
:class:`signaling.crypto.Cipher` (``DISPATCH_DATA_KEY``). The client's records
are sealed by its own key; :meth:`DataKeys.destroy` deletes that key, after
which every copy of those records, in the database's free pages, a replica
or a backup, opens with no key anywhere: crypto-shredding.

Rotating ``DISPATCH_DATA_KEY`` re-seals the data keys only
(:meth:`DataKeys.rotate_keys`); the records under them stay as they are.

Keys are never cached across calls, so a key destroyed on one server is gone
for every server at once. Keys are never logged.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from care.tables import data_keys
from core.db import Database
from signaling.crypto import Cipher, new_key
from signaling.rotation import rotate_column

__all__ = ["DataKeys"]

#: Rows re-sealed per transaction by :meth:`DataKeys.rotate_keys`.
ROTATE_BATCH: Final = 500


class DataKeys:
    """The clients' own keys in the database, sealed by ``master``."""

    def __init__(self, db: Database, master: Cipher) -> None:
        self.db = db
        self._master = master

    async def cipher_for(self, user_id: str, *, create: bool) -> Cipher | None:
        """``user_id``'s cipher: its key, made now when ``create`` and it has
        none (two servers making one at once agree on the first), else None."""
        stmt = select(data_keys.c.sealed_key).where(data_keys.c.user_id == user_id)
        async with self.db.reading() as conn:
            sealed = (await conn.execute(stmt)).scalar_one_or_none()
        if sealed is None and create:
            values = {
                "user_id": user_id,
                "sealed_key": self._master.encrypt(new_key()),
                "created_at": dt.datetime.now(dt.UTC),
            }
            async with self.db.session() as s, s.begin():
                await s.execute(self.db.insert_or_nothing(data_keys, values, ["user_id"]))
                sealed = (await s.execute(stmt)).scalar_one()
        if sealed is None:
            return None
        return Cipher([self._master.decrypt(bytes(sealed))])

    async def destroy(self, s: AsyncSession, user_id: str) -> bool:
        """Delete ``user_id``'s key inside the caller's transaction ``s`` (the
        erasure's); True when there was one."""
        result = await s.execute(delete(data_keys).where(data_keys.c.user_id == user_id))
        return bool(getattr(result, "rowcount", 0))

    async def rotate_keys(self, *, batch: int = ROTATE_BATCH) -> int:
        """Re-seal every data key under the master cipher's primary key;
        returns how many (``dispatch keys rotate``)."""
        t = data_keys.c
        return await rotate_column(self.db, self._master, data_keys, t.user_id, t.sealed_key, batch)
