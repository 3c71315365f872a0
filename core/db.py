"""The durable store's connection: one :class:`Database` per process.

``DISPATCH_DATABASE_URL`` picks the backend: ``sqlite+aiosqlite:///path`` (the
default, one host) or ``postgresql+asyncpg://user@host/db`` (production, any
number of servers). Plain ``sqlite://`` and ``postgresql://`` (or
``postgres://``) URLs get those async drivers.

* SQLite connections run in WAL mode (readers do not block the writer), with
  foreign keys enforced and a busy timeout, so that several processes on one
  host can share the file.
* PostgreSQL connections are checked before use when they have been idle
  in the pool for :data:`PING_IDLE_S` or more (:func:`_ping_if_idle`; a
  connection handed back moments ago is taken as alive): a restarted
  database heals by itself.

Every error of the driver or the network becomes
:class:`core.errors.Unavailable` at this boundary (:meth:`Database.session`,
:meth:`~Database.ping`, :meth:`~Database.migrate`); constraint violations and
programming errors pass through unchanged. The engine hides bound parameters
from its error messages, so a failure never prints chat, notes or names.

The schema is migrated by Alembic from the installed package
(``core/migrations``); no ``alembic.ini`` is needed (:func:`alembic_config`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, Final

from alembic import command
from alembic.config import Config
from sqlalchemy import Insert, Table, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import await_only

from core.errors import Unavailable

__all__ = ["SCRIPT_LOCATION", "Database", "alembic_config", "normalize_url", "translate_errors"]

#: Where Alembic finds ``env.py`` and ``versions/``: inside the installed package.
SCRIPT_LOCATION: Final = "core:migrations"

#: How long a SQLite connection waits for another process's write lock.
SQLITE_BUSY_TIMEOUT_MS: Final = 15_000

#: PostgreSQL advisory lock held while migrating, so that servers starting
#: together migrate one after the other (any constant works; this spells "qcdisp").
_PG_MIGRATE_LOCK: Final = 0x71_63_64_69_73_70

_SQLITE_DRIVER: Final = "sqlite+aiosqlite"
_PG_DRIVER: Final = "postgresql+asyncpg"

#: Errors that mean "the database did not answer", whatever the driver.
_DOWN: Final = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # no pooled connection came free in time
    OSError,  # refused, reset, unreachable (asyncpg's connect raises these raw)
    TimeoutError,
)

#: PostgreSQL error classes that mean "not now" rather than "wrong": connection
#: exception, insufficient resources, operator intervention, system error.
_DOWN_SQLSTATE_CLASSES: Final = frozenset({"08", "53", "57", "58"})

# Alembic's ``context`` and ``op`` are module-level proxies, so two upgrades
# interleaving in one process would mix them up: one at a time per event loop.
_migrate_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def normalize_url(url: str) -> URL:
    """``url`` with its async driver named; ``ValueError`` for other backends."""
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError:
        raise ValueError("not a database URL (e.g. sqlite+aiosqlite:///./dispatch.db)") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername=_SQLITE_DRIVER)
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername=_PG_DRIVER)
    raise ValueError(
        f"unsupported database {parsed.drivername!r}: use sqlite+aiosqlite:// or "
        "postgresql+asyncpg://"
    )


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn a driver or connection failure raised inside the block into
    :class:`Unavailable`; everything else passes through."""
    try:
        yield
    except sa_exc.DBAPIError as exc:
        if _is_down(exc):
            raise Unavailable(f"the database is unavailable ({type(exc).__name__})") from exc
        raise
    except _DOWN as exc:
        raise Unavailable(f"the database is unavailable ({type(exc).__name__})") from exc


