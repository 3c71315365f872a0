"""Redis-specific tests of ``pool.redis_store.RedisPool`` on a real redis-server.

The contract both adapters share is ``tests/test_pool_contract.py``; here:
a randomised differential run that holds RedisPool to MemoryPool's answers
call by call, the Lua scripts' headers, NOSCRIPT healing, restarts and
crashes of Redis, races between several processes' pools, the cluster hash
slot of every key, Unavailable, and the TTLs only Redis has.

Every test on ``pools`` runs twice: on the run's redis-server and on its Redis
Cluster (``redis+cluster://``, three primaries); those about the one
redis-server itself (its restarts and crashes) run on it alone
(:data:`single_redis`).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import msgpack
import pytest
import pytest_asyncio
import redis.asyncio as aredis
from conftest import _fresh as fresh_redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from core.bus import Outgoing, RedisBus
from core.errors import DispatchError, RequestExists, Taken, Unavailable
from core.identity import Role
from pool import _redis_scripts
from pool import effects as fx
from pool._redis_keys import Keys
from pool.effects import Change, Effect
from pool.memory import MemoryPool
from pool.model import (
    Draft,
    EndReason,
    Hold,
    Session,
    SessionState,
    State,
    TherapistProfile,
    Timeouts,
)
from pool.redis_store import AVAIL_INDEX_REBUILD_S, FINISHED_TTL_S, RedisPool
from pool.rules import may_see

T = Timeouts(claim_confirm_s=60.0, request_max_wait_s=600.0, reconnect_grace_s=15.0)
T0 = 1_700_000_000.123456
DRAFT = Draft(region="GB", language="en", topics=("anxiety",))


def profile(tid: str, **kw: Any) -> TherapistProfile:
    fields: dict[str, Any] = {
        "name": tid,
        "regions": ("GB", "US"),
        "languages": ("en", "fr"),
        "topics": ("anxiety", "grief"),
        "works_with_minors": True,
    }
    fields.update(kw)
    return TherapistProfile(id=tid, **fields)


class Pools:
    """Makes RedisPools on one (flushed) Redis or Redis Cluster, one per "process"."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind, self.url = kind, url
        self.made: list[RedisPool] = []

    def __call__(self, **kw: Any) -> RedisPool:
        store = RedisPool.from_url(self.url, T, **kw)
        self.made.append(store)
        return store

    def raw_client(self, **kw: Any) -> aredis.Redis | RedisCluster:
        """A plain client of the same Redis (a cluster client on the cluster)."""
        if self.kind == "cluster":
            return RedisCluster.from_url(self.url.replace("+cluster", ""), **kw)
        return aredis.Redis.from_url(self.url, **kw)


@pytest_asyncio.fixture(params=["redis", "cluster"])
async def pools(request: pytest.FixtureRequest) -> AsyncIterator[Pools]:
    """A :class:`Pools` on the run's redis-server, then on its Redis Cluster;
    closes every pool it made."""
    if request.param == "redis":
        # (redis_url is an async fixture: not to be asked for from this one.)
        url = await fresh_redis(request.getfixturevalue("redis_server"))
    else:
        url = request.getfixturevalue("redis_cluster_url")
    made = Pools(request.param, url)
    yield made
    for store in made.made:
        await store.aclose()


#: For the tests about the one redis-server itself (they stop and restart it).
single_redis = pytest.mark.parametrize("pools", ["redis"], indirect=True)


# -- MemoryPool and RedisPool agree, call by call ------------------------------


class Twin:
    """Runs every call on both adapters and asserts the same answer or error."""

    def __init__(self, mem: MemoryPool, red: RedisPool) -> None:
        self.mem, self.red = mem, red

    async def call(self, name: str, *args: Any, unordered: bool = False) -> Any:
        """``unordered``: the answer is a list whose order is not part of the contract."""
        outs: list[tuple[Any, ...]] = []
        for store in (self.mem, self.red):
            try:
                value = await getattr(store, name)(*args)
                outs.append(("ok", sorted(value, key=repr) if unordered else value))
            except DispatchError as exc:
                outs.append(("error", type(exc), exc.message))
        assert outs[0] == outs[1], (name, args)
        return outs[0]


_REGIONS, _LANGS, _TOPICS = ("GB", "US"), ("en", "fr"), ("anxiety", "couples", "grief")


def _random_profile(rng: random.Random, tid: str) -> TherapistProfile:
    return TherapistProfile(
        id=tid,
        name=tid,
        regions=tuple(rng.sample(_REGIONS, rng.randint(1, 2))),
        languages=tuple(rng.sample(_LANGS, rng.randint(1, 2))),
        topics=tuple(rng.sample(_TOPICS, rng.randint(0, 2))),
        works_with_minors=rng.random() < 0.5,
    )


def _random_draft(rng: random.Random) -> Draft:
    age = rng.choice([None, None, 15, 30])
    return Draft(
        region=rng.choice(_REGIONS),
        language=rng.choice(_LANGS),
        topics=tuple(rng.sample(_TOPICS, rng.randint(0, 2))),
        notes=rng.choice(["", 'n/ü "q" {x}']),
        age=age,
        guardian_consent=age is not None and age < 18,
    )


#: The operations of a random run, with their weights for the two runs below.
_OPS: dict[str, tuple[int, int]] = {
    # name: (weight in the request run, weight in the session run)
    "create": (12, 8),
    "claim": (20, 6),
    "release": (6, 2),
    "decline": (6, 2),
    "accept": (5, 3),
    "cancel": (4, 2),
    "connect": (10, 8),
    "disconnect": (10, 6),
    "vanish": (8, 2),
    "available": (6, 2),
    "heartbeat": (4, 3),
    "reap": (3, 2),
    "match": (0, 10),
    "join": (0, 14),
    "signal": (0, 14),
    "end": (0, 2),
}


