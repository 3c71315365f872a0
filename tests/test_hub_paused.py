"""The hub keeps a new request away from the consoles of therapists pausing
new clients (PROTOCOL.md §7, :func:`pool.rules.paused_for`) with one read of
who knows the client, however many pausing consoles the request reaches."""

from __future__ import annotations

from hubkit import DRAFT, T0, hub_with, profile, sent

from pool.effects import Effect
from pool.memory import MemoryPool
from pool.model import Timeouts


async def test_one_read_for_every_pausing_console() -> None:
    asked: list[tuple[str, list[str]]] = []

    async def known_to(client_id: str, therapist_ids: list[str]) -> set[str]:
        asked.append((client_id, therapist_ids))
        return {"t-known"} & set(therapist_ids)

    store = MemoryPool(Timeouts())
    hub, consoles = hub_with(store, "t-open", "t-known", "t-x", "t-y", known_to=known_to)
    for conn in consoles[1:]:
        conn.profile = profile(conn.user.id, accepting_new_clients=False)
    req, _ = await store.create(DRAFT, "c1", "r1", T0)
    await hub.deliver([Effect("new", request=req)])
    assert asked == [("c1", ["t-known", "t-x", "t-y"])]
    got = {c.user.id: [f["type"] for f in sent(c)] for c in consoles}
    assert got == {"t-open": ["request.new"], "t-known": ["request.new"], "t-x": [], "t-y": []}


async def test_nobody_pausing_means_no_read() -> None:
    async def known_to(client_id: str, therapist_ids: list[str]) -> set[str]:
        raise AssertionError("asked although nobody pauses")

    store = MemoryPool(Timeouts())
    hub, (a, b) = hub_with(store, "t-a", "t-b", known_to=known_to)
    req, _ = await store.create(DRAFT, "c1", "r1", T0)
    await hub.deliver([Effect("new", request=req)])
    assert [f["type"] for f in sent(a)] == ["request.new"] == [f["type"] for f in sent(b)]
