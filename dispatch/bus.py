"""The bus that carries pool effects to every server of the service.

``LocalBus`` is the embedded default: one process, effects go straight to the
hub. ``RedisBus`` publishes on one Redis channel; each process keeps exactly
one subscription and fans out in-process (the hub decides which of its own
connections get what). Each published message is the list of effects of one
change, so a change's frames stay in order.

Redis pub/sub forgets what it could not deliver. When the subscription is
lost and regained (Redis restarted, network blip) the bus calls ``on_resync``
so the hub re-sends snapshots from the pool, which is the source of truth.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from dispatch.errors import Unavailable
from dispatch.logs import get_logger
from pool.effects import Effect

Handler = Callable[[list[Effect]], Awaitable[None]]
Resync = Callable[[], Awaitable[None]]

log = get_logger(component="bus")


class Bus(Protocol):
    async def start(self, handler: Handler, on_resync: Resync) -> None: ...
    async def publish(self, effects: list[Effect]) -> None: ...
    async def aclose(self) -> None: ...


class LocalBus:
    """One process: effects are delivered in the publishing task, in order."""

    def __init__(self) -> None:
        self._handler: Handler | None = None

    async def start(self, handler: Handler, on_resync: Resync) -> None:
        self._handler = handler

    async def publish(self, effects: list[Effect]) -> None:
        if effects and self._handler is not None:
            await self._handler(effects)

    async def aclose(self) -> None:
        self._handler = None


class RedisBus:
    """One channel, one subscription per process."""

    def __init__(self, client: aioredis.Redis, channel: str = "qc:{pool}:events") -> None:
        self._client = client
        self._channel = channel
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self, handler: Handler, on_resync: Resync) -> None:
        self._task = asyncio.create_task(self._listen(handler, on_resync), name="bus-listen")
        # Do not serve before the subscription stands, or early events are missed.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout=10)

    async def publish(self, effects: list[Effect]) -> None:
        if not effects:
            return
        payload = msgpack.packb([e.to_wire() for e in effects], use_bin_type=True)
        try:
            await self._client.publish(self._channel, payload)
        except RedisError as exc:
            raise Unavailable("event bus unavailable") from exc

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self, handler: Handler, on_resync: Resync) -> None:
        backoff = 0.1
        first = True
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                self._subscribed.set()
                if not first:
                    log.info("bus.resubscribed")
                    await on_resync()
                first = False
                backoff = 0.1
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None or msg.get("type") != "message":
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
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _deliver(self, handler: Handler, data: Any) -> None:
        try:
            effects = [Effect.from_wire(m) for m in msgpack.unpackb(data, raw=False)]
        except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
            log.error("bus.bad_message", error=type(exc).__name__)
            return
        try:
            await handler(effects)
        except Exception:  # one bad delivery must not kill the subscription
            log.exception("bus.deliver_failed")