#: Weights of the clock's jumps (none, < 3 s, < 40 s, 100..700 s) in each run.
_JUMPS: tuple[list[float], list[float]] = ([10, 60, 6, 1], [20, 60, 2, 0.5])


@dataclass
class _Seen:
    """What a random run went through (so that it is known to test something)."""

    kinds: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str | None] = field(default_factory=Counter)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    went_live: int = 0
    frames_delivered: int = 0


async def _random_run(twin: Twin, seed: int, steps: int, run: int) -> _Seen:
    """``steps`` random calls on both adapters (weights: column ``run`` of
    :data:`_OPS`), each answered alike, with the state compared as it goes."""
    rng = random.Random(seed)
    therapists = [_random_profile(rng, f"t{i}") for i in range(30)]
    # Enough clients that some are free to ask while others sit in open
    # sessions (a client in one may not ask: the pool's rule).
    clients = [f"c{i}" for i in range(12)]
    users = [p.id for p in therapists] + clients
    servers, conns = ["s0", "s1"], ["k0", "k1"]
    for p in therapists:
        await twin.call("put_profile", p)
    rids: list[str] = ["never-created"]
    sids: list[str] = ["no-such-session"]
    seen = _Seen()

    async def hold(p: TherapistProfile) -> Hold | None:
        return await twin.mem.hold_of(p.id)

    now = T0
    for step in range(steps):
        jumps = [0.0, rng.uniform(0, 3), rng.uniform(0, 40), rng.uniform(100, 700)]
        # The session run jumps less: a session must last a few steps.
        now += rng.choices(jumps, weights=_JUMPS[run])[0]
        op = rng.choices(list(_OPS), weights=[w[run] for w in _OPS.values()])[0]
        tid, cid = rng.choice(therapists), rng.choice(clients)
        rid = await _pick(rng, twin.mem, rids, _TARGET.get(op, ()))
        if op == "create":
            new = rng.choice(rids) if rng.random() < 0.05 else f"r{step}"
            key = rng.choice([None, "k1", "k2"])
            out = await twin.call("create", _random_draft(rng), cid, new, now, key)
            if out[0] == "ok" and new not in rids:
                rids.append(new)
        elif op in ("claim", "match"):
            if op == "match" and not await twin.mem.waiting():  # someone asks first
                await twin.call("create", _random_draft(rng), cid, f"r{step}", now)
                rids.append(f"r{step}")
                rid = f"r{step}"
            req = await twin.mem.get(rid)
            idle = [p for p in therapists if req and may_see(p, req) and not await hold(p)]
            out = await twin.call("claim", rid, rng.choice(idle) if idle else tid, now)
            if op == "match" and out[0] == "ok":  # and accepted at once: a session opens
                seen.reasons.update(_reasons(out))
                out = await twin.call("accept", rid, out[1].after.client_id, f"sess-{step}", now)
                sids.append(f"sess-{step}")
        elif op == "release":
            req = await twin.mem.get(rid)
            holder = req.claimed_by if req and req.claimed_by and rng.random() < 0.8 else tid.id
            out = await twin.call("release", rid, holder, now)
        elif op in ("decline", "cancel"):
            req = await twin.mem.get(rid)
            out = await twin.call(
                op, rid, req.client_id if req and rng.random() < 0.9 else cid, now
            )
        elif op == "accept":
            req = await twin.mem.get(rid)
            owner = req.client_id if req else cid
            out = await twin.call("accept", rid, owner, f"sess-{step}", now)
            if out[0] == "ok":
                sids.append(f"sess-{step}")
        elif op in ("connect", "disconnect"):
            user = rng.choice(users)
            therapist_role = user not in clients and rng.random() < 0.85
            role = Role.THERAPIST if therapist_role else Role.CLIENT
            out = await twin.call(op, user, role, rng.choice(conns), rng.choice(servers), now)
        elif op == "vanish":  # someone holding a claim (or in a session) loses every connection
            holders = [p.id for p in therapists if (h := await hold(p)) and h.kind == "claim"]
            if run == 1:
                holders = [u for u in users if await twin.mem.open_session_of(u)]
            user = rng.choice(holders or users)
            await twin.call("connect", user, Role.THERAPIST, conns[0], servers[0], now)
            for conn in conns:
                for server in servers:
                    out = await twin.call("disconnect", user, Role.THERAPIST, conn, server, now)
        elif op in ("join", "signal", "end"):
            sid = await _pick_session(rng, twin.mem, sids)
            sess = await twin.mem.get_session(sid)
            parts = [sess.client_id, sess.therapist_id] if sess else []
            # Mostly a participant: to join, mostly one who has not joined yet;
            # to signal, mostly one whose peer has not (so frames are held).
            if sess and op == "join":
                parts += [u for u in parts if u not in sess.joined] * 3
            elif sess and op == "signal":
                parts += [u for u in parts if sess.peer_of(u)[0] not in sess.joined] * 3
            user = rng.choice(parts) if parts and rng.random() < 0.9 else rng.choice(users)
            if op == "join":
                out = await twin.call("join_session", sid, user, now)
                if out[0] == "ok":
                    seen.went_live += out[1][1]
                    seen.frames_delivered += len(out[1][2])
            elif op == "signal":
                frame = {"type": "rtc.signal", "data": {"sdp": f"v=0 ü {step}", "n": [step]}}
                bound = rng.choice([1, 3, 256])
                out = await twin.call("pass_or_hold", sid, user, frame, bound)
            else:
                out = await twin.call("end_session", sid, rng.choice(list(EndReason)), now)
        elif op == "available":
            out = await twin.call("set_available", tid.id, rng.random() < 0.8)
        elif op == "heartbeat":
            out = await twin.call("heartbeat", rng.choice(servers), now)
        else:
            out = await twin.call("reap_servers", now, rng.choice([5.0, 60.0]))
        seen.kinds[op] += 1
        seen.reasons.update(_reasons(out))
        if out[0] == "error":
            seen.errors[(op, out[1].__name__)] += 1
        # A server ticks. Graces armed by one reap end together, and MemoryPool
        # fires those in set order, so the order, and which of them a limit
        # cuts off, is arbitrary there: fire all, compare unordered (the
        # order and the limit are held to MemoryPool's in the tests below).
        if rng.random() < 0.5:
            fired = await twin.call("fire_due", now, 1000, unordered=True)
            seen.reasons.update(_reasons(fired))
        # The queue after every step; every request, session and user now and then.
        every = (rids, users, sids) if step % 10 == 0 else ([], [], [])
        await _same_state(twin, *every, now)

    await _same_state(twin, rids, users, sids, now)
    return seen


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_redis_pool_answers_exactly_as_memory_pool(pools: Pools, seed: int) -> None:
    seen = await _random_run(Twin(MemoryPool(T), pools()), seed, steps=600, run=0)
    # The run went through every transition of a request, not just errors.
    assert set(seen.reasons) >= {
        None,  # claimed
        "declined",
        "released",
        "therapist_lost",
        "matched",
        "cancelled",
        "no_therapist",
        "client_no_response",
    }, seen.reasons
    assert len(seen.kinds) == 12


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_redis_pool_runs_sessions_exactly_as_memory_pool(pools: Pools, seed: int) -> None:
    seen = await _random_run(Twin(MemoryPool(T), pools()), seed, steps=600, run=1)
    # Sessions went live, frames were held and handed over once, sessions
    # ended by hand and past the grace, and every session error came up.
    ended_by_hand = sum(seen.reasons[r] for r in EndReason if r is not EndReason.PEER_LOST)
    assert seen.reasons["peer_lost"] > 0 and ended_by_hand > 0, seen.reasons
    assert seen.went_live > 0 and seen.frames_delivered > 0, seen
    assert {
        ("join", "NotFound"),
        ("join", "Forbidden"),
        ("signal", "NotFound"),
        ("signal", "Forbidden"),
        ("signal", "Conflict"),
    } <= set(seen.errors), seen.errors
    assert len(seen.kinds) == 16


