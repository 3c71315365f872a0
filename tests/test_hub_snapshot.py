"""A console replaces its list with each ``pool.snapshot``, and a snapshot is
read before it is sent: what is delivered to the console while the read is
under way (``request.new``, ``request.gone`` from another task's delivery)
is held back and sent after it, so the snapshot never undoes a newer frame."""

from __future__ import annotations

from typing import Any

from hubkit import DRAFT, T0, count_calls, hub_with, profile, sent

from pool.effects import effects
from pool.memory import MemoryPool
from pool.model import Draft, Request, Timeouts


def listed(frames: list[dict[str, Any]]) -> list[str]:
    """The request ids a console shows after these frames, as console.js
    keeps them (a snapshot replaces the list)."""
    ids: dict[str, None] = {}
    for f in frames:
        if f["type"] == "pool.snapshot":
            ids = {r["id"]: None for r in f["requests"]}
        elif f["type"] == "request.new":
            ids[f["request"]["id"]] = None
        elif f["type"] == "request.gone":
            ids.pop(f["request_id"], None)
    return sorted(ids)


async def test_what_is_sent_during_a_snapshots_read_is_not_undone_by_it() -> None:
    store = MemoryPool(Timeouts())
    hub, (a, b) = hub_with(store, "t-a", "t-b")
    await store.create(DRAFT, "c1", "r1", T0)
    real = store.waiting

    async def racing() -> list[Request]:
        read = await real()  # r1 alone
        # Meanwhile, delivered by the bus's task: r2 arrives, r1 is claimed.
        _, created = await store.create(DRAFT, "c2", "r2", T0 + 1)
        assert created is not None
        await hub.deliver(effects(created))
        await hub.deliver(effects(await store.claim("r1", profile("t-c"), T0 + 2)))
        return read

    store.waiting = racing  # type: ignore[method-assign]
    await hub.send_snapshot([a])
    frames = sent(a)
    new, gone, snap = "request.new", "request.gone", "pool.snapshot"
    assert [f["type"] for f in frames] == [snap, new, gone]
    assert listed(frames) == ["r2"]
    # A console not being snapshotted got each frame at once, and nothing is held after.
    assert [f["type"] for f in sent(b)] == ["request.new", "request.gone"]
    assert a.held_back is None and a.holding == 0
    store.waiting = real  # type: ignore[method-assign]
    _, third = await store.create(DRAFT, "c3", "r3", T0 + 3)
    assert third is not None
    await hub.deliver(effects(third))
    assert [f["type"] for f in sent(a)] == ["request.new"]


async def test_two_reads_at_once_each_go_out_where_their_read_began() -> None:
    store = MemoryPool(Timeouts())
    hub, (a,) = hub_with(store, "t-a")
    real = store.waiting
    step = 0

    async def racing() -> list[Request]:
        nonlocal step
        step += 1
        read = await real()
        if step == 1:
            # The first read is under way when a second one runs whole.
            store.waiting = real  # type: ignore[method-assign]
            _, created = await store.create(DRAFT, "c1", "r1", T0)
            assert created is not None
            await hub.deliver(effects(created))
            await hub.send_snapshot([a])
        return read

    store.waiting = racing  # type: ignore[method-assign]
    await hub.send_snapshot([a])
    frames = sent(a)
    # The outer snapshot was read before the new: it goes first, then the
    # new, then the inner snapshot (read after the new, so with r1); all at
    # once, when the outer read ends.
    new, snap = "request.new", "pool.snapshot"
    assert [f["type"] for f in frames] == [snap, new, snap]
    assert [len(f["requests"]) for f in frames if f["type"] == "pool.snapshot"] == [0, 1]
    assert listed(frames) == ["r1"] and a.held_back is None and a.holding == 0


async def test_consoles_of_several_therapists_get_their_own_snapshots_from_one_read() -> None:
    """A guard's resnapshot of several therapists: the queue is read once,
    and each console gets what its own therapist may take."""
    store = MemoryPool(Timeouts())
    hub, (a, b, c) = hub_with(store, "t-a", "t-b", "t-c")
    c.profile = profile("t-c", topics=("grief",))
    await store.create(DRAFT, "c1", "r1", T0)
    await store.create(Draft(region="GB", language="en", topics=("grief",)), "c2", "r2", T0 + 1)
    reads = count_calls(store, "waiting")
    await hub.resnapshot({"t-a", "t-c"})
    assert reads.n == 1
    assert listed(sent(a)) == ["r1"] and listed(sent(c)) == ["r2"]
    assert sent(b) == []  # not asked for
    assert all(x.held_back is None and x.holding == 0 for x in (a, b, c))
