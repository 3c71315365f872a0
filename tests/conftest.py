"""Shared fixtures: a real ``redis-server`` of our own, and the pool adapters.

The suite never touches a shared Redis: :class:`RedisServer` starts
``redis-server`` from PATH on a free 127.0.0.1 port in a temporary directory,
with the append-only file on (``appendfsync always``) as production runs it,
so a test can kill it (``SIGKILL``) and start it again on the same port and
directory and see its data replayed from the AOF.

``pool_store`` runs a test once per adapter (``memory``, ``redis``) and once
more on a Redis Cluster (``cluster``); all must give the same answers
(``tests/test_pool_contract.py``).

:class:`LocalRedisCluster` starts a real Redis Cluster of three primaries
(``redis-server --cluster-enabled yes`` x3 on loopback, joined by
``redis-cli --cluster create``), once per run and only if a test asks for it
(``redis_cluster``, ``redis_cluster_url``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import inspect
import io
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
import pytest_asyncio
import redis
import redis.asyncio as aredis
import structlog

from core import logs
from core.db import Database
from pool.memory import MemoryPool
from pool.model import Timeouts
from pool.store import PoolStore

X = TypeVar("X")

#: The clocks every pool fixture runs with (PROTOCOL.md §1 defaults).
TIMEOUTS = Timeouts(claim_confirm_s=60, request_max_wait_s=600, reconnect_grace_s=15)

_START_TIMEOUT_S = 15.0
_STOP_TIMEOUT_S = 10.0

PoolFactory = Callable[[], Awaitable[PoolStore]]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: have the kernel SIGKILL redis-server if pytest itself dies,
    so a crashed or killed test run leaves no stray server behind."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


class RedisServer:
    """One ``redis-server`` process owned by the test run.

    ``start`` and ``stop`` may be called any number of times; the port and
    directory stay the same, so a restart replays the append-only file.
    Every wait is bounded: a server that does not come up raises with the
    tail of its log instead of hanging the suite.
    """

    def __init__(
        self, directory: Path, port: int | None = None, extra_args: Sequence[str] = ()
    ) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not on PATH; the suite needs a real one")
        self.executable = exe
        self.directory = directory
        self.port = port if port is not None else _free_port()
        #: Appended to the command line (the cluster's nodes: cluster mode).
        self.extra_args = list(extra_args)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.logfile = directory / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------
    def start(self, timeout_s: float = _START_TIMEOUT_S) -> None:
        """Start the server (no-op if it is running) and wait until it answers PING."""
        if self.running:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.logfile),
            *self.extra_args,
        ]
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if os.name == "posix" else None,
        )
        self._wait_ready(timeout_s)

    def stop(self, kill: bool = False, timeout_s: float = _STOP_TIMEOUT_S) -> None:
        """Stop the server: ``kill`` sends SIGKILL (a crash: only what the AOF
        already holds survives); otherwise SIGTERM, which Redis handles as
        SHUTDOWN (fsync the AOF, exit). Escalates to SIGKILL after the timeout."""
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        if proc.poll() is None:
            if kill:
                proc.kill()
            else:
                proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
        self._wait_port_free(timeout_s)

    def restart(self, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def ping(self) -> bool:
        """Whether the server answers PING right now (short timeouts)."""
        client = redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    # -- internals -----------------------------------------------------------
    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                self._proc = None
                raise RuntimeError(
                    f"redis-server on port {self.port} exited (code {code}):\n{self._log_tail()}"
                )
            # PING fails with BusyLoadingError while the AOF is replayed.
            if self.ping():
                return
            time.sleep(0.05)
        self.stop(kill=True)
        raise RuntimeError(
            f"redis-server on port {self.port} did not answer PING within {timeout_s}s:\n"
            f"{self._log_tail()}"
        )

    def _wait_port_free(self, timeout_s: float) -> None:
        """After a stop, wait until nothing listens on the port any more."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.settimeout(0.2)
                if s.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.05)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class LocalRedisCluster:
    """A Redis Cluster of ``primaries`` nodes (no replicas) owned by the test run.

    Each node is a :class:`RedisServer` in cluster mode (append-only file on,
    as the single server) with its own directory, so its ``nodes.conf``
    survives a restart and it rejoins the cluster by itself. ``url`` names
    the first node the way the service is configured for a cluster
    (``redis+cluster://``); the client finds the others from it.
    """

    def __init__(self, directory: Path, primaries: int = 3) -> None:
        self.nodes = [
            RedisServer(
                directory / f"node-{i}",
                extra_args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    # The bus port (by default port + 10000, which a high free
                    # port would push past 65535), on a free port of its own.
                    "--cluster-port",
                    str(_free_port()),
                ],
            )
            for i in range(primaries)
        ]
        self.url = f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self, timeout_s: float = _START_TIMEOUT_S) -> None:
        """Start every node and, the first time, join them into one cluster
        that covers every slot; returns once each node says ``cluster_state:ok``."""
        for node in self.nodes:
            node.start(timeout_s)
        if not self._state_ok(self.nodes[0]):
            known = _cluster_info(self.nodes[0]).get("cluster_known_nodes", "1")
            if known == "1":  # never joined: a fresh directory
                self._create(timeout_s)
        self.wait_ok(timeout_s)

    def stop(self, kill: bool = False) -> None:
        for node in self.nodes:
            node.stop(kill=kill)

    def restart(self, kill: bool = False) -> None:
        """Every node down, then up again from its AOF and ``nodes.conf``."""
        self.stop(kill=kill)
        self.start()

    def node_of(self, key: str | bytes) -> RedisServer:
        """The node that serves ``key``'s slot."""
        with redis.Redis(host="127.0.0.1", port=self.nodes[0].port, socket_timeout=5.0) as r:
            slot = int(r.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, primary, *_ in r.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    port = int(primary[1])
                    return next(n for n in self.nodes if n.port == port)
        raise AssertionError(f"no node serves slot {slot}")

    def flush(self) -> None:
        """Make sure every node runs and the cluster is up, and empty it."""
        if not all(n.ping() for n in self.nodes):
            for n in self.nodes:
                if not n.ping():
                    n.stop(kill=True)
            self.start()
        for node in self.nodes:
            with redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5.0) as r:
                r.flushall()

    def _create(self, timeout_s: float) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not on PATH; the cluster tests need it")
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        done = subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s * 2,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed ({done.returncode}):\n"
                f"{done.stdout.decode(errors='replace')}{done.stderr.decode(errors='replace')}"
            )

    def wait_ok(self, timeout_s: float = _START_TIMEOUT_S) -> None:
        """Wait until every node says ``cluster_state:ok``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self._state_ok(n) for n in self.nodes):
                return
            time.sleep(0.05)
        states = {n.port: _cluster_info(n).get("cluster_state") for n in self.nodes}
        raise RuntimeError(f"the cluster did not come up within {timeout_s}s: {states}")

    @staticmethod
    def _state_ok(node: RedisServer) -> bool:
        return _cluster_info(node).get("cluster_state") == "ok"


def _cluster_info(node: RedisServer) -> dict[str, str]:
    """``CLUSTER INFO`` of one node as a map ({} if it does not answer)."""
    try:
        with redis.Redis(
            host="127.0.0.1", port=node.port, socket_timeout=1.0, socket_connect_timeout=1.0
        ) as r:
            raw = r.execute_command("CLUSTER", "INFO")
    except redis.RedisError:
        return {}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """A real 3-primary Redis Cluster for the whole run, started the first
    time a test asks for it; tests may stop and restart its nodes."""
    cluster = LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster: LocalRedisCluster) -> str:
    """The cluster's URL (``redis+cluster://``), every node running and empty."""
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server for the whole run; tests may stop and restart it."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def _fresh(server: RedisServer) -> str:
    """Make sure ``server`` runs (a previous test may have stopped or killed it)
    and holds nothing; returns its URL."""
    if not server.ping():
        server.stop(kill=True)
        server.start()
    client = aredis.Redis.from_url(server.url, socket_timeout=5.0)
    try:
        await client.flushall()
    finally:
        await client.aclose()
    return server.url


