"""The hub announces a request just created at the place its creating step
read (no read of its own), and never announces a creation whose request it
already saw leave the queue: two servers' publishes may cross on the bus
(created on one, claimed or cancelled on another), and a late ``new`` would
show consoles a request nobody can take."""

from __future__ import annotations

from typing import Any

import pytest
from hubkit import DRAFT, T0, client_conn, hub_with, profile, sent

from pool.effects import Effect, effects
from pool.memory import MemoryPool
from pool.model import Timeouts
from pool.store import PoolStore


class NoReads(MemoryPool):
    """A pool that fails the test when asked for a position."""

    async def position(self, request_id: str) -> int | None:
        raise AssertionError("the hub read a position it was handed")


def states(conn: Any) -> list[tuple[str, int | None]]:
    """The request.state frames sent: (state, position)."""
    return [
        (f["request"]["state"], f["request"].get("position"))
        for f in sent(conn)
        if f["type"] == "request.state"
    ]


def count_moves(store: MemoryPool) -> list[dict[str, int | None]]:
    """Records what each ``store.moved`` read is asked (one entry per read)."""
    reads: list[dict[str, int | None]] = []
    real = store.moved

    async def counted(last: dict[str, int | None]) -> dict[str, tuple[int, Any]]:
        reads.append(dict(last))
        return await real(last)

    store.moved = counted  # type: ignore[method-assign]
    return reads


def news(conn: Any) -> list[dict[str, Any]]:
    return [f for f in sent(conn) if f["type"] == "request.new"]


async def test_a_creation_is_announced_at_the_place_it_took() -> None:
    store = NoReads(Timeouts())
    hub, (a, b) = hub_with(store, "t-a", "t-b")
    _, change = await store.create(DRAFT, "c1", "r1", T0)
    assert change is not None
    await hub.deliver([e for e in effects(change) if e.kind == "new"])
    for conn in (a, b):
        [frame] = news(conn)
        assert frame["request"]["id"] == "r1" and frame["request"]["position"] == 1


async def test_the_creating_client_is_told_its_place_without_a_read() -> None:
    """The client's own request.state for a creation uses the place the
    creation's message carries (one read fewer per request); a later
    request.state, with no place handed, reads it."""
    store = NoReads(Timeouts())
    hub, _ = hub_with(store)
    conn = client_conn("c2")
    hub.add(conn)
    await store.create(DRAFT, "c1", "r1", T0)
    _, change = await store.create(DRAFT, "c2", "r2", T0 + 1)
    assert change is not None and change.position == 2
    await hub.deliver(effects(change))
    assert states(conn) == [("waiting", 2)] and conn.last_position == 2
    # Declined back to waiting: no place in the message, so it is read.
    claimed = await store.claim("r2", profile("t1"), T0 + 2)
    await hub.deliver([e for e in effects(claimed) if e.kind == "client_state"])
    assert states(conn) == [("claimed", None)]
    declined = await store.decline("r2", "c2", T0 + 3)
    with pytest.raises(AssertionError, match="read a position"):
        await hub.deliver([e for e in effects(declined) if e.kind == "client_state"])


async def test_a_creation_arriving_after_its_request_left_is_not_announced() -> None:
    store: PoolStore = MemoryPool(Timeouts())
    hub, (a,) = hub_with(store, "t-a")
    _, created = await store.create(DRAFT, "c1", "r1", T0)
    assert created is not None
    claimed = await store.claim("r1", profile("t-b"), T0 + 1)
    # The claim's effects reach this server first, then the creation's.
    await hub.deliver(effects(claimed))
    await hub.deliver(effects(created))
    assert news(a) == []
    # A request back in the queue is announced again (read, not handed).
    declined = await store.decline("r1", "c1", T0 + 2)
    await hub.deliver(effects(declined))
    [frame] = news(a)
    assert frame["request"]["id"] == "r1" and frame["request"]["position"] == 1


async def test_without_a_place_handed_the_hub_reads_it_and_skips_a_request_gone() -> None:
    store: PoolStore = MemoryPool(Timeouts())
    hub, (a,) = hub_with(store, "t-a")
    req, _ = await store.create(DRAFT, "c1", "r1", T0)
    await store.cancel("r1", "c1", T0 + 1)
    await hub.deliver([Effect("new", request=req)])  # no position: read, and gone
    assert news(a) == []


