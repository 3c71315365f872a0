"""The Redis connection of the pool: a bounded pool that rides out restarts,
and the translation of "Redis does not answer" into :class:`Unavailable`.

A URL whose scheme is ``redis+cluster://`` or ``rediss+cluster://`` names one
node of a Redis Cluster (a seed: the client asks it for the others and for
the slot map, and follows the map as it changes); any other URL a standalone
Redis (or a primary). Both kinds of client run the same commands, scripts and
pipelines: every key of the pool shares one hash tag (:mod:`pool._redis_keys`),
so every step lands on the one node that owns that slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, ParamSpec, TypeAlias, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.exceptions
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from core.errors import Unavailable

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: Either kind of client the pool (and the bus) runs on.
Client: TypeAlias = Redis | RedisCluster

#: URL schemes that name a Redis Cluster (by one of its nodes).
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")

#: What "Redis does not answer" looks like, standalone or Cluster. The
#: Cluster's own failures (no node reachable, a slot without an owner, the
#: cluster down during a failover) are not all ``RedisError``s.
DOWN_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterError,  # ClusterDownError, MasterDownError, "TTL exhausted"
    redis.exceptions.RedisClusterUnreachableError,
    redis.exceptions.SlotNotCoveredError,
)


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``, ``rediss+cluster://``)."""
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def connect(url: str, *, max_connections: int, pool_timeout_s: float) -> Client:
    """A client on its own bounded connection pool (closed with the client);
    a :class:`RedisCluster` when ``url`` names a cluster (:func:`is_cluster_url`).

    A task that finds every connection busy waits up to ``pool_timeout_s``
    for one (then Unavailable) instead of failing at once with "Too many
    connections". Idle connections are health-checked before use, and a
    command that meets a dropped connection (Redis restarted) is retried on a
    new one with backoff, so the process rides out a restart by itself.
    Timeouts are not retried: the script may have run, and a second run would
    answer for itself ("you already hold this claim"), not for the first.
    """
    if is_cluster_url(url):
        return _connect_cluster(url, max_connections, pool_timeout_s)
    connections = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout_s,
        # Replies stay bytes: the bus shares this client for msgpack payloads,
        # and pool._redis_codec decodes what the pool reads.
        decode_responses=False,
        socket_timeout=5.0,
        socket_connect_timeout=2.0,
        socket_keepalive=True,
        health_check_interval=10,
        retry=Retry(
            ExponentialBackoff(cap=1.0, base=0.05),
            retries=3,
            supported_errors=(redis.exceptions.ConnectionError,),
        ),
    )
    return Redis.from_pool(connections)


def _connect_cluster(url: str, max_connections: int, pool_timeout_s: float) -> RedisCluster:
    """The Cluster client with the standalone client's promises (see :func:`connect`)."""
    parts = urlsplit(url)
    plain = urlunsplit(parts._replace(scheme=parts.scheme.removesuffix("+cluster")))
    return _BoundedCluster.from_url(
        plain,
        max_in_flight=max_connections,
        wait_s=pool_timeout_s,
        # Per node. Above the gate's width: the bus's subscription (and a
        # topology refresh) take connections of their own beside the commands.
        max_connections=max_connections + _SPARE_CONNECTIONS,
        decode_responses=False,
        socket_timeout=5.0,
        socket_connect_timeout=2.0,
        socket_keepalive=True,
        health_check_interval=10,
        # The Cluster client retries at its own level, on the errors of
        # ERRORS_ALLOW_RETRY below, refreshing the slot map between attempts.
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
    )


#: Connections a node may hold beyond the commands in flight (see _connect_cluster).
_SPARE_CONNECTIONS = 4


class _BoundedCluster(RedisCluster):
    """A :class:`RedisCluster` that keeps the standalone client's two promises.

    - At most ``max_in_flight`` commands or pipelines at once; one more waits
      up to ``wait_s`` for its turn, then fails as a connection error, as
      ``BlockingConnectionPool`` does. The plain Cluster client instead raises
      ``MaxConnectionsError`` at once when a node's connections are all busy,
      which under a burst would turn into ``unavailable`` answers.
    - A timed-out command is not retried: the Cluster client would, and a Lua
      step that did run would then answer for itself. Dropped connections,
      a cluster down for a failover and a slot in migration are retried, and
      a command is given one more attempt when no node answered the slot-map
      refresh (every node restarted: their pooled connections were all dead).
    """

    # (The base class types the attribute as its own four-element tuple.)
    ERRORS_ALLOW_RETRY = (  # type: ignore[assignment]
        redis.exceptions.ConnectionError,
        redis.exceptions.ClusterDownError,
        redis.exceptions.SlotNotCoveredError,
    )

    def __init__(self, *, max_in_flight: int, wait_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._gate = asyncio.Semaphore(max_in_flight)
        self._wait_s = wait_s

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold one of the ``max_in_flight`` turns while a round trip runs."""
        try:
            async with asyncio.timeout(self._wait_s):
                await self._gate.acquire()
        except TimeoutError:
            raise redis.exceptions.ConnectionError("no connection free in time") from None
        try:
            yield
        finally:
            self._gate.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.turn():
            try:
                return await super().execute_command(*args, **kwargs)
            except redis.exceptions.RedisClusterUnreachableError:
                # After every node restarted, the slot-map refresh that follows
                # the first dropped connection meets the other nodes' dropped
                # pooled connections too, and the command gives up. Those are
                # marked for reconnection by then: one more attempt, as the
                # standalone client retries a dropped connection.
                return await super().execute_command(*args, **kwargs)

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        if shard_hint:
            raise redis.exceptions.RedisClusterException("shard_hint is deprecated")
        # mypy counts _event_dispatcher, a member of redis-py's client protocol
        # that ClusterPipeline never sets, as abstract; redis-py's own
        # RedisCluster.pipeline builds the same class.
        return _BoundedPipeline(self, transaction)  # type: ignore[abstract]


class _BoundedPipeline(ClusterPipeline):
    """A pipeline that takes one turn of its client for the round trip.

    (With ``transaction``, a ``MULTI`` on one slot: redis-py queues each of
    its commands through a worker thread that blocks the event loop, so the
    pool reads its snapshots with scripts instead.)"""

    def __init__(self, client: _BoundedCluster, transaction: bool | None) -> None:
        super().__init__(client, transaction)
        self._bounded = client

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        async with self._bounded.turn():
            return await super().execute(raise_on_error, allow_redirections)


def unavailable_when_down(
    fn: Callable[_P, Coroutine[Any, Any, _R]],
) -> Callable[_P, Coroutine[Any, Any, _R]]:
    """Redis unreachable or too slow (after the client's retries) -> Unavailable."""

    @functools.wraps(fn)
    async def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return await fn(*args, **kwargs)
        except DOWN_ERRORS as exc:
            raise Unavailable("the pool's redis does not answer") from exc

    return guarded
