"""The bus that carries messages (the pool's effects) to every server of the service.

``LocalBus`` is the embedded default: one process, messages go straight to the
handler. ``RedisBus`` publishes on one Redis channel; each process keeps exactly
one subscription and fans out in-process (the app's hub decides which of its own
connections get what). Each publish is one list of messages (the effects of one
change), delivered whole and in order. The bus knows nothing of what the
messages mean: any type with ``to_wire()`` (a msgpack-safe map) and a
``decode`` for the way back (:class:`RedisBus`) will do.

On a Redis Cluster (a :class:`~redis.asyncio.cluster.RedisCluster` client)
the bus uses sharded pub/sub (``SPUBLISH``/``SSUBSCRIBE``, Redis 7): the
channel carries the pool's hash tag, so its messages stay on the shard that
owns the pool's slot instead of being broadcast over the whole cluster bus as
a classic ``PUBLISH`` is. Every process subscribes on that shard's primary.

A message may also be handed, encoded (:meth:`RedisBus.outgoing`), to a Lua
step of the pool that publishes it itself, in the same atomic step as the
change it announces: no crash between the change and its announcement then
leaves a change nobody was told of.

Redis pub/sub forgets what it could not deliver. When the subscription is
lost and regained (Redis restarted, network blip, a failover moved the slot)
the bus calls ``on_resync`` so the hub re-sends snapshots from the pool,
which is the source of truth.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import msgpack
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterPubSub, RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from core.errors import Unavailable
from core.logs import get_logger


class Message(Protocol):
    """What the bus carries: anything that can put itself on the wire."""

    def to_wire(self) -> dict[str, Any]: ...


M = TypeVar("M", bound=Message)
Handler = Callable[[list[M]], Awaitable[None]]
Resync = Callable[[], Awaitable[None]]

log = get_logger(component="bus")

#: A published message, classic or sharded (``smessage``).
_DATA_TYPES = frozenset({"message", "smessage"})


@dataclass(frozen=True)
class Outgoing:
    """Messages encoded for a Redis script to publish as the bus would:
    ``command`` (``PUBLISH``, or ``SPUBLISH`` on a cluster) on ``channel``."""

    command: str
    channel: str
    payload: bytes


class Bus(Protocol[M]):
    async def start(self, handler: Handler[M], on_resync: Resync) -> None: ...
    async def publish(self, messages: list[M]) -> None: ...
    def outgoing(self, messages: list[M]) -> Outgoing | None:
        """``messages`` as another party may publish them on this bus; None
        when only the bus itself can deliver them (one process)."""
        ...

    async def aclose(self) -> None: ...


class LocalBus(Generic[M]):
    """One process: messages are delivered in the publishing task, in order."""

    def __init__(self) -> None:
        self._handler: Handler[M] | None = None

    async def start(self, handler: Handler[M], on_resync: Resync) -> None:
        self._handler = handler

    async def publish(self, messages: list[M]) -> None:
        if messages and self._handler is not None:
            await self._handler(messages)

    def outgoing(self, messages: list[M]) -> Outgoing | None:
        return None  # delivered in the publishing task: nobody else can

    async def aclose(self) -> None:
        self._handler = None


class RedisBus(Generic[M]):
    """One channel, one subscription per process; ``decode`` turns a received
    map back into a message. Sharded pub/sub when ``client`` is a Cluster's."""

    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
        decode: Callable[[dict[str, Any]], M],
        channel: str = "qc:{pool}:events",
    ) -> None:
        self._client = client
        self._decode = decode
        self._channel = channel
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        #: Set when redis-py re-subscribed on a new connection by itself.
        self._regained = False

    async def start(self, handler: Handler[M], on_resync: Resync) -> None:
        self._task = asyncio.create_task(self._listen(handler, on_resync), name="bus-listen")
        # Do not serve before the subscription stands, or early events are missed.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout=10)

    def outgoing(self, messages: list[M]) -> Outgoing:
        return Outgoing(
            "SPUBLISH" if isinstance(self._client, RedisCluster) else "PUBLISH",
            self._channel,
            msgpack.packb([m.to_wire() for m in messages], use_bin_type=True),
        )

    async def publish(self, messages: list[M]) -> None:
        if not messages:
            return
        payload = self.outgoing(messages).payload
        try:
            if isinstance(self._client, RedisCluster):
                await self._client.spublish(self._channel, payload)
            else:
                await self._client.publish(self._channel, payload)
        except (RedisError, RedisClusterException) as exc:
            raise Unavailable("event bus unavailable") from exc

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self, handler: Handler[M], on_resync: Resync) -> None:
        backoff = 0.1
        first = True
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                if isinstance(pubsub, ClusterPubSub):
                    await pubsub.ssubscribe(self._channel)
                else:
                    await pubsub.subscribe(self._channel)
                    self._watch(pubsub, True)
                self._regained = False
                self._subscribed.set()
                if not first:
                    log.info("bus.resubscribed")
                    await on_resync()
                first = False
                backoff = 0.1
                while True:
                    msg = await self._next(pubsub)
                    if self._regained:
                        self._regained = False
                        log.info("bus.resubscribed")
                        await on_resync()
                    if msg is None or msg.get("type") not in _DATA_TYPES:
                        continue
                    await self._deliver(handler, msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever broke, subscribe again: never go deaf
                self._subscribed.clear()
                log.warning("bus.disconnected", error=type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                if not isinstance(pubsub, ClusterPubSub):
                    self._watch(pubsub, False)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _watch(self, pubsub: PubSub, on: bool) -> None:
        """Hear of (``on``), or stop hearing of, a reconnection of the
        subscription's connection.

        On one Redis, redis-py's PubSub meets a dropped connection inside a
        read by reconnecting and subscribing again by itself, without raising:
        whatever was published in between is lost, and the bus must resync
        as after a re-subscription of its own. (A Cluster's node connections
        never retry: the drop reaches :meth:`_listen`.)
        """
        connection = pubsub.connection
        if connection is None:
            return
        if on:
            connection.register_connect_callback(self._connection_regained)
        else:
            connection.deregister_connect_callback(self._connection_regained)

    def _connection_regained(self, connection: Any) -> None:
        # Runs after PubSub's own callback (registered first) re-subscribed.
        self._regained = True

    @staticmethod
    async def _next(pubsub: PubSub) -> dict[str, Any] | None:
        """The next message, or None after a second without one."""
        msg: dict[str, Any] | None
        if isinstance(pubsub, ClusterPubSub):
            msg = await pubsub.get_sharded_message(timeout=1.0)
        else:
            msg = await pubsub.get_message(timeout=1.0)
        return msg

    async def _deliver(self, handler: Handler[M], data: Any) -> None:
        try:
            messages = [self._decode(m) for m in msgpack.unpackb(data, raw=False)]
        except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
            log.error("bus.bad_message", error=type(exc).__name__)
            return
        try:
            await handler(messages)
        except Exception:  # one bad delivery must not kill the subscription
            log.exception("bus.deliver_failed")