def _reasons(out: tuple[Any, ...]) -> list[str | None]:
    """The ``after.reason`` of every change a call returned, and the
    ``end_reason`` of every session it ended."""
    value = out[1] if out[0] == "ok" else None
    changes = value if isinstance(value, list) else [value]
    if isinstance(value, tuple):  # create
        changes = [value[1]]
    return [
        c.after.reason if isinstance(c, Change) else c.end_reason
        for c in changes
        if isinstance(c, Change) or (isinstance(c, Session) and c.state is SessionState.ENDED)
    ]


async def _pick_session(rng: random.Random, mem: MemoryPool, sids: list[str]) -> str:
    """Mostly an open session (else any, or one that never existed)."""
    if rng.random() < 0.85:
        live = [sid for sid in sids if (s := await mem.get_session(sid)) and s.is_open]
        if live:
            return rng.choice(live)
    return rng.choice(sids)


#: The states of the requests each operation mostly picks (so that most calls succeed).
_TARGET = {
    "claim": (State.WAITING,),
    "match": (State.WAITING,),
    "release": (State.CLAIMED,),
    "decline": (State.CLAIMED,),
    "accept": (State.CLAIMED,),
    "cancel": (State.WAITING, State.CLAIMED),
}


async def _pick(
    rng: random.Random, mem: MemoryPool, rids: list[str], states: tuple[State, ...]
) -> str:
    """Mostly a request in one of ``states`` (else any, or one that never existed)."""
    if states and rng.random() < 0.8:
        live = [rid for rid in rids if (req := await mem.get(rid)) and req.state in states]
        if live:
            return rng.choice(live)
    return rng.choice(rids)


async def _same_state(
    twin: Twin, rids: list[str], users: list[str], sids: list[str], now: float
) -> None:
    """Every read agrees: the queue and stats, and what ``rids``, ``users`` and
    ``sids`` look up."""
    waiting = await twin.call("waiting")
    await twin.call("positions", [r.id for r in waiting[1]] + ["never-created"])
    await twin.call("stats", now)
    for rid in rids:
        await twin.call("get", rid)
    for sid in sids:
        await twin.call("get_session", sid)
    for user in users:
        await twin.call("hold_of", user)
        await twin.call("active_request_of", user)
        await twin.call("open_session_of", user)
        await twin.call("is_available", user)


