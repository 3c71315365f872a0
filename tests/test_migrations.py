"""core.db.Database.migrate: Alembic from the installed package, on SQLite
and PostgreSQL, from empty, repeated, and from several processes at once."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

import care.tables
import notify.tables
import photos.tables
import schedule.tables
import signaling.tables
import wallet.tables
from core.db import Database, alembic_config, normalize_url
from core.tables import metadata

# Each domain's tables register on the shared metadata when their module loads.
assert signaling.tables.sessions.metadata is wallet.tables.withdrawals.metadata is metadata
assert notify.tables.outbox.metadata is photos.tables.photos.metadata is metadata
assert schedule.tables.bookings.metadata is metadata
assert care.tables.safeguarding_alerts.metadata is metadata

TABLES = {
    "sessions",
    "chat_messages",
    "notes",
    "ledger_accounts",
    "ledger_transactions",
    "ledger_entries",
    "withdrawals",
    "outbox",
    "contacts",
    "client_contacts",
    "photos",
    "checkouts",
    "availability",
    "bookings",
    "wallet_holds",
    "safeguarding_alerts",
    "feedback",
}
HEAD = "0013"


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


async def _version(db: Database) -> list[str]:
    async with db.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    return [r[0] for r in rows]


async def _schema_diff(db: Database) -> list[Any]:
    def diff(conn: Connection) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    async with db.engine.connect() as conn:
        return await conn.run_sync(diff)


def test_the_scripts_come_from_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no alembic.ini anywhere near
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [HEAD]
    assert Path(script.dir).parent.name == "core"  # the base package holds the history
    assert (Path(script.dir) / "script.py.mako").is_file()


def test_urls_get_their_async_driver() -> None:
    assert normalize_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    assert normalize_url("postgresql://u@h/d").drivername == "postgresql+asyncpg"
    assert normalize_url("postgres://u@h/d").drivername == "postgresql+asyncpg"
    assert normalize_url("sqlite+aiosqlite:///x.db").drivername == "sqlite+aiosqlite"
    with pytest.raises(ValueError, match="unsupported database"):
        normalize_url("mysql://u@h/d")
    with pytest.raises(ValueError, match="not a database URL"):
        normalize_url("nonsense")


async def test_migrate_from_empty(database_url: str) -> None:
    db = Database.from_url(database_url)
    try:
        async with db.engine.connect() as conn:
            assert not (await conn.run_sync(_tables)) & TABLES
        await db.migrate()
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_tables) >= TABLES | {"alembic_version"}
        assert await _version(db) == [HEAD]
        # The tables module describes exactly what the migrations made.
        assert await _schema_diff(db) == []
    finally:
        await db.aclose()


async def test_migrate_is_idempotent_and_keeps_data(database_url: str) -> None:
    db = Database.from_url(database_url)
    try:
        await db.migrate()
        async with db.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO sessions (id, request_id, client_id, therapist_id, state, "
                    "terms_version, requested_at, claimed_at, matched_at) VALUES "
                    "('ses_1', 'req_1', 'c1', 't1', 'ready', 'v1', :t, :t, :t)"
                ),
                {"t": dt.datetime(2025, 1, 1, tzinfo=dt.UTC)},
            )
        await db.migrate()
        await db.migrate()
        assert await _version(db) == [HEAD]
        async with db.engine.connect() as conn:
            count = (await conn.execute(text("SELECT count(*) FROM sessions"))).scalar()
        assert count == 1
    finally:
        await db.aclose()


async def test_concurrent_migrate_from_several_databases(database_url: str) -> None:
    dbs = [Database.from_url(database_url) for _ in range(3)]
    try:
        await asyncio.gather(*(db.migrate() for db in dbs), dbs[0].migrate())
        for db in dbs:
            assert await _version(db) == [HEAD]
        assert await _schema_diff(dbs[1]) == []
    finally:
        for db in dbs:
            await db.aclose()


_MIGRATE_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from core.db import Database

    async def main() -> None:
        db = Database.from_url(sys.argv[1])
        try:
            await db.engine.dispose()  # nothing yet; imports are done
            print("ready", flush=True)
            sys.stdin.readline()  # wait for the others
            await db.migrate()
        finally:
            await db.aclose()

    asyncio.run(main())
    print("migrated")
    """
)


