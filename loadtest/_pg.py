"""A throwaway PostgreSQL database for one load-test run (``--postgres``).

The servers of several processes share one database in production, and
PostgreSQL is what the operations guide prescribes for that; SQLite shared by
two processes takes turns on one file's write lock. ``ADMIN_URL`` names a
database on the server the run may create and drop databases on
(``postgresql://postgres@127.0.0.1:5432/postgres``); the run gets its own,
``qc_lt_<hex>``, dropped at the end whatever happened.
"""

from __future__ import annotations

import asyncio
import secrets
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]

#: Where ``make bench`` looks for a PostgreSQL it may use (LOADTEST_POSTGRES overrides).
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


async def _execute(admin_url: str, sql: str) -> None:
    conn = await asyncpg.connect(admin_url, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def reachable(admin_url: str) -> str | None:
    """None when the server answers at ``admin_url``; else why not."""
    try:
        asyncio.run(_execute(admin_url, "SELECT 1"))
    except Exception as exc:  # any reason: the caller skips what needs it
        return f"{type(exc).__name__}: {exc}"
    return None


def create(admin_url: str) -> tuple[str, str]:
    """A new empty database: its name, and its URL for the servers."""
    name = f"qc_lt_{secrets.token_hex(4)}"
    asyncio.run(_execute(admin_url, f'CREATE DATABASE "{name}"'))
    parts = urlsplit(admin_url)
    return name, urlunsplit(parts._replace(path=f"/{name}"))


def drop(admin_url: str, name: str) -> None:
    asyncio.run(_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