@pytest_asyncio.fixture
async def redis_url(redis_server: RedisServer) -> AsyncIterator[str]:
    """The server's URL, running and empty (FLUSHALL) before the test."""
    yield await _fresh(redis_server)


def _redis_pool_class() -> Any:
    """``pool.redis_store.RedisPool``, or a skip while that module does not exist yet."""
    try:
        module = importlib.import_module("pool.redis_store")
    except ImportError as exc:
        pytest.skip(f"pool.redis_store is not importable yet: {exc}")
    return module.RedisPool


async def _make_redis_pool(cls: Any, url: str) -> PoolStore:
    store = cls.from_url(url, TIMEOUTS, prefix="qc")
    if inspect.isawaitable(store):
        store = await store
    return cast(PoolStore, store)


@pytest_asyncio.fixture(params=["memory", "redis", "cluster"])
async def pool_store(request: pytest.FixtureRequest) -> AsyncIterator[PoolStore]:
    """A fresh, empty pool of each adapter, with :data:`TIMEOUTS` (``cluster``:
    the Redis adapter on the run's Redis Cluster)."""
    store: PoolStore
    if request.param == "memory":
        store = MemoryPool(TIMEOUTS)
    elif request.param == "cluster":
        cluster: LocalRedisCluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        store = await _make_redis_pool(_redis_pool_class(), cluster.url)
    else:
        cls = _redis_pool_class()
        # The session fixture is sync; an async one cannot be set up from here
        # (the event loop is already running), hence the inline flush.
        server: RedisServer = request.getfixturevalue("redis_server")
        store = await _make_redis_pool(cls, await _fresh(server))
    try:
        yield store
    finally:
        await store.aclose()