async def test_concurrent_migrate_from_several_processes(database_url: str) -> None:
    """Servers starting together: each process migrates, one at a time, through
    the database's own lock (advisory lock / BEGIN IMMEDIATE). The processes
    are released together once all have imported everything."""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _MIGRATE_SCRIPT,
            database_url,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONWARNINGS": "error"},
        )
        for _ in range(3)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"ready"
    outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate(b"go\n") for p in procs)), 30)
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
        assert out.decode().strip() == "migrated"
    db = Database.from_url(database_url)
    try:
        assert await _version(db) == [HEAD]
        assert await _schema_diff(db) == []
    finally:
        await db.aclose()


async def test_downgrade_and_upgrade_again(database_url: str) -> None:
    db = Database.from_url(database_url)
    try:
        await db.migrate()
        async with db.engine.connect() as conn:
            await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "base"))
            await conn.commit()
            assert not (await conn.run_sync(_tables)) & TABLES
        await db.migrate()
        assert await _version(db) == [HEAD]
    finally:
        await db.aclose()


async def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(
    tmp_path: Path,
) -> None:
    db = Database.from_url(f"sqlite:///{tmp_path / 'd.db'}")
    try:
        assert db.dialect == "sqlite"
        async with db.engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            busy_ms = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar()
            assert busy_ms is not None and busy_ms >= 1000
    finally:
        await db.aclose()


def test_migrations_ship_with_the_package() -> None:
    """pyproject.toml packages the migrations: ``core.migrations`` and its
    ``versions`` are packages, the template is package data."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())
    data = config["tool"]["setuptools"]["package-data"]
    assert "script.py.mako" in data["core.migrations"]
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "import setuptools; print(setuptools.find_packages(include=['core*']))",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "'core.migrations'" in found and "'core.migrations.versions'" in found


async def test_0008_widens_the_ledger_kinds_of_a_ledger_in_use(database_url: str) -> None:
    """Revision 0008 lets the ledger take booking charges and cancellation
    fees, on a ledger that already has entries (SQLite cannot copy a table
    that others refer to with foreign keys on: the CHECK is widened in place),
    and keeps the data and the constraint's name."""
    db = Database.from_url(database_url)
    at = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    try:
        async with db.engine.connect() as conn:
            await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "0007"))
            await conn.commit()
        async with db.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO ledger_accounts (id, kind, currency, balance_minor, created_at) "
                    "VALUES ('client:c1', 'client', 'GBP', 100, :t), "
                    "('external:payments', 'external', 'GBP', -100, :t)"
                ),
                {"t": at},
            )
            await conn.execute(
                text(
                    "INSERT INTO ledger_transactions (id, kind, reference, session_id, "
                    "shortfall_minor, created_at) VALUES ('txn_1', 'topup', 'r1', NULL, 0, :t)"
                ),
                {"t": at},
            )
            await conn.execute(
                text(
                    "INSERT INTO ledger_entries (transaction_id, account_id, amount_minor, "
                    "balance_after_minor, created_at) VALUES "
                    "('txn_1', 'client:c1', 100, 100, :t), "
                    "('txn_1', 'external:payments', -100, -100, :t)"
                ),
                {"t": at},
            )
        await db.migrate()
        assert await _version(db) == [HEAD]
        insert = text(
            "INSERT INTO ledger_transactions (id, kind, reference, session_id, shortfall_minor, "
            "created_at) VALUES (:id, :kind, 'bkg_1', NULL, 0, :t)"
        )
        async with db.engine.begin() as conn:
            for kind in ("booking_charge", "cancellation_fee"):
                await conn.execute(insert, {"id": f"txn_{kind}", "kind": kind, "t": at})
        with pytest.raises(Exception, match=r"(?i)check"):
            async with db.engine.begin() as conn:
                await conn.execute(insert, {"id": "txn_x", "kind": "gift", "t": at})
        async with db.engine.connect() as conn:
            entries = (await conn.execute(text("SELECT count(*) FROM ledger_entries"))).scalar()
            checks = await conn.run_sync(
                lambda c: {
                    x["name"] for x in inspect(c).get_check_constraints("ledger_transactions")
                }
            )
        assert entries == 2
        assert checks == {"ck_ledger_transactions_kind"}
        # Down again is refused while booking movements exist (in one
        # transaction, as Database.migrate runs one: nothing is undone).
        async with db.engine.connect() as conn:
            if db.dialect == "sqlite":
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            with pytest.raises(RuntimeError, match="booking charges"):
                await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0007"))
            await conn.rollback()
        assert await _version(db) == [HEAD]
    finally:
        await db.aclose()
