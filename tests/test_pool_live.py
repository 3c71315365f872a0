"""The operator's part of the ``PoolStore`` contract: ``live`` (who is where) and the
stats history (``record_sample``, ``history``), run against every adapter.

Each test runs once per adapter (``pool_store``: ``memory`` and ``redis``); the
races use several handles on one pool (``pool_store_factory``). Expected values
are written out, never copied from an adapter. Time is passed in; no test sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from core.identity import Role
from pool.live import HISTORY_WINDOW_S, LIVE_LIMIT, bucket_of, sample_of
from pool.model import Draft, PoolStats, TherapistProfile
from pool.store import PoolStore

PoolFactory = Callable[[], Awaitable[PoolStore]]

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
DRAFT = Draft(region="GB-ENG", language="en", topics=("anxiety",), notes="private words")


def therapist(tid: str) -> TherapistProfile:
    return TherapistProfile(
        id=tid,
        name=f"Dr {tid}",
        regions=("GB-ENG", "US-CA"),
        languages=("en", "fr"),
        topics=("anxiety",),
    )


EMPTY = {
    "at": "2023-11-14T22:13:20.000Z",
    "waiting": [],
    "waiting_total": 0,
    "claims": [],
    "claims_total": 0,
    "sessions": [],
    "sessions_total": 0,
    "therapists": [],
    "therapists_total": 0,
}


# -- pure helpers --------------------------------------------------------------------


def test_a_bucket_is_its_start_in_whole_seconds() -> None:
    assert bucket_of(T0) == 1_700_000_000
    assert bucket_of(T0 + 4.999) == 1_700_000_000
    assert bucket_of(T0 + 5) == 1_700_000_005
    assert bucket_of(T0 - 0.001) == 1_699_999_995


def test_a_sample_keeps_the_charted_numbers_and_its_time() -> None:
    stats = PoolStats(3, 1, 4, 2, 1, 12.5, 8.0, None, 9, 5, 1, 0)
    assert sample_of(stats, T0 + 0.25) == {
        "at": "2023-11-14T22:13:20.250Z",
        "waiting": 3,
        "claimed": 1,
        "therapists_online": 4,
        "therapists_available": 2,
        "therapists_busy": 1,
        "oldest_wait_s": 12.5,
        "wait_p50_s": 8.0,
        "wait_p95_s": None,
    }


# -- live ----------------------------------------------------------------------------


async def test_live_of_an_empty_pool(pool_store: PoolStore) -> None:
    assert (await pool_store.live(T0)).public() == EMPTY


async def test_live_shows_who_is_where(pool_store: PoolStore) -> None:
    s = pool_store
    for tid in ("t1", "t2", "t3"):
        await s.put_profile(therapist(tid))
    # t1 available, t2 claims, t3 in a session, t4 online without a profile,
    # t5 gone again; a client's connection is no therapist.
    for tid in ("t1", "t2", "t3", "t4", "t5"):
        await s.connect(tid, Role.THERAPIST, f"conn-{tid}", "srv", T0)
    await s.connect("c1", Role.CLIENT, "conn-c1", "srv", T0)
    await s.disconnect("t5", Role.THERAPIST, "conn-t5", "srv", T0 + 1)
    assert await s.set_available("t1", True) is True
    # Waiting: r2 (older) then r1; r3 claimed by t2; r4 matched by t3.
    await s.create(DRAFT, "c1", "r1", T0 + 10)
    await s.create(Draft(region="US-CA", language="fr"), "c2", "r2", T0 + 5)
    await s.create(DRAFT, "c3", "r3", T0 + 12)
    await s.claim("r3", therapist("t2"), T0 + 20)
    await s.create(DRAFT, "c4", "r4", T0 + 2)
    await s.claim("r4", therapist("t3"), T0 + 3)
    await s.accept("r4", "c4", "s4", T0 + 4)
    await s.join_session("s4", "c4", T0 + 6)
    await s.join_session("s4", "t3", T0 + 7.5)

    body = (await s.live(T0 + 30)).public()
    assert body == {
        "at": "2023-11-14T22:13:50.000Z",
        "waiting": [
            {
                "id": "r2",
                "client_id": "c2",
                "created_at": "2023-11-14T22:13:25.000Z",
                "region": "US-CA",
                "language": "fr",
                "topics": [],
            },
            {
                "id": "r1",
                "client_id": "c1",
                "created_at": "2023-11-14T22:13:30.000Z",
                "region": "GB-ENG",
                "language": "en",
                "topics": ["anxiety"],
            },
        ],
        "waiting_total": 2,
        "claims": [
            {
                "request_id": "r3",
                "therapist_id": "t2",
                "claimed_at": "2023-11-14T22:13:40.000Z",
                "expires_at": "2023-11-14T22:14:40.000Z",  # the 60 s to confirm
            }
        ],
        "claims_total": 1,
        "sessions": [
            {
                "id": "s4",
                "client_id": "c4",
                "therapist_id": "t3",
                "state": "live",
                "created_at": "2023-11-14T22:13:24.000Z",
                "started_at": "2023-11-14T22:13:27.500Z",
            }
        ],
        "sessions_total": 1,
        "therapists": [
            {"id": "t1", "name": "Dr t1", "available": True, "busy": False},
            {"id": "t2", "name": "Dr t2", "available": False, "busy": True},
            {"id": "t3", "name": "Dr t3", "available": False, "busy": True},
            {"id": "t4", "name": "", "available": False, "busy": False},
        ],
        "therapists_total": 4,
    }
    assert "private words" not in repr(body)  # notes never show

    # The session ends and the claim is released: both lists empty again.
    await s.end_session("s4", "ended_by_client", T0 + 40)
    await s.release("r3", "t2", T0 + 41)
    later = (await s.live(T0 + 42)).public()
    assert (later["claims"], later["sessions"]) == ([], [])
    assert [r["id"] for r in later["waiting"]] == ["r2", "r1", "r3"]
    assert [t["busy"] for t in later["therapists"]] == [False] * 4


async def test_a_ready_session_has_no_start_yet(pool_store: PoolStore) -> None:
    await pool_store.create(DRAFT, "c1", "r1", T0)
    await pool_store.claim("r1", therapist("t1"), T0 + 1)
    await pool_store.accept("r1", "c1", "s1", T0 + 2)
    (session,) = (await pool_store.live(T0 + 3)).public()["sessions"]
    assert (session["state"], session["started_at"]) == ("ready", None)


async def test_live_lists_are_bounded_with_their_totals(pool_store: PoolStore) -> None:
    n = LIVE_LIMIT + 5
    for i in range(n):
        await pool_store.create(DRAFT, f"c{i}", f"r{i:03d}", T0 + i)
    live = await pool_store.live(T0 + n)
    assert live.waiting_total == n
    assert len(live.waiting) == LIVE_LIMIT
    assert (live.waiting[0].id, live.waiting[-1].id) == ("r000", f"r{LIVE_LIMIT - 1:03d}")


async def test_every_server_sees_the_same_live_lists(
    pool_store: PoolStore, pool_store_factory: PoolFactory
) -> None:
    other = await pool_store_factory()
    await pool_store.connect("t1", Role.THERAPIST, "x", "srvA", T0)
    await other.create(DRAFT, "c1", "r1", T0)
    assert (await other.live(T0 + 1)).public() == (await pool_store.live(T0 + 1)).public()


# -- history -------------------------------------------------------------------------


def sample(n: int, at: float) -> dict[str, Any]:
    return {"at": at, "waiting": n, "oldest_wait_s": n + 0.5, "wait_p50_s": None}


async def test_a_bucket_keeps_its_first_sample(pool_store: PoolStore) -> None:
    b = bucket_of(T0)
    assert await pool_store.record_sample(b, sample(1, T0)) is True
    assert await pool_store.record_sample(b, sample(2, T0 + 1)) is False
    assert await pool_store.record_sample(b + 5, sample(3, T0 + 5)) is True
    assert await pool_store.history(T0 + 6) == [sample(1, T0), sample(3, T0 + 5)]


async def test_history_is_oldest_first_and_fifteen_minutes_long(pool_store: PoolStore) -> None:
    b = bucket_of(T0)
    # Recorded out of order (servers' loops are not in step): read back in order.
    for offset in (10, 0, 5):
        assert await pool_store.record_sample(b + offset, sample(offset, T0 + offset))
    assert [s["waiting"] for s in await pool_store.history(T0 + 11)] == [0, 5, 10]
    # A read 15 minutes on leaves out the buckets that started before its window...
    assert [s["waiting"] for s in await pool_store.history(T0 + HISTORY_WINDOW_S + 5)] == [5, 10]
    # ...and a sample that late forgets them for good.
    late = b + HISTORY_WINDOW_S + 10
    assert await pool_store.record_sample(late, sample(99, late))
    assert [s["waiting"] for s in await pool_store.history(T0)] == [10, 99]


async def test_history_of_a_fresh_pool_is_empty(pool_store: PoolStore) -> None:
    assert await pool_store.history(T0) == []


async def test_a_bucket_is_written_once_across_servers(
    pool_store: PoolStore, pool_store_factory: PoolFactory
) -> None:
    handles = [pool_store] + [await pool_store_factory() for _ in range(3)]
    b = bucket_of(T0)
    won = await asyncio.gather(*(h.record_sample(b, sample(i, T0)) for i, h in enumerate(handles)))
    assert sorted(won) == [False, False, False, True]
    winner = won.index(True)
    for h in handles:
        assert await h.history(T0) == [sample(winner, T0)]
