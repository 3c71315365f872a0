"""``core.bus.RedisBus`` on a real redis-server and on a real Redis Cluster.

Each bus stands for one server process (its own client, as ``dispatch serve``
makes it with ``pool._redis_client.connect``). On a cluster the bus uses
sharded pub/sub on the node that owns the pool's slot; on one Redis, classic
pub/sub.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
import redis
from conftest import LocalRedisCluster, RedisServer
from conftest import _fresh as fresh_redis

from core.bus import RedisBus
from pool._redis_client import Client, connect

CHANNEL = "qc:{pool}:events"


@dataclass(frozen=True)
class Note:
    """The smallest message: one map on the wire."""

    n: int
    origin: str

    def to_wire(self) -> dict[str, Any]:
        return {"n": self.n, "origin": self.origin}

    @classmethod
    def decode(cls, wire: dict[str, Any]) -> Note:
        return cls(int(wire["n"]), str(wire["origin"]))


@dataclass
class Process:
    """One process's bus and what its handler got."""

    client: Client
    bus: RedisBus[Note]
    got: list[list[Note]] = field(default_factory=list)
    resyncs: int = 0


@dataclass
class Buses:
    kind: str
    url: str
    #: The redis-server that holds the channel (the slot's node on a cluster).
    node: RedisServer
    made: list[Process] = field(default_factory=list)

    async def start(self) -> Process:
        client = connect(self.url, max_connections=8, pool_timeout_s=5.0)
        proc = Process(client, RedisBus(client, Note.decode, CHANNEL))

        async def handler(messages: list[Note]) -> None:
            proc.got.append(messages)

        async def on_resync() -> None:
            proc.resyncs += 1

        await proc.bus.start(handler, on_resync)
        self.made.append(proc)
        return proc


@pytest_asyncio.fixture(params=["redis", "cluster"])
async def buses(request: pytest.FixtureRequest) -> AsyncIterator[Buses]:
    if request.param == "redis":
        # (redis_url is an async fixture: not to be asked for from this one.)
        node: RedisServer = request.getfixturevalue("redis_server")
        url = await fresh_redis(node)
    else:
        url = request.getfixturevalue("redis_cluster_url")
        cluster: LocalRedisCluster = request.getfixturevalue("redis_cluster")
        node = cluster.node_of(CHANNEL)
    made = Buses(request.param, url, node)
    yield made
    for proc in made.made:
        await proc.bus.aclose()
        await proc.client.aclose()


async def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.01)


def _subscribers(node: RedisServer, kind: str) -> int:
    """Subscribers of the channel on ``node``, counted the way ``kind`` subscribes."""
    command = "SHARDNUMSUB" if kind == "cluster" else "NUMSUB"
    with redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5.0) as r:
        _, count = r.execute_command("PUBSUB", command, CHANNEL)
    return int(count)


async def test_every_process_gets_every_publish_whole_and_in_order(buses: Buses) -> None:
    procs = [await buses.start() for _ in range(3)]
    rounds = 25

    async def publish_all(proc: Process, origin: str) -> None:
        for n in range(rounds):
            await proc.bus.publish([Note(n, origin), Note(n + 1000, origin)])

    await asyncio.gather(publish_all(procs[0], "a"), publish_all(procs[1], "b"))
    await eventually(lambda: all(len(p.got) == 2 * rounds for p in procs))
    for proc in procs:
        # One publish arrives as one list, and each publisher's in its order.
        assert all(len(batch) == 2 and batch[0].n + 1000 == batch[1].n for batch in proc.got)
        for origin in "ab":
            mine = [b[0].n for b in proc.got if b[0].origin == origin]
            assert mine == list(range(rounds))
        assert proc.resyncs == 0


async def test_each_process_subscribes_once_where_the_pool_lives(buses: Buses) -> None:
    """Sharded pub/sub on a cluster (on the pool slot's node), classic on one Redis."""
    await buses.start()
    await buses.start()
    assert _subscribers(buses.node, buses.kind) == 2
    other = "NUMSUB" if buses.kind == "cluster" else "SHARDNUMSUB"
    with redis.Redis(host="127.0.0.1", port=buses.node.port, socket_timeout=5.0) as r:
        assert int(r.execute_command("PUBSUB", other, CHANNEL)[1]) == 0


async def test_a_lost_subscription_is_taken_again_and_resynced(buses: Buses) -> None:
    """Redis drops the subscriber (as on a restart or a failover): the bus
    subscribes again, asks for a resync, and hears what is published after."""
    sender, listener = await buses.start(), await buses.start()
    await sender.bus.publish([Note(1, "s")])
    await eventually(lambda: len(listener.got) == 1)

    with redis.Redis(host="127.0.0.1", port=buses.node.port, socket_timeout=5.0) as r:
        killed = r.client_kill_filter(_type="pubsub")
    assert killed == 2

    await eventually(lambda: listener.resyncs == 1 and sender.resyncs == 1)
    await eventually(lambda: _subscribers(buses.node, buses.kind) == 2)
    await sender.bus.publish([Note(2, "s")])
    await eventually(lambda: len(listener.got) == 2)
    assert [b[0].n for b in listener.got] == [1, 2]