async def test_ties_and_limits_fire_in_memory_pools_order(pools: Pools) -> None:
    twin = Twin(MemoryPool(T), pools())
    # Deadlines due together: by (expires_at, id); the limit cuts in that order.
    for rid in ("rb", "ra", "rc"):
        await twin.call("create", DRAFT, f"c-{rid}", rid, T0)
    assert await twin.call("fire_due", T0 + 600, 0) == ("ok", [])
    first = await twin.call("fire_due", T0 + 600, 2)
    assert [c.after.id for c in first[1]] == ["ra", "rb"]
    assert [c.after.id for c in (await twin.call("fire_due", T0 + 600, 2))[1]] == ["rc"]

    # Graces ending together: in the order they were armed.
    vanish = ["t3", "t1", "t4", "t0", "t2"]
    for i, tid in enumerate(sorted(vanish)):
        await twin.call("create", DRAFT, f"c{i}", f"r{i}", T0 + 1000)
        await twin.call("connect", tid, Role.THERAPIST, "k", "s0", T0 + 1000)
        await twin.call("claim", f"r{i}", profile(tid), T0 + 1001)
    for tid in vanish:
        await twin.call("disconnect", tid, Role.THERAPIST, "k", "s0", T0 + 1002)
    fired = [await twin.call("fire_due", T0 + 1020, 1) for _ in range(6)]
    assert [f[1][0].lost_therapist for f in fired[:5]] == vanish
    assert fired[5] == ("ok", [])

    # Dead servers: in the order of their first heartbeat.
    for server in ("s9", "s2", "s5"):
        await twin.call("heartbeat", server, T0 + 2000)
    await twin.call("heartbeat", "s2", T0 + 2001)
    assert (await twin.call("reap_servers", T0 + 2100, 10))[1] == ["s9", "s2", "s5"]


# -- scripts -----------------------------------------------------------------


def _scripts() -> dict[str, str]:
    folder = resources.files("pool") / "lua"
    return {
        f.name: f.read_text(encoding="utf-8") for f in folder.iterdir() if f.name.endswith(".lua")
    }


def test_every_script_header_names_each_key_and_arg_it_uses() -> None:
    scripts = _scripts()
    assert {"claim.lua", "fire_due.lua", "_lib.lua"} <= set(scripts)
    for name, src in scripts.items():
        if name == "_lib.lua":
            continue
        lines = src.splitlines()
        header = [ln for ln in lines if ln.startswith("--")]
        body = "\n".join(ln for ln in lines if not ln.startswith("--"))
        assert lines[0].startswith(f"-- {name}:"), name
        named = {m for ln in header for m in re.findall(r"^--\s+((?:KEYS|ARGV)\[\d+\])", ln)}
        used = set(re.findall(r"(?:KEYS|ARGV)\[\d+\]", body))
        assert used, name
        assert used <= named, (name, used - named)


async def test_scripts_heal_after_script_flush(pools: Pools) -> None:
    store = pools()
    await store.create(DRAFT, "c1", "r1", T0)
    await store.client.script_flush()
    sha = store._scripts["claim"].sha
    assert await store.client.script_exists(sha) == [False]
    change = await store.claim("r1", profile("t1"), T0 + 1)
    assert change.after.state is State.CLAIMED
    assert await store.client.script_exists(sha) == [True]
    # The join runs its script by hand (its reply stays binary): it heals too.
    await store.accept("r1", "c1", "s1", T0 + 2)
    await store.pass_or_hold("s1", "t1", {"n": 1})
    await store.client.script_flush()
    assert (await store.join_session("s1", "c1", T0 + 3))[2] == [{"n": 1}]
    assert await store.client.script_exists(store._scripts["join_session"].sha) == [True]


def test_script_sources_are_static() -> None:
    """Values travel as ARGV: what is registered is the files' text, nothing formatted in."""
    scripts = _scripts()
    lib = scripts["_lib.lua"]
    for name, src in scripts.items():
        if name != "_lib.lua":
            expected = (lib + "\n" + src) if "-- uses _lib.lua" in src else src
            assert _redis_scripts.source(name.removesuffix(".lua")) == expected


# -- Redis restarts and crashes ----------------------------------------------


@single_redis
@pytest.mark.parametrize("kill", [False, True])
async def test_restart_loses_nothing_and_the_pool_heals_itself(
    pools: Pools, redis_server: Any, kill: bool
) -> None:
    store = pools()
    for i in range(20):
        await store.create(DRAFT, f"c{i}", f"r{i:02}", T0 + i)
    await store.claim("r05", profile("t1"), T0 + 30)
    before = [await store.get(f"r{i:02}") for i in range(20)]
    positions = await store.positions([f"r{i:02}" for i in range(20)])

    redis_server.restart(kill=kill)

    # The same pool object, no reconnect by hand: the client retries on a new
    # connection and the scripts (gone from the restarted Redis) load again.
    assert [await store.get(f"r{i:02}") for i in range(20)] == before
    assert await store.positions([f"r{i:02}" for i in range(20)]) == positions
    change = await store.claim("r06", profile("t2"), T0 + 40)
    assert change.after.claimed_by == "t2"
    assert (await store.stats(T0 + 41)).claimed == 2


@single_redis
async def test_unavailable_while_redis_is_down(pools: Pools, redis_server: Any) -> None:
    store = pools()
    await store.create(DRAFT, "c1", "r1", T0)
    redis_server.stop()
    try:
        calls: list[Callable[[], Awaitable[Any]]] = [
            store.ping,
            lambda: store.get("r1"),
            lambda: store.claim("r1", profile("t1"), T0 + 1),
            lambda: store.create(DRAFT, "c2", "r2", T0 + 1),
            lambda: store.positions(["r1"]),
            lambda: store.stats(T0 + 1),
            lambda: store.fire_due(T0 + 1),
            lambda: store.join_session("s1", "c1", T0 + 1),
            lambda: store.pass_or_hold("s1", "c1", {"n": 1}),
            lambda: store.end_session("s1", "ended_by_client", T0 + 1),
        ]
        for call in calls:
            with pytest.raises(Unavailable) as info:
                await call()
            assert info.value.code == "unavailable"
    finally:
        redis_server.start()
    await store.ping()
    assert (await store.claim("r1", profile("t1"), T0 + 2)).after.state is State.CLAIMED