@pytest_asyncio.fixture
async def redis_pool(redis_server: RedisServer) -> AsyncIterator[PoolStore]:
    """A fresh ``RedisPool`` alone, for tests about Redis itself (crash, restart)."""
    cls = _redis_pool_class()
    store = await _make_redis_pool(cls, await _fresh(redis_server))
    try:
        yield store
    finally:
        if not redis_server.ping():
            redis_server.start()
        await store.aclose()


@pytest_asyncio.fixture
async def pool_store_factory(
    request: pytest.FixtureRequest, pool_store: PoolStore
) -> AsyncIterator[PoolFactory]:
    """More handles on the same pool, standing for more server processes.

    For Redis each call makes a new ``RedisPool`` on the same Redis (closed at
    teardown); the in-process pool is one process's, so it returns the same one.
    """
    made: list[PoolStore] = []

    if isinstance(pool_store, MemoryPool):

        async def same() -> PoolStore:
            return pool_store

        yield same
        return

    cls = _redis_pool_class()
    if request.node.callspec.params["pool_store"] == "cluster":
        url = request.getfixturevalue("redis_cluster").url
    else:
        url = request.getfixturevalue("redis_server").url

    async def another() -> PoolStore:
        store = await _make_redis_pool(cls, url)
        made.append(store)
        return store

    try:
        yield another
    finally:
        for store in made:
            await store.aclose()


# -- PostgreSQL and SQLite for the durable store ---------------------------------
#
# The suite never uses a shared database: ``postgres_server_url`` makes a
# throwaway database on the local PostgreSQL (trust auth on 127.0.0.1:5432,
# user ``postgres`` or else ``root``) and drops it at the end of the run;
# ``database_url`` hands each test an empty database of each backend.

_PG_HOST = "127.0.0.1"
_PG_PORT = 5432
_PG_USERS = ("postgres", "root")
_PG_CONNECT_TIMEOUT_S = 5.0


