"""The durable store's shared pieces: one :data:`metadata` for every domain's
tables, and the column types they share.

Each domain owns its tables in its own ``tables.py`` on this metadata:
``signaling/tables.py`` (sessions, chat, notes) and ``wallet/tables.py`` (the
ledger, withdrawals). The schema itself is made by Alembic
(``core/migrations``); the tables describe it to queries and must match the
latest revision (``tests/test_migrations.py`` compares them).

Times are timezone-aware UTC datetimes (:class:`UTCDateTime`), also on
SQLite, which stores them as naive text.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from sqlalchemy import BigInteger, DateTime, Dialect, Integer, MetaData
from sqlalchemy.types import TypeDecorator

#: Ids: user ids are 1..64 characters (PROTOCOL.md §2); server ids are shorter.
ID_LEN: Final = 64

metadata: Final = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """``TIMESTAMP WITH TIME ZONE`` that always hands back aware UTC datetimes.

    Values going in must be timezone-aware (naive ones are refused rather than
    guessed at); they are stored in UTC. SQLite keeps no zone, so what comes
    back naive is UTC by construction.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("UTCDateTime needs a timezone-aware datetime")
        value = value.astimezone(dt.UTC)
        # SQLite would otherwise store the "+00:00" suffix in some rows and not
        # others, which breaks ordering by text; store it naive, read it as UTC.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if not isinstance(value, dt.datetime):  # pragma: no cover - drivers parse it
            raise TypeError(f"expected a datetime from the database, got {type(value)!r}")
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


#: 64-bit on PostgreSQL; plain INTEGER on SQLite (which is 64-bit anyway).
BIGINT: Final = BigInteger().with_variant(Integer(), "sqlite")