async def test_unavailable_while_the_pools_cluster_node_is_down(
    redis_cluster_url: str, redis_cluster: Any
) -> None:
    """On a cluster, the node that owns the pool's slot going down is
    ``unavailable`` (not a cluster error leaking out), and the same pool
    object heals once it is back."""
    store = RedisPool.from_url(redis_cluster_url, T)
    try:
        await store.create(DRAFT, "c1", "r1", T0)
        node = redis_cluster.node_of(Keys("qc").waiting)
        node.stop()
        try:
            calls: list[Callable[[], Awaitable[Any]]] = [
                store.ping,
                lambda: store.claim("r1", profile("t1"), T0 + 1),
                lambda: store.stats(T0 + 1),
                lambda: store.join_session("s1", "c1", T0 + 1),
            ]
            for call in calls:
                with pytest.raises(Unavailable):
                    await call()
        finally:
            node.start()
            redis_cluster.wait_ok()
        await store.ping()
        assert (await store.claim("r1", profile("t1"), T0 + 2)).after.state is State.CLAIMED
    finally:
        await store.aclose()


async def test_a_crash_of_every_cluster_node_loses_nothing(
    redis_cluster_url: str, redis_cluster: Any
) -> None:
    """Each node replays its append-only file and rejoins from its
    ``nodes.conf``; the same pool object finds the slot map and its scripts again."""
    store = RedisPool.from_url(redis_cluster_url, T)
    try:
        for i in range(5):
            await store.create(DRAFT, f"c{i}", f"r{i}", T0 + i)
        await store.claim("r1", profile("t1"), T0 + 10)
        before = [await store.get(f"r{i}") for i in range(5)]

        redis_cluster.restart(kill=True)

        assert [await store.get(f"r{i}") for i in range(5)] == before
        assert (await store.claim("r2", profile("t2"), T0 + 11)).after.claimed_by == "t2"
        assert (await store.stats(T0 + 12)).claimed == 2
    finally:
        await store.aclose()


# -- several processes at once -------------------------------------------------


async def test_fifty_therapists_claim_at_once_and_one_wins(
    pools: Pools,
) -> None:
    stores = [pools() for _ in range(5)]
    await stores[0].create(DRAFT, "c1", "r1", T0)
    therapists = [profile(f"t{i:02}") for i in range(50)]
    results = await asyncio.gather(
        *(stores[i % 5].claim("r1", p, T0 + 1) for i, p in enumerate(therapists)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, Change)]
    assert len(winners) == 1
    losers = [r for r in results if not isinstance(r, Change)]
    assert len(losers) == 49 and all(isinstance(r, Taken) for r in losers)
    winner = winners[0].after.claimed_by
    assert (await stores[3].get("r1")).claimed_by == winner  # type: ignore[union-attr]
    holds = [await stores[1].hold_of(p.id) for p in therapists]
    assert [p.id for p, h in zip(therapists, holds, strict=True) if h is not None] == [winner]


async def test_fire_due_from_many_processes_fires_each_once(
    pools: Pools,
) -> None:
    stores = [pools() for _ in range(6)]
    s0 = stores[0]
    n = 40
    for i in range(n):
        await s0.create(DRAFT, f"c{i}", f"r{i:02}", T0 + i * 0.001)
    # Ten therapists claim, then lose their only connection: ten graces.
    for i in range(10):
        tid = f"t{i}"
        await s0.connect(tid, Role.THERAPIST, "k", "s0", T0)
        await s0.claim(f"r{i:02}", profile(tid), T0 + 1)
        await s0.disconnect(tid, Role.THERAPIST, "k", "s0", T0 + 2)

    async def drain(store: RedisPool, now: float) -> list[Change]:
        out: list[Change] = []
        while fired := await store.fire_due(now, limit=3):
            changes = [c for c in fired if isinstance(c, Change)]
            assert changes == fired  # no session in this test
            out += changes
        return out

    # The graces (due at T0 + 17) fire; the claims' deadlines (T0 + 61) not yet.
    lost = [c for cs in await asyncio.gather(*(drain(s, T0 + 20) for s in stores)) for c in cs]
    assert sorted(c.lost_therapist or "" for c in lost) == [f"t{i}" for i in range(10)]
    assert all(c.after.reason == "therapist_lost" for c in lost)
    assert len(await s0.waiting()) == n

    # Every request's max wait passes: each expires exactly once.
    expired = [c for cs in await asyncio.gather(*(drain(s, T0 + 700) for s in stores)) for c in cs]
    assert sorted(c.after.id for c in expired) == [f"r{i:02}" for i in range(n)]
    assert {c.after.reason for c in expired} == {"no_therapist"}
    stats = await s0.stats(T0 + 700)
    assert (stats.expired_15m, stats.waiting, stats.therapists_busy) == (n, 0, 0)