def _in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn()`` to completion on a fresh event loop in another thread (a
    sync fixture may be set up while the test's loop is running)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(fn())).result(timeout=60)


async def _pg_admin(user: str, database: str = "postgres") -> Any:
    import asyncpg

    return await asyncpg.connect(
        host=_PG_HOST,
        port=_PG_PORT,
        user=user,
        database=database,
        timeout=_PG_CONNECT_TIMEOUT_S,
    )


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """``postgresql+asyncpg://USER@127.0.0.1:5432/qc_test_<random>``: a database
    of our own for the whole run, dropped (``WITH (FORCE)``) at the end.

    No reachable PostgreSQL: a failure under CI (``CI=true``), a skip otherwise.
    """
    import secrets

    errors: list[str] = []
    user: str | None = None
    for candidate in _PG_USERS:

        async def probe(candidate: str = candidate) -> None:
            conn = await _pg_admin(candidate)
            await conn.close()

        try:
            _in_thread(probe)
        except Exception as exc:  # any reason not to use it: try the next user
            errors.append(f"{candidate}: {type(exc).__name__}: {exc}")
            continue
        user = candidate
        break
    if user is None:
        reason = (
            f"PostgreSQL is not reachable at {_PG_HOST}:{_PG_PORT} as "
            f"{' or '.join(_PG_USERS)} ({'; '.join(errors)})"
        )
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason)
        pytest.skip(reason)

    name = f"qc_test_{secrets.token_hex(6)}"
    admin_user = user

    async def create() -> None:
        conn = await _pg_admin(admin_user)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    async def drop() -> None:
        conn = await _pg_admin(admin_user)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    _in_thread(create)
    try:
        yield f"postgresql+asyncpg://{user}@{_PG_HOST}:{_PG_PORT}/{name}"
    finally:
        _in_thread(drop)


def _pg_reset(url: str) -> None:
    """Empty the run's PostgreSQL database: drop and recreate its public schema."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    user, database = str(parsed.username), str(parsed.database)

    async def reset() -> None:
        conn = await _pg_admin(user, database)
        try:
            await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        finally:
            await conn.close()

    _in_thread(reset)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database (no tables) of each backend: a SQLite file in
    ``tmp_path``, or the run's PostgreSQL database with its schema reset."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'dispatch.db'}"
    url: str = request.getfixturevalue("postgres_server_url")
    _pg_reset(url)
    return url


@pytest_asyncio.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A :class:`Database` on each backend, migrated to the latest schema."""
    database = Database.from_url(database_url)
    await database.migrate()
    try:
        yield database
    finally:
        await database.aclose()


@pytest_asyncio.fixture
async def other_db(database_url: str, db: Database) -> AsyncIterator[Database]:
    """A second server's connection to ``db``'s database (its own engine)."""
    database = Database.from_url(database_url)
    try:
        yield database
    finally:
        await database.aclose()


async def outcomes(calls: Sequence[Awaitable[X]]) -> list[X | BaseException]:
    """Every call's result or exception, run at once (a race)."""
    return list(await asyncio.gather(*calls, return_exceptions=True))


def embedded_settings(
    request: pytest.FixtureRequest, tmp_path: Path, **overrides: Any
) -> dict[str, Any]:
    """Settings overrides for an embedded app on ``request.param``'s pool
    (``"memory"`` or ``"redis"``: the session's redis-server, started again if
    a test stopped it, and emptied: what an earlier test left there, a profile
    say, would change this one's answers), with its database in ``tmp_path``."""
    settings: dict[str, Any] = {
        "dev": True,
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'dispatch.db'}",
        **overrides,
    }
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        if not server.ping():
            server.stop(kill=True)
            server.start()
        with redis.Redis.from_url(server.url, socket_timeout=5.0) as r:
            r.flushall()
        settings["redis_url"] = server.url
    return settings


# -- logs ------------------------------------------------------------------------


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Our JSON log lines, at DEBUG, for the duration of one test (the logging
    set-up as it was is put back after)."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    buf = io.StringIO()
    logs.configure("debug", json=True, stream=buf)
    yield buf
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)
    structlog.reset_defaults()
    logs._configured = False
