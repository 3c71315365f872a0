"""PostgreSQL connections that died while idle in the pool heal by themselves
(core.db._ping_if_idle): a connection idle PING_IDLE_S or more is pinged at
checkout and replaced when the ping fails; one handed back moments ago is
used as it is. A real PostgreSQL; the backends are killed with
pg_terminate_backend, as a database restart would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy import text

from core import db as dbmod
from core.db import Database
from core.errors import Unavailable


@pytest_asyncio.fixture
async def pg(postgres_server_url: str) -> AsyncIterator[Database]:
    database = Database.from_url(postgres_server_url)
    try:
        yield database
    finally:
        await database.aclose()


async def _backend_pid(database: Database) -> int:
    async with database.reading() as conn:
        pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    return int(pid)


async def _kill(database: Database, pid: int) -> None:
    """Terminate one backend from another connection (not the pool's)."""
    async with database.engine.connect() as admin:
        await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    await asyncio.sleep(0.2)  # let the backend go


async def test_an_idle_connection_killed_underneath_is_replaced(
    pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dbmod, "PING_IDLE_S", 0.0)  # every pooled connection counts as idle
    first = await _backend_pid(pg)
    assert await _backend_pid(pg) == first  # the pool hands the same connection back
    pooled = Database.from_url(str(pg.engine.url.render_as_string(hide_password=False)))
    try:
        await _kill(pooled, first)
    finally:
        await pooled.aclose()
    # The dead connection fails its ping at checkout and is replaced: no error.
    second = await _backend_pid(pg)
    assert second != first


async def test_a_connection_back_moments_ago_is_not_pinged(
    pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dbmod, "PING_IDLE_S", 3600.0)  # nothing counts as idle
    first = await _backend_pid(pg)
    other = Database.from_url(str(pg.engine.url.render_as_string(hide_password=False)))
    try:
        await _kill(other, first)
    finally:
        await other.aclose()
    # Unpinged, the dead connection fails this one call, and the pool is
    # invalidated: the next call connects afresh.
    with pytest.raises(Unavailable):
        await _backend_pid(pg)
    assert await _backend_pid(pg) != first


async def test_the_pool_keeps_its_size_and_closes_the_burst_beyond_it(
    postgres_server_url: str,
) -> None:
    """DISPATCH_DATABASE_POOL_SIZE / _MAX_OVERFLOW reach the engine: a burst
    of five on a pool of 3 + 2 runs at once, and only the three stay open."""
    sized = Database.from_url(postgres_server_url, pool_size=3, max_overflow=2)
    try:

        async def slow_pid() -> int:
            async with sized.reading() as conn:
                await conn.execute(text("SELECT pg_sleep(0.2)"))
                return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())

        pids = await asyncio.gather(*(slow_pid() for _ in range(5)))
        assert len(set(pids)) == 5  # all five at once: none waited for another
        pool = sized.engine.pool
        assert pool.size() == 3 and pool.checkedin() == 3  # type: ignore[attr-defined]
        again = await asyncio.gather(*(slow_pid() for _ in range(3)))
        assert set(again) <= set(pids)  # the kept three serve the next burst
    finally:
        await sized.aclose()