async def test_a_small_bounded_pool_waits_instead_of_failing(
    pools: Pools, request: pytest.FixtureRequest
) -> None:
    store = pools(max_connections=2, pool_timeout_s=10.0)
    await asyncio.gather(*(store.create(DRAFT, f"c{i}", f"r{i:03}", T0 + i) for i in range(200)))
    got = await asyncio.gather(*(store.positions([f"r{i:03}"]) for i in range(200)))
    assert [g[f"r{i:03}"] for i, g in enumerate(got)] == list(range(1, 201))
    if pools.kind == "cluster":
        # Every key is on one node; the gate let two round trips at a time
        # reach it (the client itself may keep a spare for its slot map).
        node = request.getfixturevalue("redis_cluster").node_of(Keys("qc").waiting)
        url = f"redis://127.0.0.1:{node.port}"
        limit = 2 + 1
    else:
        assert store.client.connection_pool.max_connections == 2
        url, limit = pools.url, 2
    probe = aredis.Redis.from_url(url)
    try:
        clients = (await probe.info("clients"))["connected_clients"]
    finally:
        await probe.aclose()
    assert clients - 1 <= limit  # the probe itself, and the pool's


# -- keys ----------------------------------------------------------------------


async def test_every_key_of_the_pool_is_in_one_cluster_slot(
    pools: Pools,
) -> None:
    store = pools()
    await store.put_profile(profile("t1"))
    await store.heartbeat("s0", T0)
    for user, role in (("t1", Role.THERAPIST), ("t2", Role.THERAPIST), ("c1", Role.CLIENT)):
        await store.connect(user, role, "k", "s0", T0)
    await store.set_available("t1", True)
    await store.create(DRAFT, "c1", "r1", T0, "idem-{1}")  # a brace in a key moves no tag
    await store.create(DRAFT, "c2", "r2", T0, None)
    await store.claim("r1", profile("t1"), T0 + 1)
    await store.accept("r1", "c1", "sess-1", T0 + 2)
    await store.join_session("sess-1", "c1", T0 + 2)
    assert await store.pass_or_hold("sess-1", "c1", {"n": 1}) is False  # held for t1
    assert await store.pass_or_hold("sess-1", "t1", {"n": 2}) is True
    await store.claim("r2", profile("t2"), T0 + 3)
    await store.decline("r2", "c2", T0 + 4)
    await store.disconnect("t1", Role.THERAPIST, "k", "s0", T0 + 5)
    await store.cancel("r2", "c2", T0 + 6)
    await store.stats(T0 + 7)

    keys = [k async for k in store.client.scan_iter(match="*")]
    assert b"qc:{pool}:held:sess-1:therapist" in keys
    assert len(keys) >= 20
    assert all(k.startswith(b"qc:{pool}:") for k in keys), keys
    assert {key_slot(k) for k in keys} == {key_slot(b"pool")}


async def test_offer_candidates_parse_each_profile_version_once(pools: Pools) -> None:
    """Choosing whom to offer a request reads digests, not every profile: a
    process parses a profile once per version, fetches only those it has not
    seen (one MGET), and still reads a profile stored before digests were."""
    a, b = pools(), pools()
    for tid in ("t1", "t2"):
        await a.put_profile(profile(tid))
    # Stored by an older server: the profile alone, no digest.
    legacy = profile("t3", name="Dr Legacy")
    await a.client.set(a._keys.profile("t3"), json.dumps(legacy.to_record()))
    for tid in ("t1", "t2", "t3"):
        await a.connect(tid, Role.THERAPIST, "k-" + tid, "s0", T0)
        assert await a.set_available(tid, True)
    parsed: list[str] = []
    real = a._remember

    def counting(digest: str, raw: str) -> TherapistProfile:
        parsed.append(json.loads(raw)["id"])
        return real(digest, raw)

    a._remember = counting  # type: ignore[method-assign]
    first = await a.offer_candidates("GB")
    assert [c.profile for c in first] == [profile("t1"), profile("t2"), legacy]
    assert sorted(parsed) == ["t1", "t2", "t3"]
    assert await a.offer_candidates("GB") == first and len(parsed) == 3  # nothing parsed again
    assert await b.offer_candidates("GB") == first  # another process, cold: fetched
    # A change made on b is what a weighs next: one profile parsed again.
    await b.put_profile(profile("t1", name="Dr New"))
    assert [c.profile.name for c in await a.offer_candidates("GB")] == ["Dr New", "t2", "Dr Legacy"]
    assert parsed[3:] == ["t1"]


async def test_offer_candidates_read_the_regions_index_only(pools: Pools) -> None:
    """offer_candidates.lua reads the region's availability index, not every
    available therapist: one no longer available is dropped from it as it is
    met; an index missing (data written before it, or its time is up) is
    built again from every available therapist, adding only."""
    store = pools()
    k = store._keys
    for tid, regions in (("t1", ("GB",)), ("t2", ("GB", "US-CA")), ("t3", ("US-CA",))):
        await store.put_profile(profile(tid, regions=regions))
        await store.connect(tid, Role.THERAPIST, "k-" + tid, "s0", T0)
        assert await store.set_available(tid, True)
    members = store.client.smembers
    assert await members(k.avail("GB")) == {b"t1", b"t2"}
    assert await members(k.avail("US-CA")) == {b"t2", b"t3"}
    # Unavailable: still indexed until a choice for the region meets it.
    await store.set_available("t1", False)
    assert await members(k.avail("GB")) == {b"t1", b"t2"}
    assert [c.profile.id for c in await store.offer_candidates("GB")] == ["t2"]
    assert await members(k.avail("GB")) == {b"t2"}
    # Written by a server of an earlier version: available, never indexed.
    await store.client.sadd(k.available, "t1")
    assert [c.profile.id for c in await store.offer_candidates("GB")] == ["t2"]  # not yet
    await store.client.delete(k.avail_index)  # the index's time is up
    assert [c.profile.id for c in await store.offer_candidates("GB")] == ["t1", "t2"]
    assert await members(k.avail("US-CA")) == {b"t2", b"t3"}
    assert 0 < await store.client.ttl(k.avail_index) <= AVAIL_INDEX_REBUILD_S


