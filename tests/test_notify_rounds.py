"""notify.rounds: who gets a text about the waiting requests, decided against a
real database (SQLite and PostgreSQL) and the in-process pool, queued once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest

from core.db import Database
from core.identity import Role
from notify.contacts import Contacts
from notify.outbox import Outbox
from notify.rounds import TextPolicy, TextRounds, dedupe_key
from notify.texts import QuietHours
from pool.memory import MemoryPool
from pool.model import Draft, Request, TherapistProfile, Timeouts

T0 = 1_780_000_000.0  # 2026-05-28 21:26 in London (BST)
DRAFT = Draft(region="GB", language="en", topics=("anxiety",))


def _profile(tid: str, **extra: object) -> TherapistProfile:
    fields: dict[str, object] = {
        "id": tid,
        "name": "Dr " + tid,
        "regions": ("GB",),
        "languages": ("en",),
        "topics": ("anxiety",),
    }
    fields.update(extra)
    return TherapistProfile(**fields)  # type: ignore[arg-type]


async def _known_none(therapist_id: str, client_ids: list[str]) -> set[str]:
    return set()


class World:
    def __init__(self, db: Database, policy: TextPolicy | None = None) -> None:
        self.db = db
        self.pool = MemoryPool(Timeouts())
        self.outbox = Outbox(db)
        self.contacts = Contacts(db)
        self.known: dict[str, set[str]] = {}
        self.rounds = self.make_rounds(policy or TextPolicy())

    def make_rounds(self, policy: TextPolicy) -> TextRounds:
        async def known(therapist_id: str, client_ids: list[str]) -> set[str]:
            return self.known.get(therapist_id, set()) & set(client_ids)

        return TextRounds(self.db, self.outbox, self.pool, known, policy)

    async def therapist(self, tid: str, *, phone: str = "+447700900123", **profile: object) -> None:
        await self.pool.put_profile(_profile(tid, **profile))
        await self.contacts.update(tid, {"phone": phone, "sms_opt_in": True}, T0 - 3600)

    async def request(self, client_id: str, at: float = T0) -> Request:
        request, _ = await self.pool.create(DRAFT, client_id, "req_" + client_id, at)
        return request

    async def texted(self, request_id: str) -> list[str]:
        return [m.recipient_id for m in await self.outbox.about(request_id)]


@pytest.fixture
def world(db: Database) -> World:
    return World(db)


async def test_a_waiting_request_texts_each_therapist_who_is_away_once(world: World) -> None:
    for tid in ("t1", "t2", "t3"):
        await world.therapist(tid)
    # t3 has its console open and available: it sees the request live.
    await world.pool.connect("t3", Role.THERAPIST, "c3", "s1", T0)
    await world.pool.set_available("t3", True)
    req = await world.request("c1")
    assert await world.rounds.run(T0) == 2
    assert sorted(await world.texted(req.id)) == ["t1", "t2"]
    # Every later round, on any server, finds them texted already.
    assert await world.rounds.run(T0 + 5) == 0
    assert await world.make_rounds(TextPolicy()).run(T0 + 5) == 0
    messages = await world.outbox.about(req.id)
    assert {m.dedupe_key for m in messages} == {dedupe_key(req.id, t) for t in ("t1", "t2")}
    assert {m.channel for m in messages} == {"sms"} and all(m.payload == {} for m in messages)


async def test_texts_wait_for_the_delay(db: Database) -> None:
    world = World(db, TextPolicy(delay_s=30))
    await world.therapist("t1")
    req = await world.request("c1")
    assert await world.rounds.run(T0 + 29) == 0
    assert await world.rounds.run(T0 + 30) == 1
    assert await world.texted(req.id) == ["t1"]


async def test_who_may_not_take_it_or_cannot_be_texted_gets_none(world: World) -> None:
    await world.therapist("t_region", regions=("US-CA",))
    await world.therapist("t_busy")
    await world.therapist("t_out")
    await world.contacts.update("t_out", {"sms_opt_in": False}, T0)
    await world.therapist("t_refused")
    await world.contacts.flag_phone("t_refused", T0)
    await world.therapist("t_quiet")
    # T0 is 21:26 in London: quiet for it.
    await world.contacts.update(
        "t_quiet", {"timezone": "Europe/London", "quiet_hours": QuietHours.parse("21:00-07:00")}, T0
    )
    await world.pool.put_profile(_profile("t_nophone"))
    await world.therapist("t_ok")
    # t_busy holds a claim on another client's request.
    other = await world.request("c0", T0 - 10)
    await world.pool.claim(other.id, _profile("t_busy"), T0 - 5)
    req = await world.request("c1")
    await world.rounds.run(T0)
    assert await world.texted(req.id) == ["t_ok"]
    # The claimed request is no longer waiting: nobody is texted about it.
    assert await world.texted(other.id) == []


async def test_the_cooldown_holds_across_requests_and_rounds(world: World) -> None:
    await world.therapist("t1")
    first = await world.request("c1")
    second = await world.request("c2", T0 + 1)
    await world.rounds.run(T0 + 1)
    # One round: the first request texts t1, the second must not within the cooldown.
    assert await world.texted(first.id) == ["t1"]
    assert await world.texted(second.id) == []
    assert await world.rounds.run(T0 + 599) == 0
    assert await world.rounds.run(T0 + 601) == 1
    assert await world.texted(second.id) == ["t1"]


async def test_the_cap_goes_to_those_longest_since_their_last_text(db: Database) -> None:
    world = World(db, TextPolicy(max_per_request=2, cooldown_s=60))
    for tid in ("t1", "t2", "t3", "t4"):
        await world.therapist(tid)
    # t1 and t2 were texted before (t2 longer ago); t3, t4 never.
    old = await world.request("c0", T0 - 1000)
    await world.make_rounds(TextPolicy(max_per_request=1)).run(T0 - 900)
    assert await world.texted(old.id) == ["t1"]  # all never texted: by id
    await world.pool.cancel(old.id, "c0", T0 - 800)
    req = await world.request("c1")
    assert await world.rounds.run(T0) == 2
    # t2, t3, t4 were never texted (t1 was, 900 s ago): never-texted first, by id.
    assert sorted(await world.texted(req.id)) == ["t2", "t3"]
    # Later rounds never pass the cap for this request.
    assert await world.rounds.run(T0 + 700) == 0


async def test_a_therapist_paused_for_new_clients_is_texted_only_for_one_it_knows(
    world: World,
) -> None:
    await world.therapist("t1", accepting_new_clients=False)
    new = await world.request("c_new")
    await world.rounds.run(T0)
    assert await world.texted(new.id) == []
    await world.pool.cancel(new.id, "c_new", T0 + 1)
    world.known["t1"] = {"c_known"}
    known = await world.request("c_known", T0 + 2)
    await world.rounds.run(T0 + 2)
    assert await world.texted(known.id) == ["t1"]


@pytest.mark.parametrize("servers", [2, 4])
async def test_rounds_racing_on_several_servers_keep_the_cap_and_the_cooldown(
    db: Database, servers: int
) -> None:
    world = World(db, TextPolicy(max_per_request=3))
    for i in range(8):
        await world.therapist(f"t{i}")
    reqs = [await world.request(f"c{i}", T0 + i) for i in range(3)]
    rounds = [world.make_rounds(TextPolicy(max_per_request=3)) for _ in range(servers)]
    await asyncio.gather(*(r.run(T0 + 10) for r in rounds))
    texted = [await world.texted(r.id) for r in reqs]
    # Cap: 3 a request. Cooldown: nobody twice across the requests.
    assert [len(t) for t in texted] == [3, 3, 2]
    everyone: Iterable[str] = [t for ts in texted for t in ts]
    assert sorted(everyone) == sorted(set(everyone)) and len(set(everyone)) == 8
