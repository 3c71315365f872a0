"""The session part of the ``PoolStore`` contract, run against every adapter.

A session goes ready -> live -> ended (PROTOCOL.md §5 "Both, inside a
session"): both consoles join, ``rtc.signal`` frames are relayed or held for
a peer that has not joined yet, and the session ends exactly once, by a
participant, or with ``peer_lost`` when one stays away past the reconnect
grace. Each test runs once per adapter (``pool_store``: ``memory`` and
``redis``); the races use several handles on one pool (``pool_store_factory``:
several ``RedisPool`` instances standing for several servers). Expected values
are written out, never copied from an adapter. No test sleeps.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from core.errors import Conflict, DispatchError, Forbidden, NotFound, RequestExists
from core.identity import Role
from pool.effects import Change
from pool.model import Draft, EndReason, Hold, Session, SessionState, State, TherapistProfile
from pool.store import PoolStore

PoolFactory = Callable[[], Awaitable[PoolStore]]

T0 = 1_700_000_000.0
GRACE = 15.0  # reconnect_grace_s of the fixtures' Timeouts
MAX_WAIT = 600.0
DRAFT = Draft(region="GB-ENG", language="en", topics=())


def therapist(tid: str) -> TherapistProfile:
    return TherapistProfile(
        id=tid, name=f"Therapist {tid}", regions=("GB-ENG",), languages=("en",), topics=()
    )


T1, T2 = therapist("t1"), therapist("t2")


async def fails(cls: type[DispatchError], aw: Awaitable[object]) -> DispatchError:
    """Await ``aw`` and check it raised exactly ``cls`` (not a sibling or parent)."""
    with pytest.raises(DispatchError) as info:
        await aw
    got = info.value
    assert type(got) is cls, f"expected {cls.__name__}, got {type(got).__name__}: {got}"
    return got


async def open_session(
    store: PoolStore,
    sid: str = "s1",
    client: str = "c1",
    t: TherapistProfile = T1,
    at: float = T0,
    rid: str | None = None,
) -> Session:
    """Create, claim and accept at ``at``: session ``sid`` opened, ``ready``."""
    rid = rid or f"r-{sid}"
    await store.create(DRAFT, client, rid, at)
    await store.claim(rid, t, at)
    change = await store.accept(rid, client, sid, at)
    assert change.session is not None
    return change.session


async def live_session(store: PoolStore, sid: str = "s1", at: float = T0) -> Session:
    """Session ``sid`` of c1 and t1, both joined at ``at + 10``."""
    await open_session(store, sid, at=at)
    await store.join_session(sid, "c1", at + 5)
    session, went_live, _ = await store.join_session(sid, "t1", at + 10)
    assert went_live and session.state is SessionState.LIVE
    return session


async def connected(store: PoolStore, *users: str, server: str = "srvA", at: float = T0) -> None:
    await store.heartbeat(server, at)
    for user in users:
        role = Role.THERAPIST if user.startswith("t") else Role.CLIENT
        await store.connect(user, role, f"conn-{user}", server, at)


async def gone(store: PoolStore, user: str, at: float, server: str = "srvA") -> None:
    role = Role.THERAPIST if user.startswith("t") else Role.CLIENT
    await store.disconnect(user, role, f"conn-{user}", server, at)


def ended(session: Session, reason: str, at: float) -> Session:
    return dataclasses.replace(session, state=SessionState.ENDED, ended_at=at, end_reason=reason)


def sessions_of(fired: list[Change | Session]) -> list[Session]:
    return [x for x in fired if isinstance(x, Session)]


def frame(n: int) -> dict[str, Any]:
    """An rtc.signal frame as the relay would hold it: nested, typed, unicode."""
    return {
        "type": "rtc.signal",
        "session_id": "s1",
        "from": "t1",
        "data": {"n": n, "sdp": f"v=0 ü ✓ {n}", "candidates": [n, n + 0.5, None, True], "x": {}},
    }


# -- the session value ---------------------------------------------------------


def test_duration_is_whole_seconds_from_live_to_end() -> None:
    s = Session(id="s", request_id="r", client_id="c", therapist_id="t", created_at=T0)
    assert s.duration_s() == 0  # ready, never live
    live = dataclasses.replace(s, state=SessionState.LIVE, started_at=T0 + 1.25)
    assert live.duration_s() == 0  # open: no duration yet
    assert live.ended("ended_by_client", T0 + 62.99).duration_s() == 61  # rounded down
    assert live.ended("ended_by_client", T0 + 1.25).duration_s() == 0
    assert s.ended("peer_lost", T0 + 30).duration_s() == 0  # ended without going live


def test_joined_is_stored_but_never_shown() -> None:
    s = Session(
        id="s",
        request_id="r",
        client_id="c",
        therapist_id="t",
        state=SessionState.LIVE,
        created_at=T0,
        started_at=T0 + 1,
        joined=frozenset({"t", "c"}),
    )
    rec = s.to_record()
    assert rec["joined"] == ["c", "t"]
    assert Session.from_record(rec) == s
    assert "joined" not in s.public([])
    assert Session.from_record({**rec, "joined": None}).joined == frozenset()


# -- join ------------------------------------------------------------------------


async def test_a_new_session_is_ready_with_nobody_joined(pool_store: PoolStore) -> None:
    session = await open_session(pool_store)
    assert session.joined == frozenset()
    assert session.state is SessionState.READY
    assert await pool_store.get_session("s1") == session


@pytest.mark.parametrize("first", ["c1", "t1"])
async def test_the_session_goes_live_when_both_have_joined(
    pool_store: PoolStore, first: str
) -> None:
    opened = await open_session(pool_store)
    second = "t1" if first == "c1" else "c1"

    got = await pool_store.join_session("s1", first, T0 + 3)
    one = dataclasses.replace(opened, joined=frozenset({first}))
    assert got == (one, False, [])
    assert await pool_store.get_session("s1") == one
    assert await pool_store.open_session_of(second) == one

    got = await pool_store.join_session("s1", second, T0 + 7.5)
    live = dataclasses.replace(
        opened, joined=frozenset({"c1", "t1"}), state=SessionState.LIVE, started_at=T0 + 7.5
    )
    assert got == (live, True, [])
    assert await pool_store.get_session("s1") == live
    assert await pool_store.open_session_of("c1") == live
    assert await pool_store.open_session_of("t1") == live
    assert await pool_store.hold_of("t1") == Hold("session", "s1")
    assert live.public([])["started_at"] == "2023-11-14T22:13:27.500Z"


async def test_joining_again_is_a_reconnect(pool_store: PoolStore) -> None:
    await open_session(pool_store)
    one = (await pool_store.join_session("s1", "c1", T0 + 1))[0]
    # The same console joins twice before the peer: still ready.
    assert await pool_store.join_session("s1", "c1", T0 + 2) == (one, False, [])
    live = (await pool_store.join_session("s1", "t1", T0 + 3))[0]
    # Live once, at the first time both were in; later joins change nothing.
    for user, at in (("t1", T0 + 4), ("c1", T0 + 5), ("t1", T0 + 60)):
        assert await pool_store.join_session("s1", user, at) == (live, False, [])
    assert live.started_at == T0 + 3
    assert await pool_store.get_session("s1") == live


async def test_join_errors(pool_store: PoolStore) -> None:
    opened = await open_session(pool_store)
    err = await fails(NotFound, pool_store.join_session("nope", "c1", T0 + 1))
    assert err.message == "no such session"
    # Not found comes before forbidden: an intruder learns nothing of ids.
    await fails(NotFound, pool_store.join_session("nope", "intruder", T0 + 1))
    # Another therapist, another client: forbidden, and nothing changed.
    for intruder in ("t2", "c2", "intruder"):
        await fails(Forbidden, pool_store.join_session("s1", intruder, T0 + 1))
    assert await pool_store.get_session("s1") == opened
    # Ended: not found, for the participants too.
    await pool_store.end_session("s1", EndReason.ENDED_BY_CLIENT, T0 + 2)
    for user in ("c1", "t1"):
        err = await fails(NotFound, pool_store.join_session("s1", user, T0 + 3))
        assert err.message == "no such session"
    assert (await pool_store.get_session("s1")) == ended(opened, "ended_by_client", T0 + 2)


async def test_live_exactly_once_when_everyone_joins_at_once(
    pool_store: PoolStore, pool_store_factory: PoolFactory
) -> None:
    handles = [pool_store] + [await pool_store_factory() for _ in range(3)]
    await open_session(pool_store)
    joins = [
        handles[i % len(handles)].join_session("s1", ("c1", "t1")[i % 2], T0 + 10 + i)
        for i in range(16)
    ]
    results = await asyncio.gather(*joins)
    lit = [i for i, (_, went_live, _) in enumerate(results) if went_live]
    assert len(lit) == 1, results
    final = await pool_store.get_session("s1")
    assert final is not None and final.state is SessionState.LIVE
    assert final.started_at == T0 + 10 + lit[0]
    assert final.joined == frozenset({"c1", "t1"})
    assert results[lit[0]][0] == final


# -- relaying frames ----------------------------------------------------------------


async def test_frames_wait_for_a_peer_who_has_not_joined(pool_store: PoolStore) -> None:
    await open_session(pool_store)
    # The therapist's console is up and signals before the client's is.
    await pool_store.join_session("s1", "t1", T0 + 1)
    for n in range(3):
        assert await pool_store.pass_or_hold("s1", "t1", frame(n)) is False
    # The therapist has joined: the client's frames go through at once.
    assert await pool_store.pass_or_hold("s1", "c1", {"type": "rtc.signal", "n": 99}) is True
    session, went_live, held = await pool_store.join_session("s1", "c1", T0 + 2)
    assert went_live and session.state is SessionState.LIVE
    assert held == [frame(0), frame(1), frame(2)]  # in the order they were held
    # Delivered once: joining again hands over nothing.
    assert await pool_store.join_session("s1", "c1", T0 + 3) == (session, False, [])
    # Now both have joined: everything passes, nothing is held.
    assert await pool_store.pass_or_hold("s1", "t1", frame(3)) is True
    assert await pool_store.join_session("s1", "t1", T0 + 4) == (session, False, [])
    assert await pool_store.join_session("s1", "c1", T0 + 4) == (session, False, [])


async def test_frames_are_held_for_each_side_apart(pool_store: PoolStore) -> None:
    await open_session(pool_store)
    assert await pool_store.pass_or_hold("s1", "c1", {"to": "t1", "n": 1}) is False
    assert await pool_store.pass_or_hold("s1", "t1", {"to": "c1", "n": 1}) is False
    assert await pool_store.pass_or_hold("s1", "c1", {"to": "t1", "n": 2}) is False
    _, _, for_t1 = await pool_store.join_session("s1", "t1", T0 + 1)
    assert for_t1 == [{"to": "t1", "n": 1}, {"to": "t1", "n": 2}]
    # The client still has not joined: t1's next frames wait for it too.
    assert await pool_store.pass_or_hold("s1", "t1", {"to": "c1", "n": 2}) is False
    assert await pool_store.pass_or_hold("s1", "c1", {"to": "t1", "n": 3}) is True
    _, _, for_c1 = await pool_store.join_session("s1", "c1", T0 + 2)
    assert for_c1 == [{"to": "c1", "n": 1}, {"to": "c1", "n": 2}]


async def test_held_frames_are_bounded_per_peer(pool_store: PoolStore) -> None:
    await open_session(pool_store)
    for n in range(3):
        assert await pool_store.pass_or_hold("s1", "t1", frame(n), max_held=3) is False
    err = await fails(Conflict, pool_store.pass_or_hold("s1", "t1", frame(3), max_held=3))
    assert err.message == "too many frames held for a peer who has not joined"
    assert err.code == "conflict"
    # The bound is per peer: the other side may still hold.
    assert await pool_store.pass_or_hold("s1", "c1", frame(50), max_held=3) is False
    # The refused frame was not held; the client gets exactly the first three.
    assert (await pool_store.join_session("s1", "c1", T0 + 1))[2] == [frame(n) for n in range(3)]
    # Once delivered, there is room again (and the client has joined anyway).
    assert await pool_store.pass_or_hold("s1", "t1", frame(4), max_held=3) is True


async def test_the_default_bound_is_256(pool_store: PoolStore) -> None:
    await open_session(pool_store)
    for n in range(256):
        assert await pool_store.pass_or_hold("s1", "c1", {"n": n}) is False
    await fails(Conflict, pool_store.pass_or_hold("s1", "c1", {"n": 256}))
    held = (await pool_store.join_session("s1", "t1", T0 + 1))[2]
    assert held == [{"n": n} for n in range(256)]


async def test_pass_or_hold_errors(pool_store: PoolStore) -> None:
    await open_session(pool_store)
    err = await fails(NotFound, pool_store.pass_or_hold("nope", "c1", frame(0)))
    assert err.message == "no such session"
    for intruder in ("t2", "c2"):
        await fails(Forbidden, pool_store.pass_or_hold("s1", intruder, frame(0)))
    # The intruder held nothing for anyone.
    assert (await pool_store.join_session("s1", "c1", T0 + 1))[2] == []
    assert (await pool_store.join_session("s1", "t1", T0 + 1))[2] == []
    await pool_store.end_session("s1", EndReason.ENDED_BY_THERAPIST, T0 + 2)
    await fails(NotFound, pool_store.pass_or_hold("s1", "c1", frame(0)))


async def test_no_frame_is_lost_when_relay_races_the_join(
    pool_store: PoolStore, pool_store_factory: PoolFactory
) -> None:
    """Every frame is either passed (the caller delivers it) or returned by the
    peer's join, exactly once, however the two interleave across servers."""
    handles = [pool_store] + [await pool_store_factory() for _ in range(3)]
    await open_session(pool_store)
    n = 60
    sends = [handles[i % 4].pass_or_hold("s1", "t1", {"n": i}) for i in range(n)]
    first, (_, _, held), rest = await asyncio.gather(
        asyncio.gather(*sends[: n // 2]),
        handles[1].join_session("s1", "c1", T0 + 1),
        asyncio.gather(*sends[n // 2 :]),
    )
    outcome = dict(enumerate(first + rest))
    assert set(outcome.values()) <= {True, False}
    held_ns = [f["n"] for f in held]
    assert len(held_ns) == len(set(held_ns))
    assert set(held_ns) == {i for i, passed in outcome.items() if passed is False}
    assert set(held_ns) | {i for i, passed in outcome.items() if passed is True} == set(range(n))
    # Nothing is left behind for a later join.
    assert (await pool_store.join_session("s1", "c1", T0 + 2))[2] == []


# -- ending ----------------------------------------------------------------------------


async def test_end_a_live_session(pool_store: PoolStore) -> None:
    live = await live_session(pool_store)  # live since T0 + 10
    assert (await pool_store.stats(T0 + 11)).therapists_busy == 1
    got = await pool_store.end_session("s1", EndReason.ENDED_BY_CLIENT, T0 + 100.75)
    want = ended(live, "ended_by_client", T0 + 100.75)
    assert got == want
    assert got.duration_s() == 90
    assert got.public([])["ended_at"] == "2023-11-14T22:15:00.750Z"
    assert await pool_store.get_session("s1") == want
    assert await pool_store.open_session_of("c1") is None
    assert await pool_store.open_session_of("t1") is None
    assert await pool_store.hold_of("t1") is None
    assert (await pool_store.stats(T0 + 101)).therapists_busy == 0
    # Exactly once: a second end, from either side or the timer, is nothing.
    assert await pool_store.end_session("s1", EndReason.ENDED_BY_THERAPIST, T0 + 102) is None
    assert await pool_store.end_session("s1", EndReason.PEER_LOST, T0 + 103) is None
    assert await pool_store.get_session("s1") == want
    assert await pool_store.end_session("nope", EndReason.ENDED_BY_CLIENT, T0 + 104) is None
    assert await pool_store.get_session("nope") is None


async def test_a_participant_ends_its_session_and_nobody_else_may(pool_store: PoolStore) -> None:
    live = await live_session(pool_store)
    for stranger in ("c2", "t2", ""):
        await fails(Forbidden, pool_store.end_session_by("s1", stranger, T0 + 50))
    await fails(Forbidden, pool_store.end_session_by("nope", "c1", T0 + 50))
    assert await pool_store.get_session("s1") == live  # refused: nothing changed
    got = await pool_store.end_session_by("s1", "t1", T0 + 100)
    assert got == ended(live, "ended_by_therapist", T0 + 100)
    assert await pool_store.get_session("s1") == got
    assert await pool_store.hold_of("t1") is None
    # Once: the other side's end is nothing, a stranger's still refused.
    assert await pool_store.end_session_by("s1", "c1", T0 + 101) is None
    await fails(Forbidden, pool_store.end_session_by("s1", "c2", T0 + 102))
    await live_session(pool_store, "s2", T0 + 200)
    by_client = await pool_store.end_session_by("s2", "c1", T0 + 300)
    assert by_client is not None and by_client.end_reason == "ended_by_client"


async def test_end_a_session_that_never_went_live(pool_store: PoolStore) -> None:
    opened = await open_session(pool_store)
    await pool_store.join_session("s1", "c1", T0 + 1)
    await pool_store.pass_or_hold("s1", "c1", frame(1))
    got = await pool_store.end_session("s1", EndReason.FUNDS_EXHAUSTED, T0 + 30)
    want = dataclasses.replace(ended(opened, "funds_exhausted", T0 + 30), joined=frozenset({"c1"}))
    assert got == want
    assert got.started_at is None and got.duration_s() == 0
    assert await pool_store.hold_of("t1") is None


async def test_an_ended_session_frees_the_therapist_to_claim_again(pool_store: PoolStore) -> None:
    await live_session(pool_store)
    await pool_store.create(DRAFT, "c2", "r2", T0 + 20)
    with pytest.raises(DispatchError) as busy:
        await pool_store.claim("r2", T1, T0 + 21)
    assert busy.value.code == "busy"
    await pool_store.end_session("s1", EndReason.ENDED_BY_THERAPIST, T0 + 30)
    change = await pool_store.claim("r2", T1, T0 + 31)
    assert change.after.state is State.CLAIMED and change.after.claimed_by == "t1"
    assert await pool_store.hold_of("t1") == Hold("claim", "r2")
    # ... and a second session with the same client and therapist works as the first.
    await pool_store.accept("r2", "c2", "s2", T0 + 32)
    await pool_store.join_session("s2", "c2", T0 + 33)
    assert (await pool_store.join_session("s2", "t1", T0 + 34))[1] is True
    assert await pool_store.open_session_of("t1") == await pool_store.get_session("s2")


async def test_the_client_may_ask_again_after_the_end(pool_store: PoolStore) -> None:
    await live_session(pool_store)
    await pool_store.end_session("s1", EndReason.ENDED_BY_CLIENT, T0 + 30)
    await open_session(pool_store, "s2", client="c1", t=T2, at=T0 + 40)
    assert (await pool_store.open_session_of("c1")) == await pool_store.get_session("s2")
    assert await pool_store.hold_of("t1") is None
    assert await pool_store.hold_of("t2") == Hold("session", "s2")


async def test_end_exactly_once_across_servers(
    pool_store: PoolStore, pool_store_factory: PoolFactory
) -> None:
    handles = [pool_store] + [await pool_store_factory() for _ in range(4)]
    live = await live_session(pool_store)
    reasons = [EndReason.ENDED_BY_CLIENT, EndReason.ENDED_BY_THERAPIST, EndReason.FUNDS_EXHAUSTED]
    results = await asyncio.gather(
        *(
            handles[i % len(handles)].end_session("s1", reasons[i % 3], T0 + 50 + i)
            for i in range(15)
        )
    )
    winners = [(i, r) for i, r in enumerate(results) if r is not None]
    assert len(winners) == 1, results
    i, got = winners[0]
    assert got == ended(live, reasons[i % 3], T0 + 50 + i)
    assert await pool_store.get_session("s1") == got
    assert await pool_store.hold_of("t1") is None


async def test_end_cancels_the_graces_of_users_who_hold_nothing_else(
    pool_store: PoolStore,
) -> None:
    await connected(pool_store, "t1", "c1")
    await live_session(pool_store)
    await gone(pool_store, "t1", T0 + 20)  # grace armed, due at T0 + 35
    await gone(pool_store, "c1", T0 + 21)
    await pool_store.end_session("s1", EndReason.ENDED_BY_CLIENT, T0 + 22)
    # The graces are gone with the session: the therapist's next claim (made
    # before its console is back) lasts until its own deadline, T0 + 83, and
    # is not cut by the grace armed for the session (due at T0 + 35).
    await pool_store.create(DRAFT, "c3", "r3", T0 + 22)
    held = (await pool_store.claim("r3", T1, T0 + 23)).after
    assert await pool_store.fire_due(T0 + 40) == []
    assert await pool_store.get("r3") == held
    [expired] = await pool_store.fire_due(T0 + 83)
    assert isinstance(expired, Change) and expired.after.reason == "client_no_response"


async def test_a_client_in_an_open_session_may_not_ask_again(pool_store: PoolStore) -> None:
    """The pool's own rule (once a check-then-act in the app): while its session is
    ``ready`` or ``live`` a client's new request is refused in the atomic step that
    would create it; so a client never has two open sessions."""
    await open_session(pool_store, "s1", client="c1", t=T1, at=T0)
    for at in (T0 + 1, T0 + 2):
        with pytest.raises(RequestExists, match="open session"):
            await pool_store.create(DRAFT, "c1", f"r-again-{at}", at)
        if at == T0 + 1:
            await pool_store.join_session("s1", "c1", at)
            await pool_store.join_session("s1", "t1", at)  # now live
    assert await pool_store.active_request_of("c1") is None
    assert await pool_store.waiting() == []
    await pool_store.end_session("s1", EndReason.ENDED_BY_CLIENT, T0 + 3)
    req, change = await pool_store.create(DRAFT, "c1", "r-after", T0 + 4)
    assert change is not None and req.state is State.WAITING


# -- peer lost -----------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["t1", "c1"])
async def test_a_participant_away_past_the_grace_ends_the_session(
    pool_store: PoolStore, who: str
) -> None:
    await connected(pool_store, "t1", "c1")
    live = await live_session(pool_store)
    await gone(pool_store, who, T0 + 20)
    assert await pool_store.fire_due(T0 + 20 + GRACE - 0.5) == []
    assert await pool_store.get_session("s1") == live
    fired = await pool_store.fire_due(T0 + 20 + GRACE + 1)
    want = ended(live, "peer_lost", T0 + 20 + GRACE + 1)
    assert fired == [want]
    assert want.duration_s() == 26
    assert await pool_store.get_session("s1") == want
    assert await pool_store.open_session_of("c1") is None
    assert await pool_store.open_session_of("t1") is None
    assert await pool_store.hold_of("t1") is None
    assert (await pool_store.stats(T0 + 40)).therapists_busy == 0
    # Once only, and nothing is left to end by hand.
    assert await pool_store.fire_due(T0 + 100) == []
    assert await pool_store.end_session("s1", EndReason.ENDED_BY_CLIENT, T0 + 101) is None
    await fails(NotFound, pool_store.join_session("s1", "c1", T0 + 102))


async def test_a_ready_session_ends_too_when_a_participant_stays_away(
    pool_store: PoolStore,
) -> None:
    await connected(pool_store, "t1", "c1")
    opened = await open_session(pool_store)
    await gone(pool_store, "c1", T0 + 1)
    fired = await pool_store.fire_due(T0 + 1 + GRACE)
    assert fired == [ended(opened, "peer_lost", T0 + 1 + GRACE)]
    assert sessions_of(fired)[0].duration_s() == 0


async def test_both_away_ends_the_session_once(pool_store: PoolStore) -> None:
    await connected(pool_store, "t1", "c1")
    live = await live_session(pool_store)
    await gone(pool_store, "t1", T0 + 20)
    await gone(pool_store, "c1", T0 + 21)
    fired = await pool_store.fire_due(T0 + 60)
    assert fired == [ended(live, "peer_lost", T0 + 60)]
    assert await pool_store.fire_due(T0 + 61) == []


async def test_reconnecting_within_the_grace_keeps_the_session(pool_store: PoolStore) -> None:
    await connected(pool_store, "t1", "c1")
    live = await live_session(pool_store)
    await gone(pool_store, "c1", T0 + 20)
    await pool_store.connect("c1", Role.CLIENT, "conn-c1-b", "srvB", T0 + 20 + GRACE - 1)
    assert await pool_store.fire_due(T0 + 20 + GRACE * 3) == []
    assert await pool_store.get_session("s1") == live
    assert await pool_store.open_session_of("c1") == live
    assert await pool_store.hold_of("t1") == Hold("session", "s1")
    # The reconnected console joins again: no second start, the call goes on.
    assert await pool_store.join_session("s1", "c1", T0 + 70) == (live, False, [])
    # A later loss arms a new grace from then.
    await pool_store.disconnect("c1", Role.CLIENT, "conn-c1-b", "srvB", T0 + 80)
    assert await pool_store.fire_due(T0 + 80 + GRACE - 1) == []
    assert sessions_of(await pool_store.fire_due(T0 + 80 + GRACE)) == [
        ended(live, "peer_lost", T0 + 80 + GRACE)
    ]


async def test_a_reaped_server_ends_its_users_sessions_after_the_grace(
    pool_store: PoolStore,
) -> None:
    await connected(pool_store, "t1", server="srvA")
    await connected(pool_store, "c1", server="srvB")
    live = await live_session(pool_store)
    await pool_store.heartbeat("srvB", T0 + 25)
    assert await pool_store.reap_servers(T0 + 30, dead_after_s=10) == ["srvA"]
    assert await pool_store.fire_due(T0 + 30 + GRACE - 1) == []
    assert await pool_store.fire_due(T0 + 30 + GRACE) == [ended(live, "peer_lost", T0 + 30 + GRACE)]


async def test_fire_due_counts_session_ends_against_its_limit(pool_store: PoolStore) -> None:
    for i in range(3):
        await connected(pool_store, f"t{i}")
        await open_session(pool_store, f"s{i}", client=f"c{i}", t=therapist(f"t{i}"), at=T0)
        await gone(pool_store, f"t{i}", T0 + 1 + i)
    await pool_store.create(DRAFT, "c9", "r9", T0)  # expires at T0 + 600
    now = T0 + MAX_WAIT
    first = await pool_store.fire_due(now, limit=2)
    # Deadlines first, then graces in the order they end.
    assert isinstance(first[0], Change) and first[0].after.id == "r9"
    assert isinstance(first[1], Session) and first[1].id == "s0"
    rest = await pool_store.fire_due(now, limit=1)
    rest += await pool_store.fire_due(now, limit=1)
    assert [s.id for s in sessions_of(rest)] == ["s1", "s2"] and len(rest) == 2
    assert await pool_store.fire_due(now) == []
    assert all(s.end_reason == "peer_lost" for s in sessions_of(first + rest))


async def test_peer_lost_fires_once_across_servers(
    pool_store: PoolStore, pool_store_factory: PoolFactory
) -> None:
    handles = [pool_store] + [await pool_store_factory() for _ in range(4)]
    n = 12
    for i in range(n):
        await connected(pool_store, f"t{i:02}", f"c{i:02}")
        await open_session(
            pool_store, f"s{i:02}", client=f"c{i:02}", t=therapist(f"t{i:02}"), at=T0
        )
        # Half lose the therapist, half lose both sides.
        await gone(pool_store, f"t{i:02}", T0 + 1)
        if i % 2:
            await gone(pool_store, f"c{i:02}", T0 + 2)
    # Some requests expire in the same calls.
    for i in range(5):
        await pool_store.create(DRAFT, f"cx{i}", f"rx{i}", T0 + 30 - MAX_WAIT)

    async def drain(store: PoolStore) -> list[Change | Session]:
        out: list[Change | Session] = []
        while batch := await store.fire_due(T0 + 30, limit=2):
            out += batch
        return out

    fired = [x for batch in await asyncio.gather(*(drain(h) for h in handles)) for x in batch]
    ends = sessions_of(fired)
    assert sorted(s.id for s in ends) == [f"s{i:02}" for i in range(n)]
    assert {s.end_reason for s in ends} == {"peer_lost"}
    expired = [x.after.id for x in fired if isinstance(x, Change)]
    assert sorted(expired) == [f"rx{i}" for i in range(5)]
    stats = await pool_store.stats(T0 + 30)
    assert stats.therapists_busy == 0
    assert await pool_store.fire_due(T0 + 1000) == []


async def test_end_racing_the_grace_ends_once(
    pool_store: PoolStore, pool_store_factory: PoolFactory
) -> None:
    other = await pool_store_factory()
    await connected(pool_store, "t1", "c1")
    live = await live_session(pool_store)
    await gone(pool_store, "t1", T0 + 20)
    at = T0 + 20 + GRACE
    by_hand, fired = await asyncio.gather(
        pool_store.end_session("s1", EndReason.ENDED_BY_CLIENT, at), other.fire_due(at)
    )
    if by_hand is not None:
        assert fired == []
        assert by_hand == ended(live, "ended_by_client", at)
    else:
        assert fired == [ended(live, "peer_lost", at)]
    assert (await pool_store.get_session("s1")) in (by_hand, *sessions_of(fired))