def _is_down(exc: sa_exc.DBAPIError) -> bool:
    if exc.connection_invalidated or isinstance(exc, _DOWN):
        return True
    if exc.statement is None:
        # Raised while connecting (unknown database or role, too many
        # connections, server starting up): the database is not usable.
        return True
    sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
    return sqlstate[:2] in _DOWN_SQLSTATE_CLASSES


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` for the package's migrations, built in code.

    With ``connection`` (a sync connection, as ``AsyncConnection.run_sync``
    hands out) ``env.py`` migrates over it, inside the caller's transaction.
    Developers can also pass it to ``alembic.command.revision(...,
    autogenerate=True)`` after setting ``sqlalchemy.url``.
    """
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _upgrade_head(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        _use_wal(cursor)
    finally:
        cursor.close()


def _use_wal(cursor: Any) -> None:
    """Switch the file to WAL, waiting (bounded) while another connection holds
    its lock: SQLite answers "database is locked" at once for this change,
    whatever the busy timeout, so several servers starting together on a new
    file would otherwise fail. A file already in WAL needs no lock at all."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.01
    while True:
        try:
            cursor.execute("PRAGMA journal_mode")
            if str(cursor.fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except Exception as exc:  # the driver's OperationalError, whatever its module
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        # We run inside SQLAlchemy's async adaptation: sleep without blocking the loop.
        await_only(asyncio.sleep(delay))
        delay = min(delay * 2, 0.25)


#: A pooled PostgreSQL connection idle at least this long is pinged before use.
PING_IDLE_S: Final = 1.0


def _ping_if_idle(engine: AsyncEngine) -> None:
    """SQLAlchemy's ``pool_pre_ping``, for connections idle ``PING_IDLE_S``
    or more only. The stock option pings at every checkout: one round trip
    per database call, about a tenth of a server's samples in py-spy during
    the lifecycle load test, for connections that were in use milliseconds
    before. A ping that fails raises ``DisconnectionError``: the pool drops
    that connection and checks out (or opens) another, up to three times.
    A database restarted within the last second can still fail one call
    (``Unavailable``); the failure invalidates the pool, and the next call
    connects afresh."""
    dialect = engine.dialect

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < PING_IDLE_S:
            return  # new, or back in the pool a moment ago
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise sa_exc.DisconnectionError("the connection did not answer a ping") from exc
        if not alive:
            raise sa_exc.DisconnectionError("the connection did not answer a ping")


class Database:
    """An async engine and its sessions. Make one with :meth:`from_url`, call
    :meth:`migrate` once at start-up, :meth:`aclose` at shutdown."""

    def __init__(self, engine: AsyncEngine, *, connect_timeout_s: float = 5.0) -> None:
        self.engine = engine
        self.connect_timeout_s = connect_timeout_s
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        # Reads on PostgreSQL run in autocommit (the same pool): at READ
        # COMMITTED every statement sees a fresh snapshot anyway, so a
        # transaction around a read buys nothing but a BEGIN and a ROLLBACK
        # (two round trips; about a tenth of a server's samples in py-spy
        # during the lifecycle load test). SQLite keeps its transaction: there
        # one read transaction is one snapshot.
        self._reader = (
            engine
            if engine.dialect.name == "sqlite"
            else engine.execution_options(isolation_level="AUTOCOMMIT")
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        connect_timeout_s: float = 5.0,
        pool_size: int = 10,
        max_overflow: int = 10,
    ) -> Database:
        """A database for ``url`` (no connection is made yet).

        ``connect_timeout_s`` bounds a PostgreSQL connection attempt and
        :meth:`ping`; ``pool_size`` PostgreSQL connections stay open, and up
        to ``max_overflow`` more are opened for a burst (each closed again when
        it comes back to a full pool: a pool too small for the load opens and
        closes a connection per statement). Raises ``ValueError`` for a URL of
        another backend.
        """
        target = normalize_url(url)
        engine: AsyncEngine
        if target.get_backend_name() == "sqlite":
            engine = create_async_engine(
                target,
                hide_parameters=True,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            )
            event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        else:
            engine = create_async_engine(
                target,
                hide_parameters=True,
                connect_args={"timeout": connect_timeout_s},
                pool_size=pool_size,
                max_overflow=max_overflow,
            )
            _ping_if_idle(engine)
        return cls(engine, connect_timeout_s=connect_timeout_s)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    def __repr__(self) -> str:
        return f"Database({self.engine.url.render_as_string(hide_password=True)!r})"

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """``async with db.session() as s:`` an ``AsyncSession`` (no transaction
        is begun: use ``async with s.begin():``). Connection and driver errors
        raised inside the block come out as :class:`Unavailable`."""
        with translate_errors():
            async with self._sessions() as session:
                yield session

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads only: on SQLite one read transaction (one
        snapshot), rolled back at the end; on PostgreSQL autocommit, each
        statement its own snapshot (as at READ COMMITTED in a transaction)."""
        with translate_errors():
            async with self._reader.connect() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def write_one(self) -> AsyncIterator[AsyncConnection]:
        """A connection for one write that is atomic on its own (a single
        ``INSERT`` / ``UPDATE`` / ``DELETE``, any ``RETURNING`` included): on
        PostgreSQL in autocommit, the statement its own transaction, with no
        ``BEGIN`` and ``COMMIT`` round trips around it; on SQLite as
        :meth:`writing`. Run one writing statement in it, or reads after it
        that need not share its snapshot."""
        if self.dialect == "sqlite":
            async with self.writing() as conn:
                yield conn
            return
        with translate_errors():
            async with self._reader.connect() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncConnection]:
        """One database transaction that commits when the block ends and rolls
        back when it raises. On SQLite it holds the write lock from the start
        (``BEGIN IMMEDIATE``), so nothing read inside can change before the
        writes; on PostgreSQL rows are locked as they are read (``FOR
        UPDATE``, the caller's)."""
        with translate_errors():
            async with self.engine.connect() as conn, conn.begin():
                if self.dialect == "sqlite":
                    # pysqlite begins lazily, at the first write: take the lock now.
                    await conn.exec_driver_sql("BEGIN IMMEDIATE")
                yield conn

    def insert_or_nothing(
        self, table: Table, values: Mapping[str, Any] | Sequence[Mapping[str, Any]], key: list[str]
    ) -> Insert:
        """``INSERT ... ON CONFLICT (key) DO NOTHING`` in this database's dialect:
        the building block of every idempotent write."""
        rows: Any = [dict(v) for v in values] if isinstance(values, Sequence) else dict(values)
        if self.dialect == "postgresql":
            return pg_insert(table).values(rows).on_conflict_do_nothing(index_elements=key)
        return sqlite_insert(table).values(rows).on_conflict_do_nothing(index_elements=key)

    async def ping(self) -> None:
        """Return when the database answers a query; raise :class:`Unavailable`
        otherwise, within about ``connect_timeout_s``."""
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                with translate_errors():
                    async with self.engine.connect() as conn:
                        await conn.execute(text("SELECT 1"))
        except TimeoutError:
            raise Unavailable("the database did not answer in time") from None

    async def migrate(self) -> None:
        """Bring the schema to the latest revision (``alembic upgrade head``).

        Safe to call from several processes at once: on PostgreSQL a
        transaction-scoped advisory lock, on SQLite ``BEGIN IMMEDIATE`` (the
        file's write lock), makes them take turns, and whoever comes second
        finds nothing to do. Each upgrade runs in one transaction, so a failed
        one leaves the schema as it was.
        """
        loop = asyncio.get_running_loop()
        lock = _migrate_locks.get(loop)
        if lock is None:
            lock = _migrate_locks[loop] = asyncio.Lock()
        async with lock:
            with translate_errors():
                async with self.engine.connect() as conn:
                    if self.dialect == "postgresql":
                        await conn.execute(
                            text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATE_LOCK}
                        )
                    else:
                        # pysqlite begins lazily (at the first write); take the
                        # write lock now, before Alembic reads the version table.
                        await conn.exec_driver_sql("BEGIN IMMEDIATE")
                    await conn.run_sync(_upgrade_head)
                    await conn.commit()

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