async def test_waiting_clients_are_told_their_new_place_in_one_read() -> None:
    """When the queue moves, each local waiting client whose place changed
    gets request.state at its new place (PoolStore.moved: one step for all,
    the request's fields with it); one whose place did not change gets
    nothing."""
    store = MemoryPool(Timeouts())
    hub, _ = hub_with(store)
    clients = {cid: client_conn(cid) for cid in ("c1", "c2", "c3")}
    second = client_conn("c3", "conn-c3-b")  # c3 on two devices
    for conn in [*clients.values(), second]:
        hub.add(conn)
    changes = []
    for i, cid in enumerate(clients, start=1):
        _, change = await store.create(DRAFT, cid, f"r{i}", T0 + i)
        assert change is not None
        changes.append(change)
    for change in changes:
        await hub.deliver(effects(change))
    for conn in [*clients.values(), second]:
        [state] = sent(conn)
        assert state["type"] == "request.state"
    assert [c.last_position for c in clients.values()] == [1, 2, 3]
    reads = count_moves(store)
    await hub.deliver(effects(await store.claim("r1", profile("t1"), T0 + 10)))
    await hub.positions_settled()
    # One step for every client still waiting (c1 was told its claim before).
    assert reads == [{"r2": 2, "r3": 3}]
    got = {cid: states(c) for cid, c in clients.items()}
    assert got == {
        "c1": [("claimed", None)],
        "c2": [("waiting", 1)],
        "c3": [("waiting", 2)],
    }
    assert states(second) == [("waiting", 2)]
    # Every local client's request claimed: no place can move, nothing is read.
    for n, rid in enumerate(("r2", "r3"), start=2):
        await hub.deliver(effects(await store.claim(rid, profile(f"t{n}"), T0 + 10 + n)))
    await hub.positions_settled()
    assert [c.last_position for c in [*clients.values(), second]] == [None] * 4
    reads.clear()
    await store.create(DRAFT, "c9", "r9", T0 + 20)  # a client of another server
    await hub.deliver(effects(await store.cancel("r9", "c9", T0 + 21)))
    await hub.positions_settled()
    assert reads == []
    # One back in the queue is told its place with its own request.state.
    await hub.deliver(effects(await store.decline("r3", "c3", T0 + 22)))
    assert states(clients["c3"])[-1] == ("waiting", 1)


async def test_moves_within_the_window_are_read_once_off_the_delivery_path() -> None:
    """Departures close together cost one positions read between them, and
    delivering them does not wait for it (the bus goes on meanwhile)."""
    store = MemoryPool(Timeouts())
    hub, _ = hub_with(store)
    clients = {f"c{i}": client_conn(f"c{i}") for i in range(1, 6)}
    for i, (cid, conn) in enumerate(clients.items(), start=1):
        hub.add(conn)
        _, change = await store.create(DRAFT, cid, f"r{i}", T0 + i)
        assert change is not None
        await hub.deliver(effects(change))
    reads = count_moves(store)
    for n in (1, 2):
        await hub.deliver(effects(await store.claim(f"r{n}", profile(f"t{n}"), T0 + 10 + n)))
    assert reads == []  # delivered; the read waits for the window
    await hub.positions_settled()
    assert reads == [{"r3": 3, "r4": 4, "r5": 5}]
    assert [states(clients[c])[-1] for c in ("c3", "c4", "c5")] == [
        ("waiting", 1),
        ("waiting", 2),
        ("waiting", 3),
    ]


async def test_a_client_told_something_during_the_read_keeps_it() -> None:
    """A positions read under way when the client's request is claimed (its
    request.state arrives meanwhile) is stale for that client: no waiting
    frame after its claimed one."""
    store = MemoryPool(Timeouts())
    hub, _ = hub_with(store)
    a, b = client_conn("c1"), client_conn("c2")
    for i, conn in enumerate((a, b), start=1):
        hub.add(conn)
        _, change = await store.create(DRAFT, conn.user.id, f"r{i}", T0 + i)
        assert change is not None
        await hub.deliver(effects(change))
    real = store.moved
    claimed_meanwhile: list[Any] = []

    async def slow(last: dict[str, int | None]) -> dict[str, Any]:
        got = await real(last)  # read: r2 has moved to 1
        claimed = await store.claim("r2", profile("t2"), T0 + 20)
        await hub.deliver([e for e in effects(claimed) if e.kind == "client_state"])
        claimed_meanwhile.append(claimed)
        return got

    store.moved = slow  # type: ignore[method-assign]
    await hub.deliver(effects(await store.cancel("r1", "c1", T0 + 10)))
    await hub.positions_settled()
    assert claimed_meanwhile and states(b) == [("waiting", 2), ("claimed", None)]
