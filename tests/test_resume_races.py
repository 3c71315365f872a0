"""A console's state is read to be sent when it opens (and on a resync),
while the bus's deliveries run on: a frame delivered meanwhile is newer than
what was read. It goes out after what was read, and what was read does not
overwrite what the delivery set (AppContext.resume)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from hubkit import DRAFT, client_conn, console, count_calls, profile, sent
from test_booking_http import World, serve

from core.errors import Unavailable
from dispatch.context import RESYNC_AT_ONCE
from pool.effects import effects
from pool.model import Hold, Request


@pytest_asyncio.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    async with serve(database_url) as w:
        yield w


async def test_a_claim_delivered_while_a_client_resumes_is_what_it_ends_with(
    world: World,
) -> None:
    ctx, now = world.ctx, world.clock.now
    store = ctx.store
    await store.put_profile(profile("t9"))
    await store.create(DRAFT, "c1", "r1", now)
    conn = client_conn("c1")
    ctx.hub.add(conn)
    real = store.position

    async def claimed_meanwhile(request_id: str) -> int | None:
        read = await real(request_id)  # 1: still waiting when read
        await ctx.hub.deliver(effects(await store.claim("r1", profile("t9"), now + 1)))
        return read

    store.position = claimed_meanwhile  # type: ignore[method-assign]
    await ctx.resume(conn)
    frames: list[dict[str, Any]] = sent(conn)
    got = [(f["type"], f.get("request", {}).get("state")) for f in frames]
    assert got == [
        ("request.state", "waiting"),  # as read
        ("request.state", "claimed"),  # delivered during the read: after it
        ("request.offer", None),
    ]
    # The hub keeps the newer state: no place to refresh for a claimed request.
    assert conn.request_id == "r1" and conn.last_position is None


async def test_a_claim_ended_while_a_therapist_resumes_leaves_it_free(world: World) -> None:
    ctx, now = world.ctx, world.clock.now
    store = ctx.store
    await store.put_profile(profile("t1"))
    await store.create(DRAFT, "c1", "r1", now)
    await store.claim("r1", profile("t1"), now + 1)
    conn = console("t1")
    conn.busy = True
    ctx.hub.add(conn)
    real = store.hold_of

    async def cancelled_meanwhile(therapist_id: str) -> Hold | None:
        read = await real(therapist_id)  # the claim, when read
        await ctx.hub.deliver(effects(await store.cancel("r1", "c1", now + 2)))
        return read

    store.hold_of = cancelled_meanwhile  # type: ignore[method-assign]
    await ctx.resume(conn)
    # The snapshot as read (the claim's request.get came after the cancel:
    # no claim.ok), then what was delivered meanwhile.
    assert [f["type"] for f in sent(conn)] == ["pool.snapshot", "claim.cancelled", "pool.snapshot"]
    # Free again, as the delivered frame said: it gets request.new.
    assert not conn.busy
    _, created = await store.create(DRAFT, "c2", "r2", now + 3)
    assert created is not None
    await ctx.hub.deliver(effects(created))
    assert [f["type"] for f in sent(conn)] == ["request.new"]


async def test_two_resumes_of_one_console_run_one_after_the_other(world: World) -> None:
    """A resync while the console opens: the second resume waits for the
    first and reads afresh, so its state (newer) goes out last."""
    ctx, now = world.ctx, world.clock.now
    store = ctx.store
    await store.create(DRAFT, "c1", "r1", now)
    conn = client_conn("c1")
    ctx.hub.add(conn)
    real = store.active_request_of
    reads = 0

    async def slow(client_id: str) -> Any:
        nonlocal reads
        reads += 1
        got = await real(client_id)
        if reads == 1:
            await store.cancel("r1", "c1", now + 1)  # what the first read is stale
            await asyncio.sleep(0.05)  # the second resume starts meanwhile, and waits
        return got

    store.active_request_of = slow  # type: ignore[method-assign]
    await asyncio.gather(ctx.resume(conn), ctx.resume(conn))
    states = [f["request"]["state"] for f in sent(conn) if f["type"] == "request.state"]
    assert states == ["waiting"]  # the second read found none: nothing to say
    assert reads == 2 and conn.held_back is None and conn.resuming is None
    assert conn.request_id is None


async def test_a_resync_reads_a_few_consoles_at_once_each_once(world: World) -> None:
    """The bus delivers nothing until its resync is done: consoles are read
    RESYNC_AT_ONCE at a time, not one after the other, and each once."""
    ctx, now = world.ctx, world.clock.now
    store = ctx.store
    await store.create(DRAFT, "c1", "r1", now)
    conns = [client_conn(f"c{i}") for i in range(3 * RESYNC_AT_ONCE)]
    for conn in conns:
        ctx.hub.add(conn)
    real = store.active_request_of
    reads: Counter[str] = Counter()
    in_flight = peak = 0

    async def counted(client_id: str) -> Request | None:
        nonlocal in_flight, peak
        reads[client_id] += 1
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.01)
            return await real(client_id)
        finally:
            in_flight -= 1

    store.active_request_of = counted  # type: ignore[method-assign]
    await ctx.resync()
    assert peak == RESYNC_AT_ONCE
    assert reads == Counter({c.user.id: 1 for c in conns})
    assert [f["request"]["id"] for f in sent(conns[1])] == ["r1"]  # c1's request
    assert [sent(c) for c in conns if c is not conns[1]] == [[]] * (len(conns) - 1)
    assert all(c.held_back is None and c.resuming is None for c in conns)


async def test_a_resync_stops_at_the_first_failure_and_raises_it(world: World) -> None:
    """The bus meets the failure as after any other (it subscribes again and
    resyncs anew): the error itself, not a group; nothing is left held back."""
    ctx = world.ctx
    store = ctx.store
    conns = [client_conn(f"c{i}") for i in range(2 * RESYNC_AT_ONCE)]
    for conn in conns:
        ctx.hub.add(conn)
    real = store.active_request_of
    started: list[str] = []

    async def failing(client_id: str) -> Request | None:
        started.append(client_id)
        if client_id == "c3":
            raise Unavailable("redis went away")
        await asyncio.sleep(0.05)
        return await real(client_id)

    store.active_request_of = failing  # type: ignore[method-assign]
    with pytest.raises(Unavailable):
        await ctx.resync()
    # The first RESYNC_AT_ONCE began together; the rest were never read.
    assert len(started) == RESYNC_AT_ONCE
    assert all(c.held_back is None and c.resuming is None for c in conns)


async def test_a_resync_reads_the_waiting_requests_once_for_every_snapshot(world: World) -> None:
    """Each therapist console's snapshot comes from one read of the queue,
    made after every console began holding back; a console already resuming
    (one opening) is resumed again after the pass, reading afresh."""
    ctx, now = world.ctx, world.clock.now
    store = ctx.store
    await store.create(DRAFT, "c1", "r1", now)
    consoles = [console(f"t{i}") for i in range(RESYNC_AT_ONCE + 4)]
    for conn in consoles:
        assert conn.profile is not None
        await store.put_profile(conn.profile)
        ctx.hub.add(conn)
    opening = consoles[0]
    reads = count_calls(store, "waiting")
    gate = asyncio.Event()
    real_hold = store.hold_of

    async def slow_first(therapist_id: str) -> Hold | None:
        if therapist_id == opening.user.id and not gate.is_set():
            gate.set()
            await asyncio.sleep(0.05)  # the resync runs meanwhile
        return await real_hold(therapist_id)

    store.hold_of = slow_first  # type: ignore[method-assign]
    first = asyncio.create_task(ctx.resume(opening))
    await gate.wait()
    await ctx.resync()
    await first
    # One read for the opening console's own resume, one for the whole pass,
    # one for the opening console's resume after it.
    assert reads.n == 3
    for conn in consoles:
        snaps = [f for f in sent(conn) if f["type"] == "pool.snapshot"]
        assert [[r["id"] for r in f["requests"]] for f in snaps] == (
            [["r1"], ["r1"]] if conn is opening else [["r1"]]
        )
        assert conn.held_back is None and conn.resuming is None