async def test_a_creation_is_announced_in_its_own_step(pools: Pools) -> None:
    """Given an ``announce``, create.lua publishes the creation's effects on
    the bus itself, in the step that writes the request, its place put over
    the placeholder; a replay, a refusal, an encoding that holds the
    placeholder twice and a bus that hands nothing over publish nothing (the
    caller then publishes, as ``announced`` says)."""
    store = pools()
    bus: RedisBus[Effect] = RedisBus(store.client, Effect.from_wire)
    got: list[list[Effect]] = []

    async def handler(effects: list[Effect]) -> None:
        got.append(effects)

    async def resync() -> None:
        return None

    def announce(change: Change) -> Outgoing | None:
        return bus.outgoing(fx.effects(change))

    await bus.start(handler, resync)
    try:
        for n in range(2):  # the announced request is third in the queue
            await store.create(DRAFT, f"c{n}", f"req_{n}", T0 + n)
        req, change = await store.create(DRAFT, "c2", "req_2", T0 + 2, "key-1", announce)
        assert change is not None and change.announced and change.position == 3
        for _ in range(500):
            if got:
                break
            await asyncio.sleep(0.01)
        # Exactly the effects the caller would have published, with the real place.
        assert got == [fx.effects(change)]
        assert [e.position for e in got[0] if e.kind == "new"] == [3]

        again, replay = await store.create(DRAFT, "c2", "req_3", T0 + 3, "key-1", announce)
        assert replay is None and again.id == req.id
        with pytest.raises(RequestExists):
            await store.create(DRAFT, "c2", "req_4", T0 + 4, None, announce)

        def twice(change: Change) -> Outgoing | None:
            new = Effect("new", request=change.after, position=change.position)
            return bus.outgoing([*fx.effects(change), new])

        _, doubled = await store.create(DRAFT, "c5", "req_5", T0 + 5, None, twice)
        assert doubled is not None and not doubled.announced and doubled.position == 4
        _, local = await store.create(DRAFT, "c6", "req_6", T0 + 6, None, lambda change: None)
        assert local is not None and not local.announced and local.position == 5
        await asyncio.sleep(0.3)
        assert len(got) == 1  # nothing else was published
    finally:
        await bus.aclose()


async def test_offer_candidates_past_one_chunk_of_the_script(pools: Pools) -> None:
    """offer_candidates.lua looks therapists up 500 at a time: 1201 available,
    some holding a claim, some having claimed before, all come back right."""
    store = pools()
    tids = [f"t{i:04d}" for i in range(1201)]

    async def available(tid: str) -> None:
        await store.put_profile(profile(tid))
        await store.connect(tid, Role.THERAPIST, "k-" + tid, "s0", T0)
        assert await store.set_available(tid, True)

    for i in range(0, len(tids), 100):
        await asyncio.gather(*(available(tid) for tid in tids[i : i + 100]))
    # t0700 claimed and let go (it has a last claim); t0501 holds a claim.
    await store.create(DRAFT, "c1", "r1", T0)
    await store.claim("r1", profile("t0700"), T0 + 1)
    await store.release("r1", "t0700", T0 + 2)
    await store.claim("r1", profile("t0501"), T0 + 3)
    got = await store.offer_candidates("GB")
    assert [c.profile.id for c in got] == [t for t in tids if t != "t0501"]
    lasts = {c.profile.id: c.last_claim_at for c in got if c.last_claim_at is not None}
    assert lasts == {"t0700": T0 + 1}
    assert got[1200 - 1].profile == profile(tids[-1])


async def test_prefixes_keep_pools_apart(pools: Pools) -> None:
    a, b = pools(prefix="qc"), pools(prefix="other")
    await a.create(DRAFT, "c1", "r1", T0)
    assert await b.get("r1") is None
    assert (await b.stats(T0)).waiting == 0
    with pytest.raises(ValueError):
        Keys("bad{tag}")


async def test_a_client_that_decodes_replies_works_too(pools: Pools) -> None:
    """The constructor takes any client: replies may come as str (from_url's stay bytes)."""
    store = RedisPool(pools.raw_client(decode_responses=True), T, prefix="str")
    try:
        await store.put_profile(profile("t1"))
        assert await store.get_profile("t1") == profile("t1")
        created, _ = await store.create(DRAFT, "c1", "r1", T0, "key")
        assert (await store.create(DRAFT, "c1", "r1", T0, "key"))[0] == created
        assert await store.waiting() == [created] == [await store.get("r1")]
        change = await store.claim("r1", profile("t1"), T0 + 1)
        assert await store.active_request_of("c1") == change.after
        assert (await store.hold_of("t1")) == Hold("claim", "r1")
        await store.accept("r1", "c1", "s1", T0 + 2)
        assert (await store.open_session_of("t1")) == await store.get_session("s1")
        # Held frames are binary (msgpack): they come back whole all the same.
        frame = {"type": "rtc.signal", "data": {"sdp": "v=0 ü", "b": [1, 2.5, None]}}
        assert await store.pass_or_hold("s1", "t1", frame) is False
        session, went_live, held = await store.join_session("s1", "c1", T0 + 2.5)
        assert (went_live, held) == (False, [frame])
        assert session == await store.get_session("s1")
        assert session.joined == frozenset({"c1"})
        ended = await store.end_session("s1", "ended_by_client", T0 + 2.75)
        assert ended is not None and ended.end_reason == "ended_by_client"
        await store.heartbeat("srv", T0)
        assert await store.reap_servers(T0 + 100, 10) == ["srv"]
        assert (await store.stats(T0 + 3)).wait_p50_s == 1.0
    finally:
        await store.aclose()


