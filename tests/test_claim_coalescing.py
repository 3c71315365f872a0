"""Claims of one request on one process are answered together
(dispatch.service.Dispatcher._store_claim): the first goes to the pool, the
rest wait for its outcome and, once the request is no longer waiting, get the
pool's own answer (pool.rules.check_claim) without a step of their own.
Across processes (two dispatchers on one pool) exactly one claim still wins."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import PoolFactory
from cryptography.fernet import Fernet

from core.bus import LocalBus
from core.db import Database
from core.errors import DispatchError, NotEligible, NotFound, Taken
from core.identity import Role, User
from dispatch.metrics import Metrics
from dispatch.service import Dispatcher
from pool import rules
from pool.effects import Effect
from pool.memory import MemoryPool
from pool.model import Draft, State, TherapistProfile, Timeouts
from pool.store import Claimed, PoolStore
from signaling.crypto import Cipher
from signaling.ice import make_provider
from signaling.records import Records
from wallet.ledger import Ledger


class Counting:
    """The real pool, counting the claims that reach it."""

    def __init__(self, store: PoolStore) -> None:
        self.store = store
        self.claims = 0
        self.gets = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def claim(self, *args: Any) -> Any:
        self.claims += 1
        return await self.store.claim(*args)

    async def get(self, *args: Any) -> Any:
        self.gets += 1
        return await self.store.get(*args)


def suspends(store: Counting) -> bool:
    """Whether the pool's claim waits on a round trip (Redis). The in-process
    pool's never does: each claim there is over before the next one starts,
    so there is nothing to wait for and every claim is a step of its own."""
    return not isinstance(store.store, MemoryPool)


def profile(tid: str, regions: tuple[str, ...] = ("GB",)) -> TherapistProfile:
    return TherapistProfile(
        id=tid, name="Dr " + tid, regions=regions, languages=("en",), topics=("anxiety",)
    )


def dispatcher(store: Any, db: Database) -> Dispatcher:
    records = Records(db, Cipher([Fernet.generate_key().decode()]))
    ledger = Ledger(db, currency="GBP", therapist_share_pct=60, timezone="Europe/London")
    bus: LocalBus[Effect] = LocalBus()
    ice = make_provider([], None, None, 600)
    return Dispatcher(store, bus, Metrics(), ice, records, ledger, min_balance_minor=0)


async def claim_all(d: Dispatcher, profiles: list[TherapistProfile], rid: str) -> list[str]:
    async def one(p: TherapistProfile) -> str:
        try:
            await d.claim(User(p.id, Role.THERAPIST), rid, None, profile=p, busy=False)
        except DispatchError as exc:
            return exc.code
        return "won"

    return list(await asyncio.gather(*(one(p) for p in profiles)))


async def new_request(d: Dispatcher) -> str:
    req, _ = await d.create_request(
        User("c1", Role.CLIENT), Draft(region="GB", language="en", topics=("anxiety",)), None
    )
    return req.id


async def test_a_burst_of_claims_on_two_processes_has_one_winner_and_few_pool_steps(
    pool_store_factory: PoolFactory, db: Database
) -> None:
    a_store, b_store = Counting(await pool_store_factory()), Counting(await pool_store_factory())
    a, b = dispatcher(a_store, db), dispatcher(b_store, db)
    profiles = [profile(f"t{i:02}") for i in range(40)]
    for p in profiles:
        await a_store.put_profile(p)
    rid = await new_request(a)

    outcomes = await asyncio.gather(
        claim_all(a, profiles[:20], rid), claim_all(b, profiles[20:], rid)
    )
    every = outcomes[0] + outcomes[1]
    assert every.count("won") == 1
    assert sorted(set(every)) == ["taken", "won"]
    after = await a_store.get(rid)
    assert after is not None and after.claimed_by is not None
    assert every[profiles.index(next(p for p in profiles if p.id == after.claimed_by))] == "won"
    if suspends(a_store):
        assert (a_store.claims, b_store.claims) == (1, 1)  # one pool step per process
        # The loser's 'taken' brought the request along: nothing read again.
        assert a_store.gets + b_store.gets == 1  # the one above, after the race


async def test_waiting_claims_get_the_rule_s_own_answer(
    pool_store: PoolStore, db: Database
) -> None:
    store = Counting(pool_store)
    d = dispatcher(store, db)
    ok = [profile("t1"), profile("t2")]
    elsewhere = profile("t3", regions=("US",))  # may not take a GB request
    for p in [*ok, elsewhere]:
        await store.put_profile(p)
    rid = await new_request(d)
    out = await claim_all(d, [*ok, elsewhere], rid)
    assert out == ["won", "taken", "not_eligible"]
    assert store.claims == (1 if suspends(store) else 3)


async def test_a_first_claim_refused_for_itself_lets_the_next_try(
    pool_store: PoolStore, db: Database
) -> None:
    store = Counting(pool_store)
    d = dispatcher(store, db)
    first, second = profile("t1", regions=("US",)), profile("t2")
    for p in (first, second):
        await store.put_profile(p)
    rid = await new_request(d)
    # t1's refusal says nothing of t2's chance: t2 goes to the pool and wins.
    assert await claim_all(d, [first, second], rid) == ["not_eligible", "won"]
    assert store.claims == 2


async def test_claims_of_a_cancelled_request_are_all_not_found(
    pool_store: PoolStore, db: Database
) -> None:
    store = Counting(pool_store)
    d = dispatcher(store, db)
    profiles = [profile(f"t{i}") for i in range(5)]
    for p in profiles:
        await store.put_profile(p)
    rid = await new_request(d)
    await d.cancel(User("c1", Role.CLIENT), rid, None)
    assert await claim_all(d, profiles, rid) == ["not_found"] * 5
    assert store.claims == (1 if suspends(store) else 5)


async def test_a_busy_console_claims_for_itself(pool_store: PoolStore, db: Database) -> None:
    store = Counting(pool_store)
    d = dispatcher(store, db)
    profiles = [profile("t1"), profile("t2")]
    for p in profiles:
        await store.put_profile(p)
    rid = await new_request(d)

    async def busy_claim() -> str:
        try:
            await d.claim(User("t2", Role.THERAPIST), rid, None, profile=profiles[1], busy=True)
        except DispatchError as exc:
            return exc.code
        return "won"

    first = asyncio.ensure_future(claim_all(d, profiles[:1], rid))
    for _ in range(20):  # until t1's claim is under way (or done, in-process)
        if rid in d._claiming or first.done():
            break
        await asyncio.sleep(0)
    assert rid in d._claiming or not suspends(store)
    second = await busy_claim()  # t2 may hold something: it does not wait on t1's
    assert sorted([*(await first), second]) == ["taken", "won"]
    assert store.claims == 2


def test_the_rule_refuses_every_claim_of_a_request_no_longer_waiting() -> None:
    draft = Draft(region="GB", language="en", topics=("anxiety",))
    req = rules.new_request(draft, "r1", "c1", 0.0, Timeouts())
    assert rules.check_claim(req, profile("t2"), None, 1.0) is req
    claimed = rules.claim(req, profile("t1"), None, 1.0, Timeouts())
    with pytest.raises(Taken):
        rules.check_claim(claimed, profile("t2"), None, 2.0)
    with pytest.raises(NotEligible):
        rules.check_claim(claimed, profile("t3", regions=("US",)), None, 2.0)
    with pytest.raises(NotFound):
        rules.check_claim(req.replace(state=State.CANCELLED), profile("t2"), None, 2.0)
    with pytest.raises(NotFound):
        rules.check_claim(None, profile("t2"), None, 2.0)


async def test_a_claim_of_a_claimed_request_says_how_the_pool_found_it(
    pool_store: PoolStore,
) -> None:
    await pool_store.put_profile(profile("t1"))
    await pool_store.put_profile(profile("t2"))
    req, _ = await pool_store.create(
        Draft(region="GB", language="en", topics=("anxiety",)), "c1", "r1", 1.0
    )
    await pool_store.claim(req.id, profile("t1"), 2.0)
    with pytest.raises(Claimed) as caught:
        await pool_store.claim(req.id, profile("t2"), 3.0)
    assert caught.value.code == "taken"  # on the wire: taken, as before
    assert caught.value.request.claimed_by == "t1"
    assert caught.value.request.state is State.CLAIMED
    # Claiming one's own claim again is plain taken ("you already hold this claim").
    with pytest.raises(Taken) as own:
        await pool_store.claim(req.id, profile("t1"), 4.0)
    assert not isinstance(own.value, Claimed)
