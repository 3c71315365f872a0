"""The ``PoolStore`` contract (pool/store.py), run against every adapter.

Each test runs once per adapter through the ``pool_store`` fixture (``memory``
and ``redis``). Expected values are written out from PROTOCOL.md §4 and the
rules in pool/rules.py, never copied from one adapter's output, so both
adapters must give exactly these answers. Time is always passed in: no test
sleeps. Sessions (join, relaying frames, ending, ``peer_lost``) have their own
part of the contract: tests/test_pool_sessions.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from core.errors import (
    Busy,
    Conflict,
    DispatchError,
    Forbidden,
    NotEligible,
    NotFound,
    RequestExists,
    Taken,
    Unavailable,
)
from core.identity import Role
from pool import rules
from pool.effects import Change
from pool.model import Draft, Hold, Request, Session, SessionState, State, TherapistProfile
from pool.store import Claimed, PoolStore

PoolFactory = Callable[[], Awaitable[PoolStore]]

T0 = 1_700_000_000.0
CONFIRM = 60.0  # claim_confirm_s of the fixtures' Timeouts
MAX_WAIT = 600.0  # request_max_wait_s
GRACE = 15.0  # reconnect_grace_s
DAY = 24 * 3600.0

DRAFT = Draft(region="GB-ENG", language="en", topics=("anxiety",), notes="a note", age=None)


def therapist(tid: str, **changes: object) -> TherapistProfile:
    """A therapist qualified for :data:`DRAFT` unless ``changes`` say otherwise."""
    fields: dict[str, object] = {
        "name": f"Therapist {tid}",
        "bio": "bio",
        "photo_url": "https://example.test/p.jpg",
        "regions": ("GB-ENG", "US-CA"),
        "languages": ("en", "fr"),
        "topics": ("anxiety", "couples"),
        "works_with_minors": False,
    }
    fields.update(changes)
    return TherapistProfile(id=tid, **fields)  # type: ignore[arg-type]


T1, T2, T3 = therapist("t1"), therapist("t2"), therapist("t3")


def waiting_request(rid: str, client_id: str, created: float, draft: Draft = DRAFT) -> Request:
    """The request ``create`` must return: waiting, expiring after the max wait."""
    return Request(
        id=rid,
        client_id=client_id,
        region=draft.region,
        language=draft.language,
        topics=draft.topics,
        notes=draft.notes,
        age=draft.age,
        guardian_consent=draft.guardian_consent,
        created_at=created,
        state=State.WAITING,
        claimed_by=None,
        claimed_at=None,
        expires_at=created + MAX_WAIT,
        session_id=None,
        reason=None,
        updated_at=created,
        declined=frozenset(),
    )


def claimed(req: Request, tid: str, at: float) -> Request:
    return req.replace(
        state=State.CLAIMED,
        claimed_by=tid,
        claimed_at=at,
        expires_at=at + CONFIRM,
        reason=None,
        updated_at=at,
    )


def rewaited(req: Request, reason: str, at: float, declined: frozenset[str]) -> Request:
    """Back to waiting: the original max-wait deadline, no claimer."""
    return req.replace(
        state=State.WAITING,
        claimed_by=None,
        claimed_at=None,
        expires_at=req.created_at + MAX_WAIT,
        reason=reason,
        updated_at=at,
        declined=declined,
    )


async def fails(cls: type[DispatchError], aw: Awaitable[object]) -> DispatchError:
    """Await ``aw`` and check it raised exactly ``cls`` (not a sibling or parent)."""
    with pytest.raises(DispatchError) as info:
        await aw
    got = info.value
    assert type(got) is cls, f"expected {cls.__name__}, got {type(got).__name__}: {got}"
    return got


async def fire(store: PoolStore, now: float, limit: int = 100) -> list[Change]:
    """``fire_due`` where no session ends: every entry must be a request's Change
    (sessions ending past a grace are tests/test_pool_sessions.py's)."""
    fired = await store.fire_due(now, limit)
    changes = [c for c in fired if isinstance(c, Change)]
    assert changes == fired, fired
    return changes


async def make(store: PoolStore, rid: str, client_id: str, at: float) -> Request:
    req, change = await store.create(DRAFT, client_id, rid, at)
    assert change is not None
    return req


async def claim_of(store: PoolStore, rid: str, t: TherapistProfile, at: float) -> Request:
    return (await store.claim(rid, t, at)).after


async def matched(
    store: PoolStore, rid: str, client_id: str, t: TherapistProfile, sid: str, at: float
) -> Session:
    """Create, claim and accept at ``at``: a session opened at once."""
    await make(store, rid, client_id, at)
    await store.claim(rid, t, at)
    change = await store.accept(rid, client_id, sid, at)
    assert change.session is not None
    return change.session


# -- therapist profiles ------------------------------------------------------


async def test_profiles_are_stored_and_replaced(pool_store: PoolStore) -> None:
    assert await pool_store.get_profile("t1") is None
    await pool_store.put_profile(T1)
    assert await pool_store.get_profile("t1") == T1
    replaced = therapist("t1", name="New name", topics=(), works_with_minors=True)
    await pool_store.put_profile(replaced)
    assert await pool_store.get_profile("t1") == replaced
    assert await pool_store.get_profile("t2") is None


# -- create --------------------------------------------------------------------


async def test_create_returns_a_waiting_request(pool_store: PoolStore) -> None:
    req, change = await pool_store.create(DRAFT, "c1", "r1", T0)
    expected = waiting_request("r1", "c1", T0)
    assert req == expected
    assert change == Change(before=None, after=expected, position=1)
    assert await pool_store.get("r1") == expected
    assert await pool_store.position("r1") == 1
    assert await pool_store.active_request_of("c1") == expected
    assert await pool_store.waiting() == [expected]
    public = req.public(1)
    assert public["position"] == 1
    assert public["expires_at"] == "2023-11-14T22:23:20.000Z"  # T0 + 600 s
    assert "declined" not in public


async def test_create_keeps_every_field_of_the_draft(pool_store: PoolStore) -> None:
    minor = Draft(region="US-CA", language="fr", topics=(), notes="", age=16, guardian_consent=True)
    req, _ = await pool_store.create(minor, "c1", "r1", T0 + 0.25)
    assert req == waiting_request("r1", "c1", T0 + 0.25, minor)
    assert await pool_store.get("r1") == req
    multi = Draft(region="GB-ENG", language="en", topics=("anxiety", "grief"), notes="ü ✓", age=30)
    req2, _ = await pool_store.create(multi, "c2", "r2", T0 + 1)
    assert await pool_store.get("r2") == waiting_request("r2", "c2", T0 + 1, multi)
    assert req2.minor is False


async def test_get_and_active_of_unknown_are_none(pool_store: PoolStore) -> None:
    assert await pool_store.get("nope") is None
    assert await pool_store.position("nope") is None
    assert await pool_store.active_request_of("c1") is None
    assert await pool_store.waiting() == []
    assert await pool_store.positions([]) == {}


async def test_second_active_request_of_a_client_is_refused(pool_store: PoolStore) -> None:
    first = await make(pool_store, "r1", "c1", T0)
    await fails(RequestExists, pool_store.create(DRAFT, "c1", "r2", T0 + 1))
    assert await pool_store.get("r2") is None
    assert await pool_store.waiting() == [first]
    # Still refused while the first one is claimed.
    await pool_store.claim("r1", T1, T0 + 2)
    await fails(RequestExists, pool_store.create(DRAFT, "c1", "r2", T0 + 3))
    assert await pool_store.get("r2") is None
    # Another client is not affected.
    await make(pool_store, "r3", "c2", T0 + 4)


async def test_idempotency_key_replays_the_first_request(pool_store: PoolStore) -> None:
    req, change = await pool_store.create(DRAFT, "c1", "r1", T0, idempotency_key="k1")
    assert change is not None
    again, change2 = await pool_store.create(DRAFT, "c1", "r2", T0 + 5, idempotency_key="k1")
    assert again == req
    assert change2 is None
    assert await pool_store.get("r2") is None
    assert await pool_store.waiting() == [req]


async def test_idempotency_key_belongs_to_one_client(pool_store: PoolStore) -> None:
    r1, _ = await pool_store.create(DRAFT, "c1", "r1", T0, idempotency_key="k")
    r2, change = await pool_store.create(DRAFT, "c2", "r2", T0 + 1, idempotency_key="k")
    assert change is not None
    assert r2 == waiting_request("r2", "c2", T0 + 1)
    assert [r.id for r in await pool_store.waiting()] == ["r1", "r2"]
    assert r1.id == "r1"


async def test_idempotency_key_is_forgotten_after_24_hours(pool_store: PoolStore) -> None:
    await pool_store.create(DRAFT, "c1", "r1", T0, idempotency_key="k")
    await pool_store.cancel("r1", "c1", T0 + 10)
    # Within 24 h the key still answers with the first request, even though
    # the client could open a new one now.
    again, change = await pool_store.create(DRAFT, "c1", "r2", T0 + DAY - 1, idempotency_key="k")
    assert change is None
    assert again.id == "r1"
    assert await pool_store.get("r2") is None
    # Past 24 h the same key creates a new request.
    fresh, change = await pool_store.create(DRAFT, "c1", "r2", T0 + DAY + 1, idempotency_key="k")
    assert change is not None
    assert fresh == waiting_request("r2", "c1", T0 + DAY + 1)


async def test_a_key_does_not_bypass_the_one_active_request_rule(pool_store: PoolStore) -> None:
    await pool_store.create(DRAFT, "c1", "r1", T0, idempotency_key="k1")
    await fails(RequestExists, pool_store.create(DRAFT, "c1", "r2", T0 + 1, idempotency_key="k2"))
    assert await pool_store.get("r2") is None


# -- positions and the waiting list --------------------------------------------


async def test_waiting_is_oldest_first_with_ties_by_id(pool_store: PoolStore) -> None:
    # Created out of order (servers' clocks differ); ra and rb tie on time.
    await make(pool_store, "r1", "c1", T0 + 2)
    await make(pool_store, "r2", "c2", T0)
    await make(pool_store, "rb", "c3", T0 + 1)
    await make(pool_store, "ra", "c4", T0 + 1)
    assert [r.id for r in await pool_store.waiting()] == ["r2", "ra", "rb", "r1"]
    assert await pool_store.positions(["r1", "ra", "rb", "r2", "nope"]) == {
        "r1": 4,
        "ra": 2,
        "rb": 3,
        "r2": 1,
        "nope": None,
    }
    # A claimed request leaves the queue; those behind it move up.
    await pool_store.claim("ra", T1, T0 + 3)
    assert await pool_store.position("ra") is None
    assert await pool_store.positions(["r2", "rb", "r1"]) == {"r2": 1, "rb": 2, "r1": 3}
    assert [r.id for r in await pool_store.waiting()] == ["r2", "rb", "r1"]
    # Back to waiting, it takes its old place (it keeps its creation time).
    await pool_store.decline("ra", "c4", T0 + 4)
    assert await pool_store.position("ra") == 2
    assert [r.id for r in await pool_store.waiting()] == ["r2", "ra", "rb", "r1"]
    # Cancelled: gone from the queue.
    await pool_store.cancel("r2", "c2", T0 + 5)
    assert await pool_store.positions(["r2", "ra", "rb", "r1"]) == {
        "r2": None,
        "ra": 1,
        "rb": 2,
        "r1": 3,
    }


async def test_moved_names_the_requests_at_a_new_place_with_their_fields(
    pool_store: PoolStore,
) -> None:
    await make(pool_store, "r1", "c1", T0)
    r2 = await make(pool_store, "r2", "c2", T0 + 1)
    r3 = await make(pool_store, "r3", "c3", T0 + 2)
    told: dict[str, int | None] = {"r1": 1, "r2": 2, "r3": 3, "nope": 4}
    assert await pool_store.moved(told) == {}  # nobody moved
    await pool_store.claim("r1", T1, T0 + 3)
    # r1 left (not waiting: not named), r2 and r3 moved up; a place never
    # told (None) is always named.
    assert await pool_store.moved(told) == {"r2": (1, r2), "r3": (2, r3)}
    assert await pool_store.moved({"r2": 1, "r3": None}) == {"r3": (2, r3)}
    assert await pool_store.moved({}) == {}


async def test_a_creation_carries_the_place_it_took(pool_store: PoolStore) -> None:
    """The creating step reads the new request's place (the hub announces it
    without reading it again); out of order by time, it is its real place."""
    _, first = await pool_store.create(DRAFT, "c1", "r1", T0 + 2)
    _, second = await pool_store.create(DRAFT, "c2", "r2", T0)
    _, third = await pool_store.create(DRAFT, "c3", "r3", T0 + 1)
    assert first is not None and second is not None and third is not None
    assert (first.position, second.position, third.position) == (1, 1, 2)
    assert await pool_store.positions(["r1", "r2", "r3"]) == {"r1": 3, "r2": 1, "r3": 2}
    # A replay of an idempotency key is no creation: no change, no place.
    await pool_store.create(DRAFT, "c4", "r4", T0 + 3, "key-1")
    again, change = await pool_store.create(DRAFT, "c4", "r5", T0 + 4, "key-1")
    assert again.id == "r4" and change is None


# -- claim -----------------------------------------------------------------------


async def test_claim_succeeds(pool_store: PoolStore) -> None:
    before = await make(pool_store, "r1", "c1", T0)
    change = await pool_store.claim("r1", T1, T0 + 5)
    after = claimed(before, "t1", T0 + 5)
    assert change == Change(before=before, after=after, therapist=T1)
    assert change.session is None and change.lost_therapist is None
    assert await pool_store.get("r1") == after
    assert await pool_store.hold_of("t1") == Hold("claim", "r1")
    assert await pool_store.hold_of("t2") is None
    assert await pool_store.position("r1") is None
    assert await pool_store.waiting() == []
    assert await pool_store.active_request_of("c1") == after


async def test_claim_not_found(pool_store: PoolStore) -> None:
    await fails(NotFound, pool_store.claim("nope", T1, T0))
    # cancelled
    await make(pool_store, "r1", "c1", T0)
    await pool_store.cancel("r1", "c1", T0 + 1)
    await fails(NotFound, pool_store.claim("r1", T1, T0 + 2))
    # expired
    await make(pool_store, "r2", "c2", T0 + 10)
    [expired] = await fire(pool_store, T0 + 10 + MAX_WAIT)
    assert expired.after.id == "r2"
    await fails(NotFound, pool_store.claim("r2", T1, T0 + 11 + MAX_WAIT))
    assert await pool_store.hold_of("t1") is None


async def test_claim_busy_while_holding_a_claim(pool_store: PoolStore) -> None:
    await make(pool_store, "r1", "c1", T0)
    r2 = await make(pool_store, "r2", "c2", T0 + 1)
    await pool_store.claim("r1", T1, T0 + 2)
    await fails(Busy, pool_store.claim("r2", T1, T0 + 3))
    assert await pool_store.get("r2") == r2
    assert await pool_store.hold_of("t1") == Hold("claim", "r1")


async def test_claim_busy_while_holding_a_session(pool_store: PoolStore) -> None:
    await matched(pool_store, "r1", "c1", T1, "s1", T0)
    r2 = await make(pool_store, "r2", "c2", T0 + 1)
    await fails(Busy, pool_store.claim("r2", T1, T0 + 2))
    assert await pool_store.get("r2") == r2
    assert await pool_store.hold_of("t1") == Hold("session", "s1")


@pytest.mark.parametrize(
    ("draft", "profile", "eligible"),
    [
        (DRAFT, therapist("tx", regions=("US-CA",)), False),
        (DRAFT, therapist("tx", languages=("fr",)), False),
        (DRAFT, therapist("tx", topics=("couples",)), False),
        (DRAFT, therapist("tx", topics=()), False),
        (Draft(region="GB-ENG", language="en", topics=()), therapist("tx", topics=()), True),
        (Draft(region="GB-ENG", language="en", topics=("grief", "couples")), T1, True),
        (Draft("GB-ENG", "en", (), "", age=15, guardian_consent=True), T1, False),
        (
            Draft("GB-ENG", "en", (), "", age=15, guardian_consent=True),
            therapist("tx", works_with_minors=True),
            True,
        ),
        (Draft("GB-ENG", "en", (), "", age=18), T1, True),
    ],
    ids=[
        "wrong-region",
        "wrong-language",
        "no-shared-topic",
        "therapist-without-topics",
        "no-topics-asked",
        "one-shared-topic",
        "minor-needs-minors",
        "minor-ok",
        "adult-at-18",
    ],
)
async def test_claim_eligibility(
    pool_store: PoolStore, draft: Draft, profile: TherapistProfile, eligible: bool
) -> None:
    req, _ = await pool_store.create(draft, "c1", "r1", T0)
    if eligible:
        change = await pool_store.claim("r1", profile, T0 + 1)
        assert change.after.claimed_by == profile.id
    else:
        await fails(NotEligible, pool_store.claim("r1", profile, T0 + 1))
        assert await pool_store.get("r1") == req
        assert await pool_store.hold_of(profile.id) is None


async def test_claim_weighs_qualification_as_the_rule_does(pool_store: PoolStore) -> None:
    """Every combination of a small world: the adapter's claim refuses
    exactly where :func:`pool.rules.may_take` says no (the Redis script
    weighs it in Lua, in the claim's own step)."""
    drafts = [
        Draft(region, language, topics, "", age=age, guardian_consent=age is not None and age < 18)
        for region in ("GB-ENG", "FR")
        for language in ("en", "de")
        for topics in ((), ("grief",), ("grief", "couples"), ("sleep",))
        for age in (None, 17, 18)
    ]
    profiles = [
        therapist("tq", regions=("GB-ENG",), languages=("en",), topics=("couples",)),
        therapist("tq", regions=("FR", "GB-ENG"), languages=("de", "en"), topics=()),
        therapist("tq", topics=("grief", "sleep"), works_with_minors=True),
    ]
    n = 0
    for draft in drafts:
        for profile in profiles:
            n += 1
            rid, cid = f"r{n}", f"c{n}"
            await pool_store.create(draft, cid, rid, T0)
            if rules.may_take(profile, draft):
                await pool_store.claim(rid, profile, T0 + 1)
                await pool_store.release(rid, profile.id, T0 + 2)
            else:
                await fails(NotEligible, pool_store.claim(rid, profile, T0 + 1))
                # Refused by the step itself: nothing was written.
                assert await pool_store.hold_of(profile.id) is None
                assert await pool_store.position(rid) == 1
            await pool_store.cancel(rid, cid, T0 + 3)
    assert n == 144


async def test_claim_taken(pool_store: PoolStore) -> None:
    await make(pool_store, "r1", "c1", T0)
    after = await claim_of(pool_store, "r1", T1, T0 + 1)
    # "taken", with the request as the pool found it (pool.store.Claimed).
    lost = await fails(Claimed, pool_store.claim("r1", T2, T0 + 2))
    assert lost.code == "taken" and isinstance(lost, Claimed) and lost.request == after
    # Claiming one's own claim again is "taken", not "busy".
    await fails(Taken, pool_store.claim("r1", T1, T0 + 3))
    assert await pool_store.get("r1") == after
    assert await pool_store.hold_of("t2") is None
    # A matched request is taken too.
    await pool_store.accept("r1", "c1", "s1", T0 + 4)
    await fails(Claimed, pool_store.claim("r1", T2, T0 + 5))
    assert await pool_store.hold_of("t2") is None


async def test_claim_checks_in_order(pool_store: PoolStore) -> None:
    """not_found, then busy, then not_eligible, then taken (rules.claim)."""
    await make(pool_store, "r1", "c1", T0)
    await make(pool_store, "r2", "c2", T0 + 1)
    await pool_store.claim("r1", T1, T0 + 2)
    # t1 is busy: a missing request is still not_found ...
    await fails(NotFound, pool_store.claim("nope", T1, T0 + 3))
    # ... and a request it may not take is busy, not not_eligible.
    await fails(Busy, pool_store.claim("r2", therapist("t1", regions=("US-CA",)), T0 + 3))
    # Declined for r1, then r1 claimed by t2: t1 gets not_eligible, not taken.
    await pool_store.decline("r1", "c1", T0 + 4)
    await pool_store.claim("r1", T2, T0 + 5)
    await fails(NotEligible, pool_store.claim("r1", T1, T0 + 6))
    await fails(Claimed, pool_store.claim("r1", T3, T0 + 6))


# -- release ---------------------------------------------------------------------


async def test_release(pool_store: PoolStore) -> None:
    await make(pool_store, "r1", "c1", T0)
    r2 = await make(pool_store, "r2", "c2", T0 + 1)
    held = await claim_of(pool_store, "r1", T1, T0 + 2)
    await fails(Forbidden, pool_store.release("r1", "t2", T0 + 3))
    await fails(Forbidden, pool_store.release("r2", "t1", T0 + 3))  # not claimed
    await fails(NotFound, pool_store.release("nope", "t1", T0 + 3))
    assert await pool_store.get("r1") == held
    assert await pool_store.get("r2") == r2

    change = await pool_store.release("r1", "t1", T0 + 10)
    after = rewaited(held, "released", T0 + 10, frozenset())
    assert change == Change(before=held, after=after)
    assert await pool_store.get("r1") == after
    assert await pool_store.hold_of("t1") is None
    assert await pool_store.position("r1") == 1
    # Releasing is not declining: the therapist may claim it again.
    assert (await pool_store.claim("r1", T1, T0 + 11)).after.claimed_by == "t1"


# -- decline ---------------------------------------------------------------------


async def test_decline(pool_store: PoolStore) -> None:
    r1 = await make(pool_store, "r1", "c1", T0)
    await fails(Taken, pool_store.decline("r1", "c1", T0 + 1))  # nothing offered yet
    held = await claim_of(pool_store, "r1", T1, T0 + 2)
    await fails(NotFound, pool_store.decline("r1", "c2", T0 + 3))  # not the owner
    await fails(NotFound, pool_store.decline("nope", "c1", T0 + 3))
    assert await pool_store.get("r1") == held

    change = await pool_store.decline("r1", "c1", T0 + 4)
    after = rewaited(held, "declined", T0 + 4, frozenset({"t1"}))
    assert change == Change(before=held, after=after)
    assert after.expires_at == r1.expires_at
    assert await pool_store.get("r1") == after
    assert await pool_store.hold_of("t1") is None
    assert await pool_store.position("r1") == 1
    assert await pool_store.active_request_of("c1") == after

    # The declined therapist never gets it again; another one may.
    await fails(NotEligible, pool_store.claim("r1", T1, T0 + 5))
    again = await claim_of(pool_store, "r1", T2, T0 + 6)
    assert again.declined == frozenset({"t1"})
    change = await pool_store.decline("r1", "c1", T0 + 7)
    assert change.after.declined == frozenset({"t1", "t2"})
    assert (await pool_store.get("r1")) == change.after
    await fails(NotEligible, pool_store.claim("r1", T2, T0 + 8))
    assert (await pool_store.claim("r1", T3, T0 + 8)).after.claimed_by == "t3"


# -- accept ----------------------------------------------------------------------


async def test_accept_opens_a_session(pool_store: PoolStore) -> None:
    await make(pool_store, "r1", "c1", T0)
    held = await claim_of(pool_store, "r1", T1, T0 + 5)
    change = await pool_store.accept("r1", "c1", "s1", T0 + 20)
    after = held.replace(
        state=State.MATCHED,
        session_id="s1",
        notes="",  # the client's notes were for the claim: gone once it ends
        expires_at=None,
        reason="matched",
        updated_at=T0 + 20,
    )
    session = Session(
        id="s1",
        request_id="r1",
        client_id="c1",
        therapist_id="t1",
        state=SessionState.READY,
        created_at=T0 + 20,
        started_at=None,
        ended_at=None,
        end_reason=None,
    )
    assert change == Change(before=held, after=after, session=session)
    assert await pool_store.get("r1") == after
    assert await pool_store.get_session("s1") == session
    assert await pool_store.hold_of("t1") == Hold("session", "s1")
    assert await pool_store.open_session_of("c1") == session
    assert await pool_store.open_session_of("t1") == session
    assert await pool_store.open_session_of("t2") is None
    assert await pool_store.get_session("nope") is None
    assert await pool_store.active_request_of("c1") is None
    assert await pool_store.waiting() == []
    # In its open session the client may not ask again (the pool's own rule,
    # in the same atomic step); the therapist is busy with the session.
    await fails(RequestExists, make(pool_store, "r2", "c1", T0 + 30))
    assert await pool_store.active_request_of("c1") is None
    await make(pool_store, "r2", "c2", T0 + 30)
    await fails(Busy, pool_store.claim("r2", T1, T0 + 31))
    # A matched request no longer times out.
    assert [c.after.id for c in await fire(pool_store, T0 + 10 * DAY)] == ["r2"]
    assert (await pool_store.get("r1")) == after


async def test_accept_hands_back_the_therapists_profile(pool_store: PoolStore) -> None:
    """Read in the matching step (the call log names the therapist): no read
    of its own; ``None`` for a therapist with no stored profile."""
    await pool_store.put_profile(T1)
    await make(pool_store, "r1", "c1", T0)
    await claim_of(pool_store, "r1", T1, T0 + 5)
    assert (await pool_store.accept("r1", "c1", "s1", T0 + 20)).therapist == T1
    await make(pool_store, "r2", "c2", T0)
    await claim_of(pool_store, "r2", T2, T0 + 5)
    assert (await pool_store.accept("r2", "c2", "s2", T0 + 20)).therapist is None


async def test_accept_errors(pool_store: PoolStore) -> None:
    r1 = await make(pool_store, "r1", "c1", T0)
    await fails(Taken, pool_store.accept("r1", "c1", "s1", T0 + 1))  # still waiting
    await fails(NotFound, pool_store.accept("nope", "c1", "s1", T0 + 1))
    held = await claim_of(pool_store, "r1", T1, T0 + 2)
    await fails(NotFound, pool_store.accept("r1", "c2", "s1", T0 + 3))  # not the owner
    assert await pool_store.get("r1") == held
    assert await pool_store.get_session("s1") is None
    assert await pool_store.open_session_of("c1") is None
    await pool_store.accept("r1", "c1", "s1", T0 + 4)
    await fails(Taken, pool_store.accept("r1", "c1", "s2", T0 + 5))  # twice
    assert await pool_store.get_session("s2") is None
    assert r1.state is State.WAITING


# -- cancel ----------------------------------------------------------------------


async def test_cancel_while_waiting(pool_store: PoolStore) -> None:
    r1 = await make(pool_store, "r1", "c1", T0)
    await make(pool_store, "r2", "c2", T0 + 1)
    await fails(NotFound, pool_store.cancel("r1", "c2", T0 + 2))  # not the owner
    await fails(NotFound, pool_store.cancel("nope", "c1", T0 + 2))
    change = await pool_store.cancel("r1", "c1", T0 + 3)
    after = r1.replace(
        state=State.CANCELLED,
        notes="",
        expires_at=None,
        reason="cancelled",
        updated_at=T0 + 3,
    )
    assert change == Change(before=r1, after=after)
    assert await pool_store.get("r1") == after
    assert await pool_store.position("r1") is None
    assert await pool_store.position("r2") == 1
    assert await pool_store.active_request_of("c1") is None
    await fails(Taken, pool_store.cancel("r1", "c1", T0 + 4))
    # Its timer is gone with it; the client may ask again.
    assert [c.after.id for c in await fire(pool_store, T0 + 1 + MAX_WAIT)] == ["r2"]
    await make(pool_store, "r3", "c1", T0 + 700)


async def test_cancel_while_claimed_frees_the_therapist(pool_store: PoolStore) -> None:
    await make(pool_store, "r1", "c1", T0)
    await make(pool_store, "r2", "c2", T0 + 1)
    held = await claim_of(pool_store, "r1", T1, T0 + 2)
    change = await pool_store.cancel("r1", "c1", T0 + 3)
    after = held.replace(
        state=State.CANCELLED,
        notes="",
        expires_at=None,
        reason="cancelled",
        updated_at=T0 + 3,
    )
    assert change == Change(before=held, after=after)
    assert await pool_store.hold_of("t1") is None
    assert await pool_store.active_request_of("c1") is None
    assert (await pool_store.claim("r2", T1, T0 + 4)).after.claimed_by == "t1"
    await fails(Taken, pool_store.cancel("r1", "c1", T0 + 5))


async def test_cancel_after_match_is_refused(pool_store: PoolStore) -> None:
    await matched(pool_store, "r1", "c1", T1, "s1", T0)
    await fails(Taken, pool_store.cancel("r1", "c1", T0 + 1))
    assert (await pool_store.get("r1")) is not None
    assert await pool_store.hold_of("t1") == Hold("session", "s1")


# -- deadlines -------------------------------------------------------------------


async def test_waiting_request_expires_after_the_max_wait(pool_store: PoolStore) -> None:
    r1 = await make(pool_store, "r1", "c1", T0)
    assert await fire(pool_store, T0 + MAX_WAIT - 1) == []
    assert await pool_store.get("r1") == r1
    changes = await fire(pool_store, T0 + MAX_WAIT)
    after = r1.replace(
        state=State.EXPIRED,
        notes="",
        expires_at=None,
        reason="no_therapist",
        updated_at=T0 + MAX_WAIT,
    )
    assert changes == [Change(before=r1, after=after)]
    assert await pool_store.get("r1") == after
    assert await pool_store.position("r1") is None
    assert await pool_store.waiting() == []
    assert await pool_store.active_request_of("c1") is None
    # Fired once only.
    assert await fire(pool_store, T0 + MAX_WAIT + 100) == []
    await make(pool_store, "r2", "c1", T0 + MAX_WAIT + 1)


async def test_claimed_request_expires_after_the_confirm_timeout(pool_store: PoolStore) -> None:
    await make(pool_store, "r1", "c1", T0)
    held = await claim_of(pool_store, "r1", T1, T0 + 10)
    assert await fire(pool_store, T0 + 10 + CONFIRM - 1) == []
    assert await pool_store.get("r1") == held
    changes = await fire(pool_store, T0 + 10 + CONFIRM)
    after = held.replace(
        state=State.EXPIRED,
        notes="",
        expires_at=None,
        reason="client_no_response",
        updated_at=T0 + 10 + CONFIRM,
    )
    assert changes == [Change(before=held, after=after)]
    assert await pool_store.get("r1") == after
    assert await pool_store.hold_of("t1") is None
    assert await pool_store.active_request_of("c1") is None
    assert await fire(pool_store, T0 + 10 * DAY) == []


async def test_back_to_waiting_keeps_the_original_deadline(pool_store: PoolStore) -> None:
    await make(pool_store, "r1", "c1", T0)
    await pool_store.claim("r1", T1, T0 + 590)
    released = (await pool_store.release("r1", "t1", T0 + 595)).after
    assert released.expires_at == T0 + MAX_WAIT
    [change] = await fire(pool_store, T0 + MAX_WAIT)
    assert change.before == released
    assert change.after.state is State.EXPIRED
    assert change.after.reason == "no_therapist"


async def test_fire_due_respects_the_limit(pool_store: PoolStore) -> None:
    for i in range(5):
        await make(pool_store, f"r{i}", f"c{i}", T0 + i)
    now = T0 + 4 + MAX_WAIT
    first = await fire(pool_store, now, limit=2)
    assert len(first) == 2
    rest = await fire(pool_store, now, limit=100)
    ids = [c.after.id for c in first + rest]
    assert sorted(ids) == [f"r{i}" for i in range(5)]
    assert all(c.after.reason == "no_therapist" for c in first + rest)
    assert await fire(pool_store, now) == []


# -- reconnect grace -------------------------------------------------------------


async def _claimed_by_connected_t1(store: PoolStore) -> Request:
    await store.heartbeat("srvA", T0)
    await store.connect("t1", Role.THERAPIST, "conn-a", "srvA", T0)
    await make(store, "r1", "c1", T0)
    return await claim_of(store, "r1", T1, T0 + 1)


async def test_claim_returns_to_waiting_when_the_therapist_stays_away(
    pool_store: PoolStore,
) -> None:
    held = await _claimed_by_connected_t1(pool_store)
    await pool_store.disconnect("t1", Role.THERAPIST, "conn-a", "srvA", T0 + 2)
    assert await fire(pool_store, T0 + 2 + GRACE - 1) == []
    assert await pool_store.get("r1") == held
    changes = await fire(pool_store, T0 + 2 + GRACE + 1)
    after = rewaited(held, "therapist_lost", T0 + 2 + GRACE + 1, frozenset())
    assert changes == [Change(before=held, after=after, lost_therapist="t1")]
    assert await pool_store.get("r1") == after
    assert await pool_store.hold_of("t1") is None
    assert await pool_store.position("r1") == 1
    assert await fire(pool_store, T0 + 2 + GRACE + 5) == []
    # Not a decline: the therapist may take it again once back.
    await pool_store.connect("t1", Role.THERAPIST, "conn-b", "srvA", T0 + 40)
    assert (await pool_store.claim("r1", T1, T0 + 41)).after.claimed_by == "t1"


async def test_reconnect_within_the_grace_keeps_the_claim(pool_store: PoolStore) -> None:
    held = await _claimed_by_connected_t1(pool_store)
    await pool_store.disconnect("t1", Role.THERAPIST, "conn-a", "srvA", T0 + 2)
    await pool_store.connect("t1", Role.THERAPIST, "conn-b", "srvB", T0 + 10)
    assert await fire(pool_store, T0 + 30) == []
    assert await pool_store.get("r1") == held
    assert await pool_store.hold_of("t1") == Hold("claim", "r1")
    # The claim's own deadline still holds.
    [change] = await fire(pool_store, T0 + 1 + CONFIRM)
    assert change.after.reason == "client_no_response"
    assert change.lost_therapist is None


async def test_losing_one_of_two_connections_arms_nothing(pool_store: PoolStore) -> None:
    held = await _claimed_by_connected_t1(pool_store)
    await pool_store.connect("t1", Role.THERAPIST, "conn-b", "srvA", T0 + 1)
    await pool_store.disconnect("t1", Role.THERAPIST, "conn-a", "srvA", T0 + 2)
    assert await fire(pool_store, T0 + 30) == []
    assert await pool_store.get("r1") == held
    # Losing the second one too arms the grace from then.
    await pool_store.disconnect("t1", Role.THERAPIST, "conn-b", "srvA", T0 + 31)
    assert await fire(pool_store, T0 + 31 + GRACE - 1) == []
    [change] = await fire(pool_store, T0 + 31 + GRACE + 1)
    assert change.lost_therapist == "t1"
    assert change.after.state is State.WAITING


async def test_a_disconnected_client_keeps_its_request(pool_store: PoolStore) -> None:
    await pool_store.connect("c1", Role.CLIENT, "conn-c", "srvA", T0)
    r1 = await make(pool_store, "r1", "c1", T0)
    await pool_store.disconnect("c1", Role.CLIENT, "conn-c", "srvA", T0 + 1)
    assert await fire(pool_store, T0 + 1 + GRACE + 5) == []
    assert await pool_store.get("r1") == r1
    held = await claim_of(pool_store, "r1", T1, T0 + 30)
    assert await fire(pool_store, T0 + 31 + GRACE + 5) == []
    assert await pool_store.get("r1") == held


async def test_reaping_a_silent_server_arms_the_grace(pool_store: PoolStore) -> None:
    held = await _claimed_by_connected_t1(pool_store)  # t1 on srvA
    await pool_store.heartbeat("srvB", T0)
    await pool_store.connect("t2", Role.THERAPIST, "conn-t2", "srvB", T0)
    assert await pool_store.set_available("t2", True) is True
    await pool_store.heartbeat("srvB", T0 + 20)
    # srvA last beat at T0, srvB at T0 + 20.
    assert await pool_store.reap_servers(T0 + 25, dead_after_s=10) == ["srvA"]
    assert await pool_store.reap_servers(T0 + 26, dead_after_s=10) == []
    assert await fire(pool_store, T0 + 25 + GRACE - 1) == []
    changes = await fire(pool_store, T0 + 25 + GRACE + 1)
    after = rewaited(held, "therapist_lost", T0 + 25 + GRACE + 1, frozenset())
    assert changes == [Change(before=held, after=after, lost_therapist="t1")]
    # srvB's therapist is untouched.
    assert await pool_store.is_available("t2") is True
    stats = await pool_store.stats(T0 + 45)
    assert stats.therapists_online == 1


async def test_heartbeats_keep_a_server_alive(pool_store: PoolStore) -> None:
    held = await _claimed_by_connected_t1(pool_store)
    for at in (T0 + 8, T0 + 16, T0 + 24):
        await pool_store.heartbeat("srvA", at)
        assert await pool_store.reap_servers(at + 2, dead_after_s=10) == []
    assert await fire(pool_store, T0 + 50) == []
    assert await pool_store.get("r1") == held


async def test_reaping_spares_a_user_connected_elsewhere(pool_store: PoolStore) -> None:
    held = await _claimed_by_connected_t1(pool_store)  # conn-a on srvA
    await pool_store.heartbeat("srvB", T0 + 20)
    await pool_store.connect("t1", Role.THERAPIST, "conn-b", "srvB", T0 + 1)
    assert await pool_store.reap_servers(T0 + 25, dead_after_s=10) == ["srvA"]
    assert await fire(pool_store, T0 + 50) == []
    assert await pool_store.get("r1") == held
    assert (await pool_store.stats(T0 + 50)).therapists_online == 1


# -- availability ----------------------------------------------------------------


async def test_availability_sticks_only_while_connected(pool_store: PoolStore) -> None:
    assert await pool_store.set_available("t1", True) is False  # not connected
    assert await pool_store.is_available("t1") is False
    await pool_store.connect("t1", Role.THERAPIST, "a", "srvA", T0)
    assert await pool_store.is_available("t1") is False  # off until asked
    assert await pool_store.set_available("t1", True) is True
    assert await pool_store.is_available("t1") is True
    assert await pool_store.set_available("t1", False) is False
    assert await pool_store.is_available("t1") is False
    assert await pool_store.set_available("t1", True) is True
    await pool_store.connect("t1", Role.THERAPIST, "b", "srvB", T0 + 1)
    await pool_store.disconnect("t1", Role.THERAPIST, "a", "srvA", T0 + 2)
    assert await pool_store.is_available("t1") is True  # one connection left
    await pool_store.disconnect("t1", Role.THERAPIST, "b", "srvB", T0 + 3)
    assert await pool_store.is_available("t1") is False
    # Back online, it must ask again.
    await pool_store.connect("t1", Role.THERAPIST, "c", "srvA", T0 + 4)
    assert await pool_store.is_available("t1") is False


# -- stats -----------------------------------------------------------------------


async def test_stats_of_an_empty_pool(pool_store: PoolStore) -> None:
    stats = await pool_store.stats(T0)
    assert stats.public() == {
        "waiting": 0,
        "claimed": 0,
        "therapists_online": 0,
        "therapists_available": 0,
        "therapists_busy": 0,
        "oldest_wait_s": 0.0,
        "wait_p50_s": None,
        "wait_p95_s": None,
        "created_15m": 0,
        "matched_15m": 0,
        "expired_15m": 0,
        "cancelled_15m": 0,
    }


async def test_stats_after_a_scripted_scenario(pool_store: PoolStore) -> None:
    s = pool_store
    await s.heartbeat("srv", T0)
    tids = [f"t{i}" for i in range(1, 9)]
    for tid in tids:
        await s.connect(tid, Role.THERAPIST, f"conn-{tid}", "srv", T0)
    await s.connect("c1", Role.CLIENT, "conn-c1", "srv", T0)  # clients are not counted
    # Long ago (outside the 15 minute window): a cancel, and a match by t5.
    await make(s, "r0", "c0", T0)
    await s.cancel("r0", "c0", T0 + 1)
    await matched(s, "r9", "c9", therapist("t5"), "s9", T0 + 100)
    # Inside the window (now = T0 + 2000, the window starts at T0 + 1100).
    # Matches, each accepted when claimed: waits of 10, 30 and 100 s.
    await make(s, "r1", "c1", T0 + 1200)
    await s.claim("r1", T1, T0 + 1210)
    await s.accept("r1", "c1", "s1", T0 + 1210)
    await make(s, "r2", "c2", T0 + 1300)
    await s.claim("r2", T2, T0 + 1330)
    await s.accept("r2", "c2", "s2", T0 + 1330)
    await make(s, "r4", "c4", T0 + 1150)  # expires at T0 + 1750
    await make(s, "r3", "c3", T0 + 1400)
    await s.claim("r3", T3, T0 + 1500)
    await s.accept("r3", "c3", "s3", T0 + 1500)
    await make(s, "r5", "c5", T0 + 1600)
    await s.cancel("r5", "c5", T0 + 1610)
    await make(s, "r6", "c6", T0 + 1700)
    assert [c.after.id for c in await fire(s, T0 + 1750)] == ["r4"]
    await make(s, "r7", "c7", T0 + 1800)
    await make(s, "r8", "c8", T0 + 1950)
    await s.claim("r7", therapist("t4"), T0 + 1990)
    # Availability: t6 and t7 idle and available, t8 available then gone.
    for tid in ("t6", "t7", "t8"):
        assert await s.set_available(tid, True) is True
    await s.disconnect("t8", Role.THERAPIST, "conn-t8", "srv", T0 + 1995)

    stats = await s.stats(T0 + 2000)
    assert stats.public() == {
        "waiting": 2,  # r6, r8
        "claimed": 1,  # r7
        "therapists_online": 7,  # t1..t7
        "therapists_available": 2,  # t6, t7
        "therapists_busy": 5,  # sessions of t1, t2, t3, t5; the claim of t4
        "oldest_wait_s": 300.0,  # r6, created at T0 + 1700
        "wait_p50_s": 30.0,
        "wait_p95_s": 100.0,
        "created_15m": 8,  # r1..r8
        "matched_15m": 3,  # r1, r2, r3
        "expired_15m": 1,  # r4
        "cancelled_15m": 1,  # r5
    }

    # Later: everything left times out; the early events leave the window.
    fired = await fire(s, T0 + 2601)
    assert sorted((c.after.id, c.after.reason) for c in fired) == [
        ("r6", "no_therapist"),
        ("r7", "client_no_response"),
        ("r8", "no_therapist"),
    ]
    stats = await s.stats(T0 + 2601)  # the window starts at T0 + 1701
    assert stats.public() == {
        "waiting": 0,
        "claimed": 0,
        "therapists_online": 7,
        "therapists_available": 2,
        "therapists_busy": 4,  # t4's claim expired
        "oldest_wait_s": 0.0,
        "wait_p50_s": None,
        "wait_p95_s": None,
        "created_15m": 2,  # r7, r8
        "matched_15m": 0,
        "expired_15m": 4,  # r4, r6, r7, r8
        "cancelled_15m": 0,
    }


async def test_stats_wait_percentiles_are_nearest_rank(pool_store: PoolStore) -> None:
    # Twenty matches with waits of 1..20 s (in shuffled order): p50 is the
    # 10th smallest, p95 the 19th.
    for n, i in enumerate([7, 3, 20, 1, 15, 9, 12, 18, 5, 2, 11, 19, 4, 16, 8, 13, 6, 17, 10, 14]):
        created = T0 + 30 * n
        await make(pool_store, f"r{i}", f"c{i}", created)
        await pool_store.claim(f"r{i}", therapist(f"t{i}"), created + i)
        await pool_store.accept(f"r{i}", f"c{i}", f"s{i}", created + i)
    stats = await pool_store.stats(T0 + 700)
    assert (stats.wait_p50_s, stats.wait_p95_s) == (10.0, 19.0)
    assert stats.matched_15m == 20


async def test_stats_wait_counts_from_creation_to_the_claim(pool_store: PoolStore) -> None:
    """The wait of a matched request is how long it waited for the therapist
    who got it (creation to that claim), not how long the client then took
    to accept: pool/memory.py's reading, pinned so both adapters agree."""
    await make(pool_store, "r1", "c1", T0)
    await pool_store.claim("r1", T1, T0 + 40)
    await pool_store.accept("r1", "c1", "s1", T0 + 55)
    stats = await pool_store.stats(T0 + 60)
    assert (stats.wait_p50_s, stats.wait_p95_s) == (40.0, 40.0)


# -- several servers on one pool ------------------------------------------------


async def test_handles_share_one_pool(
    pool_store: PoolStore, pool_store_factory: PoolFactory
) -> None:
    other = await pool_store_factory()
    r1 = await make(pool_store, "r1", "c1", T0)
    assert await other.get("r1") == r1
    held = await claim_of(other, "r1", T1, T0 + 1)
    assert await pool_store.get("r1") == held
    assert await pool_store.hold_of("t1") == Hold("claim", "r1")
    await other.connect("t2", Role.THERAPIST, "x", "srvB", T0)
    assert await pool_store.set_available("t2", True) is True


async def test_exactly_one_claim_wins(
    pool_store: PoolStore, pool_store_factory: PoolFactory
) -> None:
    handles = [pool_store] + [await pool_store_factory() for _ in range(3)]
    before = await make(pool_store, "r1", "c1", T0)
    profiles = [therapist(f"t{i}") for i in range(12)]
    results = await asyncio.gather(
        *(handles[i % len(handles)].claim("r1", p, T0 + 1) for i, p in enumerate(profiles)),
        return_exceptions=True,
    )
    wins = [r for r in results if isinstance(r, Change)]
    assert len(wins) == 1, results
    assert all(isinstance(r, Taken) for r in results if not isinstance(r, Change)), results
    winner = wins[0].after.claimed_by
    assert winner is not None
    assert wins[0] == Change(
        before=before,
        after=claimed(before, winner, T0 + 1),
        therapist=next(p for p in profiles if p.id == winner),
    )
    for p in profiles:
        expected = Hold("claim", "r1") if p.id == winner else None
        assert await pool_store.hold_of(p.id) == expected


async def test_one_therapist_claiming_two_at_once_gets_one(
    pool_store: PoolStore, pool_store_factory: PoolFactory
) -> None:
    other = await pool_store_factory()
    for i in range(6):
        await make(pool_store, f"r{i}", f"c{i}", T0 + i)
    results = await asyncio.gather(
        *((pool_store, other)[i % 2].claim(f"r{i}", T1, T0 + 10) for i in range(6)),
        return_exceptions=True,
    )
    wins = [r for r in results if isinstance(r, Change)]
    assert len(wins) == 1, results
    assert all(isinstance(r, Busy) for r in results if not isinstance(r, Change)), results
    assert await pool_store.hold_of("t1") == Hold("claim", wins[0].after.id)
    assert len(await pool_store.waiting()) == 5


async def test_deadlines_fire_once_across_servers(
    pool_store: PoolStore, pool_store_factory: PoolFactory
) -> None:
    handles = [pool_store] + [await pool_store_factory() for _ in range(2)]
    for i in range(8):
        await make(pool_store, f"r{i}", f"c{i}", T0 + i)
    now = T0 + 8 + MAX_WAIT
    batches = await asyncio.gather(*(fire(h, now) for h in handles))
    ids = [c.after.id for batch in batches for c in batch]
    assert sorted(ids) == [f"r{i}" for i in range(8)]


async def test_grace_fires_once_across_servers(
    pool_store: PoolStore, pool_store_factory: PoolFactory
) -> None:
    handles = [pool_store] + [await pool_store_factory() for _ in range(2)]
    await _claimed_by_connected_t1(pool_store)
    await handles[1].disconnect("t1", Role.THERAPIST, "conn-a", "srvA", T0 + 2)
    batches = await asyncio.gather(*(fire(h, T0 + 2 + GRACE + 1) for h in handles))
    changes = [c for batch in batches for c in batch]
    assert [(c.after.id, c.lost_therapist) for c in changes] == [("r1", "t1")]


async def test_one_active_request_across_servers(
    pool_store: PoolStore, pool_store_factory: PoolFactory
) -> None:
    handles = [pool_store] + [await pool_store_factory() for _ in range(3)]
    results = await asyncio.gather(
        *(h.create(DRAFT, "c1", f"r{i}", T0) for i, h in enumerate(handles)),
        return_exceptions=True,
    )
    made = [r for r in results if isinstance(r, tuple)]
    assert len(made) == 1, results
    assert all(isinstance(r, RequestExists) for r in results if not isinstance(r, tuple))
    assert [r.id for r in await pool_store.waiting()] == [made[0][0].id]


async def test_idempotent_retries_across_servers(
    pool_store: PoolStore, pool_store_factory: PoolFactory
) -> None:
    handles = [pool_store] + [await pool_store_factory() for _ in range(3)]
    results = await asyncio.gather(
        *(h.create(DRAFT, "c1", f"r{i}", T0, idempotency_key="k") for i, h in enumerate(handles))
    )
    ids = {req.id for req, _ in results}
    assert len(ids) == 1
    assert sum(change is not None for _, change in results) == 1
    assert len(await pool_store.waiting()) == 1


async def test_claim_racing_cancel_leaves_no_hold(
    pool_store: PoolStore, pool_store_factory: PoolFactory
) -> None:
    other = await pool_store_factory()
    await make(pool_store, "r1", "c1", T0)
    got_claim, got_cancel = await asyncio.gather(
        other.claim("r1", T1, T0 + 1),
        pool_store.cancel("r1", "c1", T0 + 1),
        return_exceptions=True,
    )
    assert isinstance(got_cancel, Change), got_cancel
    assert isinstance(got_claim, Change | NotFound), got_claim
    if isinstance(got_claim, Change):  # the claim went first; the cancel ended it
        assert got_cancel.before == got_claim.after
    req = await pool_store.get("r1")
    assert req is not None and req.state is State.CANCELLED
    assert await pool_store.hold_of("t1") is None


async def test_accept_racing_the_confirm_deadline(
    pool_store: PoolStore, pool_store_factory: PoolFactory
) -> None:
    """At the deadline either the client's accept or the expiry wins, never both."""
    other = await pool_store_factory()
    await make(pool_store, "r1", "c1", T0)
    await pool_store.claim("r1", T1, T0 + 1)
    accepted, fired = await asyncio.gather(
        pool_store.accept("r1", "c1", "s1", T0 + 1 + CONFIRM),
        fire(other, T0 + 1 + CONFIRM),
        return_exceptions=True,
    )
    assert isinstance(fired, list), fired
    req = await pool_store.get("r1")
    assert req is not None
    if isinstance(accepted, Change):
        assert fired == []
        assert req.state is State.MATCHED
        assert await pool_store.hold_of("t1") == Hold("session", "s1")
    else:
        assert isinstance(accepted, Taken), accepted
        assert [c.after.reason for c in fired] == ["client_no_response"]
        assert req.state is State.EXPIRED
        assert await pool_store.hold_of("t1") is None
        assert await pool_store.get_session("s1") is None


async def test_a_server_is_reaped_once_across_servers(
    pool_store: PoolStore, pool_store_factory: PoolFactory
) -> None:
    handles = [pool_store] + [await pool_store_factory() for _ in range(2)]
    await _claimed_by_connected_t1(pool_store)
    reaped = await asyncio.gather(*(h.reap_servers(T0 + 30, dead_after_s=10) for h in handles))
    assert sorted(sid for batch in reaped for sid in batch) == ["srvA"]
    batches = await asyncio.gather(*(fire(h, T0 + 30 + GRACE + 1) for h in handles))
    assert [c.lost_therapist for batch in batches for c in batch] == ["t1"]


async def test_oldest_wait_is_in_seconds_to_the_millisecond(pool_store: PoolStore) -> None:
    await make(pool_store, "r1", "c1", T0 + 0.1234)
    stats = await pool_store.stats(T0 + 10)
    assert stats.oldest_wait_s == pytest.approx(9.8766, abs=0.001)
    assert (stats.waiting, stats.created_15m) == (1, 1)


async def test_ping(pool_store: PoolStore) -> None:
    await pool_store.ping()


# -- Redis itself ------------------------------------------------------------


async def test_redis_pool_survives_a_crash_of_redis(
    redis_pool: PoolStore, redis_server: Any
) -> None:
    """Redis runs with the append-only file (``appendfsync always``): after a
    SIGKILL and a restart the pool is as it was, the adapter's connections and
    registered scripts heal by themselves, and ``ping`` says ``unavailable``
    while Redis is down."""
    s = redis_pool
    await s.heartbeat("srvA", T0)
    await s.connect("t1", Role.THERAPIST, "a", "srvA", T0)
    assert await s.set_available("t1", True) is True
    await make(s, "r1", "c1", T0)
    held = await claim_of(s, "r1", T1, T0 + 1)
    r2 = await make(s, "r2", "c2", T0 + 2)

    redis_server.stop(kill=True)
    await fails(Unavailable, s.ping())
    redis_server.start()

    await s.ping()
    assert await s.get("r1") == held
    assert await s.waiting() == [r2]
    assert await s.hold_of("t1") == Hold("claim", "r1")
    assert await s.is_available("t1") is True
    # Scripts run again after the restart emptied Redis's script cache.
    change = await s.accept("r1", "c1", "s1", T0 + 3)
    assert change.session is not None
    assert await s.open_session_of("t1") == change.session
    assert [c.after.id for c in await fire(s, T0 + 2 + MAX_WAIT)] == ["r2"]


# -- deadlines count before their timer fires ---------------------------------------


async def test_a_waiting_request_past_its_deadline_cannot_be_claimed(pool_store: PoolStore) -> None:
    await make(pool_store, "r1", "c1", T0)
    with pytest.raises(NotFound):
        await pool_store.claim("r1", T1, T0 + MAX_WAIT)
    # Nothing changed; the timer expires it as usual.
    [change] = await fire(pool_store, T0 + MAX_WAIT)
    assert change.after.reason == "no_therapist"


async def test_an_offer_past_its_deadline_cannot_be_accepted_or_declined(
    pool_store: PoolStore,
) -> None:
    await make(pool_store, "r1", "c1", T0)
    held = await claim_of(pool_store, "r1", T1, T0 + 10)
    with pytest.raises(Taken):
        await pool_store.accept("r1", "c1", "s1", T0 + 10 + CONFIRM)
    with pytest.raises(Taken):
        await pool_store.decline("r1", "c1", T0 + 10 + CONFIRM)
    assert await pool_store.get("r1") == held
    assert await pool_store.get_session("s1") is None
    [change] = await fire(pool_store, T0 + 10 + CONFIRM)
    assert change.after.reason == "client_no_response"


async def test_heartbeat_tells_a_server_it_was_taken_for_dead(pool_store: PoolStore) -> None:
    assert await pool_store.heartbeat("srvA", T0) is False  # first beat
    assert await pool_store.heartbeat("srvA", T0 + 1) is True
    assert await pool_store.reap_servers(T0 + 20, dead_after_s=10) == ["srvA"]
    assert await pool_store.heartbeat("srvA", T0 + 21) is False


# -- booked calls (PROTOCOL.md §8: POST /v1/bookings/{id}/session) ---------------


def booked(sid: str = "s-b1", booking: str = "b1", at: float = T0) -> Session:
    """The session ``open_booked_session`` must open: ready, held by t1, c1's."""
    return Session(
        id=sid,
        request_id=booking,
        client_id="c1",
        therapist_id="t1",
        state=SessionState.READY,
        created_at=at,
        booking_id=booking,
    )


async def open_booked(store: PoolStore, at: float = T0, booking: str = "b1") -> Session:
    return await store.open_booked_session(f"s-{booking}", booking, "c1", "t1", at)


async def test_a_booked_call_opens_as_a_ready_session(pool_store: PoolStore) -> None:
    got = await open_booked(pool_store)
    assert got == booked()
    assert await pool_store.get_session("s-b1") == booked()
    assert await pool_store.open_session_of("c1") == booked()
    assert await pool_store.open_session_of("t1") == booked()
    assert await pool_store.hold_of("t1") == Hold("session", "s-b1")
    assert (await pool_store.stats(T0 + 1)).therapists_busy == 1
    wire = got.public([])
    assert wire["booking_id"] == "b1" and wire["request_id"] is None
    assert wire["state"] == "ready" and wire["started_at"] is None


async def test_a_quick_connect_session_has_no_booking(pool_store: PoolStore) -> None:
    s = await matched(pool_store, "r1", "c1", T1, "s1", T0)
    assert s.booking_id is None
    assert (await pool_store.get_session("s1")) == s
    wire = s.public([])
    assert wire["booking_id"] is None and wire["request_id"] == "r1"


async def test_opening_a_booked_call_again_answers_the_same_session(
    pool_store: PoolStore,
) -> None:
    first = await open_booked(pool_store, T0)
    # The other participant (or a retry) a minute later: the same session,
    # its creation time unchanged.
    assert await open_booked(pool_store, T0 + 60) == first
    await pool_store.join_session("s-b1", "c1", T0 + 61)
    joined = await open_booked(pool_store, T0 + 62)
    assert joined.joined == {"c1"} and joined.state is SessionState.READY
    live, went_live, _ = await pool_store.join_session("s-b1", "t1", T0 + 70)
    assert went_live
    assert await open_booked(pool_store, T0 + 71) == live
    over = await pool_store.end_session("s-b1", "ended_by_therapist", T0 + 100)
    assert over is not None
    # Ended: answered as it is, not opened again (and it holds nothing).
    assert await open_booked(pool_store, T0 + 101) == over
    assert await pool_store.hold_of("t1") is None
    assert await pool_store.open_session_of("c1") is None


async def test_a_session_id_of_another_call_is_refused(pool_store: PoolStore) -> None:
    qc = await matched(pool_store, "r1", "c1", T1, "s1", T0)
    err = await fails(Conflict, pool_store.open_booked_session("s1", "b1", "c1", "t1", T0 + 1))
    assert err.message == "this session id belongs to another call"
    await pool_store.end_session("s1", "ended_by_client", T0 + 3)
    await open_booked(pool_store, T0 + 3, booking="b2")
    # Another booking, or other participants, under an id in use.
    await fails(Conflict, pool_store.open_booked_session("s-b2", "b3", "c1", "t1", T0 + 4))
    await fails(Conflict, pool_store.open_booked_session("s-b2", "b2", "c9", "t1", T0 + 4))
    await fails(Conflict, pool_store.open_booked_session("s-b2", "b2", "c1", "t9", T0 + 4))
    assert await pool_store.get_session("s1") == dataclasses.replace(
        qc, state=SessionState.ENDED, ended_at=T0 + 3, end_reason="ended_by_client"
    )


async def test_a_booked_call_keeps_the_busy_rule(pool_store: PoolStore) -> None:
    # The therapist holds a claim.
    await make(pool_store, "r1", "c2", T0)
    await pool_store.claim("r1", T1, T0)
    err = await fails(Busy, open_booked(pool_store, T0 + 1))
    assert err.message == "the therapist holds a claim or is in another call"
    # ... or is in a quick-connect call.
    await pool_store.accept("r1", "c2", "s1", T0 + 2)
    await fails(Busy, open_booked(pool_store, T0 + 3))
    await pool_store.end_session("s1", "ended_by_client", T0 + 4)
    # The client is in another call (with t2).
    await matched(pool_store, "r2", "c1", T2, "s2", T0 + 5)
    err = await fails(Busy, open_booked(pool_store, T0 + 6))
    assert err.message == "the client is in another call"
    await pool_store.end_session("s2", "ended_by_client", T0 + 7)
    # The client has a request waiting.
    await make(pool_store, "r3", "c1", T0 + 8)
    err = await fails(RequestExists, open_booked(pool_store, T0 + 9))
    assert err.message == "the client has a quick-connect request waiting or claimed"
    # Nothing was written by any refusal.
    assert await pool_store.get_session("s-b1") is None
    assert await pool_store.hold_of("t1") is None
    assert await pool_store.open_session_of("c1") is None
    await pool_store.cancel("r3", "c1", T0 + 10)
    assert await open_booked(pool_store, T0 + 11) == booked(at=T0 + 11)


async def test_a_booked_call_is_a_call_like_any_other(pool_store: PoolStore) -> None:
    await open_booked(pool_store)
    # While it is open: the therapist takes no claim, the client asks for no one.
    await make(pool_store, "r1", "c2", T0 + 1)
    await fails(Busy, pool_store.claim("r1", T1, T0 + 2))
    with pytest.raises(RequestExists):
        await pool_store.create(DRAFT, "c1", "r2", T0 + 3)
    # Joining, holding frames for a peer who has not joined, going live.
    frame = {"type": "rtc.signal", "session_id": "s-b1", "from": "t1", "data": {"sdp": "x"}}
    assert await pool_store.pass_or_hold("s-b1", "t1", frame) is False
    await pool_store.join_session("s-b1", "t1", T0 + 4)
    live, went_live, held = await pool_store.join_session("s-b1", "c1", T0 + 5)
    assert went_live and held == [frame]
    assert live == dataclasses.replace(
        booked(), state=SessionState.LIVE, started_at=T0 + 5, joined=frozenset({"c1", "t1"})
    )
    # Ending frees both.
    over = await pool_store.end_session("s-b1", "ended_by_client", T0 + 65)
    assert over is not None and over.booking_id == "b1" and over.duration_s() == 60
    assert await pool_store.hold_of("t1") is None
    await claim_of(pool_store, "r1", T1, T0 + 66)
    await make(pool_store, "r2", "c1", T0 + 67)


async def test_a_booked_call_ends_when_a_participant_stays_away(pool_store: PoolStore) -> None:
    await pool_store.heartbeat("srvA", T0)
    await pool_store.connect("c1", Role.CLIENT, "k1", "srvA", T0)
    await open_booked(pool_store)
    await pool_store.disconnect("c1", Role.CLIENT, "k1", "srvA", T0 + 10)
    fired = await pool_store.fire_due(T0 + 10 + GRACE + 1)
    assert fired == [
        dataclasses.replace(
            booked(),
            state=SessionState.ENDED,
            ended_at=T0 + 10 + GRACE + 1,
            end_reason="peer_lost",
        )
    ]
    assert await pool_store.hold_of("t1") is None


async def test_a_booked_call_opens_once_across_servers(
    pool_store: PoolStore, pool_store_factory: PoolFactory
) -> None:
    handles = [pool_store] + [await pool_store_factory() for _ in range(3)]
    got = await asyncio.gather(
        *(h.open_booked_session("s-b1", "b1", "c1", "t1", T0 + i) for i, h in enumerate(handles))
    )
    # Each answer is the one session, opened by whichever came first.
    assert len({s.created_at for s in got}) == 1
    assert all(s == dataclasses.replace(booked(), created_at=got[0].created_at) for s in got)
    assert await pool_store.hold_of("t1") == Hold("session", "s-b1")


# -- the due-widening index (DISPATCH_OFFER_FANOUT) ----------------------------


def offered(tids: set[str]) -> Draft:
    """:data:`DRAFT` offered to ``tids`` alone (the dispatcher's first offer)."""
    return dataclasses.replace(DRAFT, offered=frozenset(tids))


async def due_ids(store: PoolStore, upto: float, limit: int = 100) -> list[str]:
    return [r.id for r in await store.due_widenings(upto, limit)]


async def test_due_widenings_are_the_offers_to_a_few_by_widened_at(
    pool_store: PoolStore,
) -> None:
    s = pool_store
    assert await due_ids(s, T0 + DAY) == []
    await s.create(offered({"t1"}), "c2", "r2", T0 + 2)
    await s.create(offered({"t1"}), "c1", "r1", T0 + 1)
    await s.create(offered({"t1"}), "c3", "r3", T0 + 2)  # a tie: by id
    await make(s, "r4", "c4", T0)  # to everyone: never in the index
    assert await due_ids(s, T0) == []
    assert await due_ids(s, T0 + 1) == ["r1"]  # at most upto, inclusive
    assert await due_ids(s, T0 + 2) == ["r1", "r2", "r3"]
    assert await due_ids(s, T0 + 2, limit=2) == ["r1", "r2"]
    got = await s.due_widenings(T0 + 2)
    assert got[0] == await s.get("r1") and got[0].offered == {"t1"}


async def test_a_widening_rescores_and_opening_leaves_the_index(pool_store: PoolStore) -> None:
    s = pool_store
    await s.create(offered({"t1"}), "c1", "r1", T0)
    await s.create(offered({"t1"}), "c2", "r2", T0 + 1)
    assert await s.widen("r1", T0, frozenset({"t1", "t2"}), T0 + 10) is not None
    assert await due_ids(s, T0 + 5) == ["r2"]  # r1 is due again only from T0 + 10
    assert await due_ids(s, T0 + 10) == ["r2", "r1"]
    # A server that read the old widened_at loses and moves nothing.
    assert await s.widen("r1", T0, frozenset({"t1", "t3"}), T0 + 11) is None
    assert await due_ids(s, T0 + 10) == ["r2", "r1"]
    assert await s.widen("r1", T0 + 10, None, T0 + 20) is not None  # open to everyone
    assert await due_ids(s, T0 + DAY) == ["r2"]


async def test_an_ended_request_leaves_the_index(pool_store: PoolStore) -> None:
    s = pool_store
    for n in (1, 2, 3):
        await s.create(offered({"t1", "t2", "t3"}), f"c{n}", f"r{n}", T0)
    await s.cancel("r1", "c1", T0 + 1)
    await s.claim("r2", T2, T0 + 1)
    await s.accept("r2", "c2", "sess-2", T0 + 2)
    assert await due_ids(s, T0 + DAY) == ["r3"]
    assert [c.after.id for c in await fire(s, T0 + MAX_WAIT)] == ["r3"]  # expired
    assert await due_ids(s, T0 + DAY) == []


async def test_a_claimed_request_is_skipped_and_due_again_once_back_to_waiting(
    pool_store: PoolStore,
) -> None:
    s = pool_store
    await s.create(offered({"t1", "t2"}), "c1", "r1", T0)
    await s.create(offered({"t1", "t2"}), "c2", "r2", T0 + 1)
    await s.claim("r1", T1, T0 + 2)
    assert await due_ids(s, T0 + 10) == ["r2"]
    assert await due_ids(s, T0 + 10, limit=1) == ["r2"]  # the skipped one takes no room
    await s.decline("r1", "c1", T0 + 3)  # back to waiting, t1 declined
    back = await s.due_widenings(T0 + 10)
    assert [r.id for r in back] == ["r1", "r2"]
    assert back[0].widened_at == T0 and back[0].declined == {"t1"}
    # It widens as any other: re-scored from the widening on.
    assert await s.widen("r1", T0, frozenset({"t1", "t2", "t3"}), T0 + 10) is not None
    assert await due_ids(s, T0 + 10) == ["r2", "r1"]
    await s.claim("r1", T3, T0 + 11)
    await s.release("r1", "t3", T0 + 12)
    assert await due_ids(s, T0 + 9) == ["r2"] and await due_ids(s, T0 + 10) == ["r2", "r1"]