# -- what only Redis has: TTLs ----------------------------------------------------


async def test_idempotency_keys_and_finished_requests_expire_in_redis(
    pools: Pools,
) -> None:
    store = pools()
    k = Keys("qc")
    await store.create(DRAFT, "c1", "r1", T0, "key-1")
    assert 86_000 < await store.client.ttl(k.idem("c1", "key-1")) <= 86_400
    assert await store.client.ttl(k.req("r1")) == -1  # live requests never lapse
    await store.cancel("r1", "c1", T0 + 1)
    assert FINISHED_TTL_S - 100 < await store.client.ttl(k.req("r1")) <= FINISHED_TTL_S


async def test_times_round_trip_to_the_last_bit(pools: Pools) -> None:
    store = pools()
    now = 1_700_000_000.1 + 2**-20
    await store.create(DRAFT, "c1", "r1", now)
    change = await store.claim("r1", profile("t1"), now + 1e-6)
    stored = await store.get("r1")
    assert stored == change.after
    assert stored is not None and stored.claimed_at == now + 1e-6
    assert stored.expires_at == now + 1e-6 + T.claim_confirm_s
    back = await store.release("r1", "t1", now + 2)
    assert (await store.get("r1")) == back.after
    assert back.after.expires_at == now + T.request_max_wait_s


async def test_held_frames_are_msgpack_lists_and_go_with_the_session(
    pools: Pools,
) -> None:
    store = pools()
    k = Keys("qc")
    await store.create(DRAFT, "c1", "r1", T0)
    await store.claim("r1", profile("t1"), T0 + 1)
    await store.accept("r1", "c1", "s1", T0 + 2)
    frames = [{"type": "rtc.signal", "data": {"n": n, "sdp": "v=0 ✓"}} for n in range(3)]
    for f in frames:
        assert await store.pass_or_hold("s1", "t1", f) is False
    assert await store.pass_or_hold("s1", "c1", {"n": "for t1"}) is False
    stored = await store.client.lrange(k.held("s1", "client"), 0, -1)
    assert [msgpack.unpackb(b, raw=False) for b in stored if isinstance(b, bytes)] == frames
    assert await store.client.ttl(k.sess("s1")) == -1  # an open session never lapses
    # The client's join takes its frames; the therapist's stay held.
    assert (await store.join_session("s1", "c1", T0 + 3))[2] == frames
    assert await store.client.exists(k.held("s1", "client")) == 0
    assert await store.client.llen(k.held("s1", "therapist")) == 1
    # The end drops what is still held and keeps the record a while.
    assert await store.end_session("s1", "ended_by_therapist", T0 + 4) is not None
    assert await store.client.exists(k.held("s1", "therapist")) == 0
    assert FINISHED_TTL_S - 100 < await store.client.ttl(k.sess("s1")) <= FINISHED_TTL_S


@single_redis
async def test_sessions_survive_a_crash_of_redis(pools: Pools, redis_server: Any) -> None:
    """Who joined, the live start and the held frames are in the AOF."""
    store = pools()
    await store.create(DRAFT, "c1", "r1", T0)
    await store.claim("r1", profile("t1"), T0 + 1)
    await store.accept("r1", "c1", "s1", T0 + 2)
    await store.join_session("s1", "t1", T0 + 3)
    await store.pass_or_hold("s1", "t1", {"n": 1})
    before = await store.get_session("s1")

    redis_server.restart(kill=True)

    assert await store.get_session("s1") == before
    session, went_live, held = await store.join_session("s1", "c1", T0 + 4)
    assert (went_live, held, session.started_at) == (True, [{"n": 1}], T0 + 4)
    assert await store.end_session("s1", "ended_by_client", T0 + 5) is not None
    assert await store.hold_of("t1") is None


async def test_fifty_servers_end_one_session_once(pools: Pools) -> None:
    stores = [pools() for _ in range(5)]
    await stores[0].heartbeat("s0", T0)
    await stores[0].connect("t1", Role.THERAPIST, "k", "s0", T0)
    await stores[0].create(DRAFT, "c1", "r1", T0)
    await stores[0].claim("r1", profile("t1"), T0 + 1)
    await stores[0].accept("r1", "c1", "s1", T0 + 2)
    await stores[0].disconnect("t1", Role.THERAPIST, "k", "s0", T0 + 3)  # grace due T0 + 18
    at = T0 + 18
    ends = [stores[i % 5].end_session("s1", "ended_by_client", at) for i in range(45)]
    fires = [stores[i].fire_due(at) for i in range(5)]
    hand_results, timer_results = await asyncio.gather(
        asyncio.gather(*ends), asyncio.gather(*fires)
    )
    by_hand = [r for r in hand_results if r is not None]
    by_timer = [x for batch in timer_results for x in batch]
    assert len(by_hand) + len(by_timer) == 1, (hand_results, timer_results)
    ended = (by_hand + by_timer)[0]
    assert isinstance(ended, Session) and ended.state is SessionState.ENDED
    assert await stores[4].get_session("s1") == ended
    assert (await stores[2].stats(at)).therapists_busy == 0
