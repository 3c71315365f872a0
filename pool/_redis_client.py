"""The Redis connection of the pool: a bounded pool that rides out restarts,
and the translation of "Redis does not answer" into :class:`Unavailable`."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import redis.exceptions
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from core.errors import Unavailable

_P = ParamSpec("_P")
_R = TypeVar("_R")


def connect(url: str, *, max_connections: int, pool_timeout_s: float) -> Redis:
    """A client on its own bounded connection pool (closed with the client).

    A task that finds every connection busy waits up to ``pool_timeout_s``
    for one (then Unavailable) instead of failing at once with "Too many
    connections". Idle connections are health-checked before use, and a
    command that meets a dropped connection (Redis restarted) is retried on a
    new one with backoff, so the process rides out a restart by itself.
    Timeouts are not retried: the script may have run, and a second run would
    answer for itself ("you already hold this claim"), not for the first.
    """
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


def unavailable_when_down(
    fn: Callable[_P, Coroutine[Any, Any, _R]],
) -> Callable[_P, Coroutine[Any, Any, _R]]:
    """Redis unreachable or too slow (after the client's retries) -> Unavailable."""

    @functools.wraps(fn)
    async def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return await fn(*args, **kwargs)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise Unavailable("the pool's redis does not answer") from exc

    return guarded
