"""Scheduled care's live side (PROTOCOL.md §8): the quick-connect guard near a
booked session, and booked calls (opened as pool sessions, never billed per
minute, their booking told once when they end).

The guard's rule is pure (:func:`pool.rules.guarded`); the hub, a claim and the
texts apply it where they apply the pause on new clients. The pool's part of
booked calls is in the contract tests (tests/test_pool_contract.py); here the
dispatcher, the records and the metering around it, on a real database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from cryptography.fernet import Fernet
from hubkit import DRAFT, T0, Clock, hub_with, profile, sent
from hypothesis import given
from hypothesis import strategies as st

from core.bus import LocalBus
from core.db import Database
from core.errors import Busy, NotEligible
from core.identity import Role, User
from dispatch.guard import Guard
from dispatch.metrics import Metrics
from dispatch.service import Dispatcher, booked_session_id
from notify.contacts import Contacts
from notify.outbox import Outbox
from notify.rounds import TextPolicy, TextRounds
from notify.texts import Candidate, TextContact, recipients
from pool import rules
from pool.effects import Effect
from pool.memory import MemoryPool
from pool.model import Session, SessionState, Timeouts
from signaling.crypto import Cipher
from signaling.ice import make_provider
from signaling.metering import Metering
from signaling.records import Records
from signaling.relay import Signaling
from wallet.ledger import Ledger

MIN = 60.0


# -- the rule ------------------------------------------------------------------------------


def test_a_booking_guards_from_guard_min_before_its_start() -> None:
    start = T0 + 3600
    assert not rules.guarded(None, T0, 30)
    assert not rules.guarded(start, start - 30 * MIN - 1, 30)
    assert rules.guarded(start, start - 30 * MIN, 30)
    assert rules.guarded(start, start - 1, 30)
    assert rules.guarded(start, start, 30)
    # Past its start it guards only as long as late_min says.
    assert not rules.guarded(start, start + 1, 30)
    assert rules.guarded(start, start + 50 * MIN, 30, late_min=50)
    assert not rules.guarded(start, start + 50 * MIN + 1, 30, late_min=50)
    # A guard of 0 minutes guards the start itself alone.
    assert rules.guarded(start, start, 0) and not rules.guarded(start, start - 1, 0)


@given(
    start=st.floats(min_value=0, max_value=4e9),
    now=st.floats(min_value=0, max_value=4e9),
    guard_min=st.integers(min_value=0, max_value=24 * 60),
    late_min=st.integers(min_value=0, max_value=480),
)
def test_guarded_is_the_window_of_starts(
    start: float, now: float, guard_min: int, late_min: int
) -> None:
    lo, hi = rules.guard_window(now, guard_min, late_min)
    assert lo <= now <= hi
    assert rules.guarded(start, now, guard_min, late_min) == (lo <= start <= hi)


# -- the cache -----------------------------------------------------------------------------


class Source:
    """Bookings as ``Bookings.next_start`` sees them: therapist -> start."""

    def __init__(self, starts: dict[str, float]) -> None:
        self.starts = starts
        self.asked: list[tuple[float, float]] = []

    async def __call__(self, lo: float, hi: float) -> set[str]:
        self.asked.append((lo, hi))
        return {tid for tid, at in self.starts.items() if lo <= at <= hi}


async def test_without_a_source_nobody_is_guarded() -> None:
    guard = Guard()
    assert not guard.enabled
    assert await guard.ids(T0) == set()
    assert await guard.refresh(T0) == (set(), set())


async def test_the_guard_asks_for_the_window_and_keeps_the_answer() -> None:
    source = Source({"t1": T0 + 20 * MIN, "t2": T0 + 40 * MIN, "t3": T0 - 10 * MIN})
    guard = Guard(source, guard_min=30, late_min=15, ttl_s=5)
    assert guard.enabled
    assert await guard.ids(T0) == {"t1", "t3"}
    assert source.asked == [(T0 - 15 * MIN, T0 + 30 * MIN)]
    # Within the ttl: the same answer, no new query.
    source.starts["t2"] = T0 + 1
    assert await guard.ids(T0 + 4.9) == {"t1", "t3"}
    assert len(source.asked) == 1
    assert await guard.ids(T0 + 5) == {"t1", "t2", "t3"}
    assert len(source.asked) == 2
    # A refresh says whose guard started and whose ended.
    del source.starts["t1"]
    source.starts["t4"] = T0 + 10 * MIN
    assert await guard.refresh(T0 + 6) == ({"t4"}, {"t1"})
    assert guard.current() == {"t2", "t3", "t4"}


# -- the hub -------------------------------------------------------------------------------


async def test_a_guarded_therapist_gets_no_offer_and_an_empty_snapshot() -> None:
    store = MemoryPool(Timeouts())
    source = Source({"t1": T0 + 10 * MIN})
    guard = Guard(source, guard_min=30)
    clock = Clock()
    hub, (t1, t2) = hub_with(store, "t1", "t2", clock=clock, guarded=guard.ids)
    for conn in (t1, t2):
        await store.put_profile(conn.profile)  # type: ignore[arg-type]
    req, change = await store.create(DRAFT, "c1", "r1", T0)
    assert change is not None
    await hub.deliver([Effect("new", request=req)])
    assert [f["type"] for f in sent(t1)] == []
    assert [f["request"]["id"] for f in sent(t2)] == ["r1"]
    assert (await hub.snapshot(t1.profile))["requests"] == []
    assert [r["id"] for r in (await hub.snapshot(t2.profile))["requests"]] == ["r1"]
    # The booking is cancelled: its guard ends, and the loop's refresh gives
    # t1's console the pool as it now is.
    del source.starts["t1"]
    clock.now = T0 + 6
    started, ended = await guard.refresh(clock.now)
    assert (started, ended) == (set(), {"t1"})
    await hub.resnapshot(started | ended)
    frames = sent(t1)
    assert [f["type"] for f in frames] == ["pool.snapshot"]
    assert [r["id"] for r in frames[0]["requests"]] == ["r1"]
    assert sent(t2) == []
    # A new booking of t2's guards it from here on.
    source.starts["t2"] = T0 + 20 * MIN
    await guard.refresh(clock.now)
    req2, _ = await store.create(DRAFT, "c2", "r2", clock.now)
    await hub.deliver([Effect("new", request=req2)])
    assert [f["request"]["id"] for f in sent(t1)] == ["r2"]
    assert sent(t2) == []


# -- the dispatcher, the records, the metering ----------------------------------------------------


class World:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.clock = Clock()
        self.store = MemoryPool(Timeouts())
        self.bus: LocalBus[Effect] = LocalBus()
        self.frames: list[Effect] = []
        self.source = Source({})
        self.guard = Guard(self.source, guard_min=30, late_min=50)
        self.records = Records(db, Cipher([Fernet.generate_key().decode()]))
        self.ledger = Ledger(db, currency="GBP", therapist_share_pct=60, timezone="Europe/London")
        self.ended: list[tuple[str, bool]] = []
        self.fail_hook = False
        self.metering = Metering(
            self.ledger,
            self.store,
            self.bus,
            price_per_minute_minor=150,
            clock=self.clock,
            on_booked_end=self.booked_end,
        )
        ice = make_provider([], None, None, 600)
        self.dispatcher = Dispatcher(
            self.store,
            self.bus,
            Metrics(),
            ice,
            self.records,
            self.ledger,
            min_balance_minor=0,
            clock=self.clock,
            guarded=self.guard.ids,
        )
        self.signaling = Signaling(
            self.store, self.bus, self.records, self.metering, clock=self.clock
        )

    async def booked_end(self, booking_id: str, both_joined: bool) -> None:
        if self.fail_hook:
            raise RuntimeError("the bookings' database is down")
        self.ended.append((booking_id, both_joined))

    async def start(self) -> None:
        async def collect(effects: list[Effect]) -> None:
            self.frames.extend(effects)

        async def resync() -> None:
            return None

        await self.bus.start(collect, resync)

    def frames_to(self, user: str, ftype: str) -> list[dict[str, Any]]:
        return [e.frame for e in self.frames if e.to == user and e.frame.get("type") == ftype]


@pytest_asyncio.fixture
async def world(db: Database) -> AsyncIterator[World]:
    w = World(db)
    await w.start()
    await w.store.put_profile(profile("t1"))
    yield w


async def test_a_guarded_therapist_may_not_claim(world: World) -> None:
    await world.store.create(DRAFT, "c1", "r1", T0)
    world.source.starts["t1"] = T0 + 25 * MIN
    err = await _fails(NotEligible, world.dispatcher.claim(User("t1", Role.THERAPIST), "r1", None))
    assert "booked session" in err.message
    assert (await world.store.get("r1")).state == "waiting"  # type: ignore[union-attr]
    # Outside the guard (the booking moved away), the claim goes through.
    world.source.starts["t1"] = T0 + 31 * MIN
    world.clock.now = T0 + 10  # past the cached answer
    change = await world.dispatcher.claim(User("t1", Role.THERAPIST), "r1", None)
    assert change.after.claimed_by == "t1"


async def test_a_booked_call_opens_once_for_both_and_is_recorded(world: World) -> None:
    client = User("c1", Role.CLIENT, name="Cleo")
    session = await world.dispatcher.open_booked(client, "b1", "c1", "t1")
    assert session.id == booked_session_id("b1") == "s-b1"
    assert session.booking_id == "b1" and session.state is SessionState.READY
    # Both are told, once; the therapist's consoles count it as busy.
    for user in ("c1", "t1"):
        [ready] = world.frames_to(user, "session.ready")
        assert ready["session"]["id"] == "s-b1" and ready["session"]["booking_id"] == "b1"
    world.clock.now = T0 + 30
    again = await world.dispatcher.open_booked(User("t1", Role.THERAPIST), "b1", "c1", "t1")
    assert again == session
    assert len(world.frames_to("t1", "session.ready")) == 1
    record = await world.records.get_session("s-b1")
    assert record is not None
    assert (record.booking_id, record.request_id, record.client_name, record.therapist_name) == (
        "b1",
        "b1",
        "Cleo",
        "Dr t1",
    )
    assert record.state is SessionState.READY and record.matched_at == T0
    # The pool's busy rule: another booking of t1 cannot open meanwhile.
    await _fails(Busy, world.dispatcher.open_booked(client, "b2", "c2", "t1"))
    assert [r.id for r in await world.records.sessions_of("t1")] == ["s-b1"]


async def test_a_booked_call_is_not_billed_and_tells_its_booking_once(world: World) -> None:
    await world.ledger.topup("c1", 10_000, "ref-1", T0 - 100)
    client = User("c1", Role.CLIENT)
    await world.dispatcher.open_booked(client, "b1", "c1", "t1")
    joined: list[dict[str, Any]] = []
    await world.signaling.join("c1", "s-b1", None, joined.extend)
    world.clock.now = T0 + 10
    await world.signaling.join("t1", "s-b1", None, joined.extend)
    assert world.frames_to("c1", "session.live")
    record = await world.records.get_session("s-b1")
    assert record is not None and record.state is SessionState.LIVE
    # No funds plan: nothing to warn of, nothing runs out, however long.
    world.clock.now = T0 + 3 * 3600
    assert await world.metering.warn_due() == 0
    assert await world.metering.exhausted_due() == []
    await world.signaling.end("t1", "s-b1", ("conn", None))
    assert world.frames_to("c1", "session.ended")
    # Not charged: the wallet is as it was; the booking was told, once.
    assert await world.ledger.balance("c1") == 10_000
    assert world.ended == [("b1", True)]
    ended = await world.store.get_session("s-b1")
    assert ended is not None
    await world.signaling.finish(ended)  # a repeat (another server, a retry)
    assert await world.metering.sweep() == 0
    assert world.ended == [("b1", True)]
    assert await world.ledger.balance("c1") == 10_000


async def test_a_booked_call_nobody_else_joined_says_so(world: World) -> None:
    await world.dispatcher.open_booked(User("t1", Role.THERAPIST), "b1", "c1", "t1")
    await world.signaling.join("t1", "s-b1", None, lambda frames: None)
    world.clock.now = T0 + 600
    await world.signaling.end("t1", "s-b1", ("conn", None))
    assert world.ended == [("b1", False)]


async def test_a_failed_hook_is_called_again_by_the_sweep(world: World) -> None:
    await world.dispatcher.open_booked(User("c1", Role.CLIENT), "b1", "c1", "t1")
    world.fail_hook = True
    with pytest.raises(RuntimeError):
        await world.signaling.end("c1", "s-b1", ("conn", None))
    assert world.ended == []
    world.fail_hook = False
    world.clock.now = T0 + 60
    assert await world.metering.sweep() == 1
    assert world.ended == [("b1", False)]
    assert await world.metering.sweep() == 0


async def test_a_quick_connect_session_is_still_billed(world: World) -> None:
    await world.ledger.topup("c1", 10_000, "ref-1", T0 - 100)
    session = Session(
        id="s1",
        request_id="r1",
        client_id="c1",
        therapist_id="t1",
        state=SessionState.ENDED,
        started_at=T0,
        ended_at=T0 + 90,
        end_reason="ended_by_client",
    )
    req, _ = await world.store.create(DRAFT, "c1", "r1", T0 - 10)
    await world.records.session_matched(
        session, req, client_name=None, therapist_name=None, terms_version="v1", now=T0 - 5
    )
    await world.records.session_ended("s1", T0 + 90, "ended_by_client", 90)
    await world.metering.settle(session)
    assert await world.ledger.balance("c1") == 10_000 - 2 * 150
    assert world.ended == []


# -- texts ---------------------------------------------------------------------------------------


def test_a_guarded_therapist_is_not_texted() -> None:
    req = _waiting_request()
    contact = TextContact("t1", phone="+447700900123", sms_opt_in=True)
    free = Candidate(profile("t1"), contact)
    guarded = Candidate(profile("t1"), contact, guarded=True)
    kwargs: dict[str, Any] = {"delay_s": 0, "cooldown_s": 600, "max_per_request": 25}
    assert recipients(req, [free], T0, **kwargs) == ["t1"]
    assert recipients(req, [guarded], T0, **kwargs) == []


async def test_a_round_of_texts_skips_guarded_therapists(db: Database) -> None:
    store = MemoryPool(Timeouts())
    contacts, outbox = Contacts(db), Outbox(db)
    for tid in ("t1", "t2"):
        await store.put_profile(profile(tid))
        await contacts.update(tid, {"phone": "+447700900123", "sms_opt_in": True}, T0 - 3600)
    source = Source({"t1": T0 + 5 * MIN})
    guard = Guard(source, guard_min=30)

    async def known(therapist_id: str, client_ids: list[str]) -> set[str]:
        return set(client_ids)

    rounds = TextRounds(db, outbox, store, known, TextPolicy(), guard.ids)
    req, _ = await store.create(DRAFT, "c1", "r1", T0)
    assert await rounds.run(T0) == 1
    assert [m.recipient_id for m in await outbox.about(req.id)] == ["t2"]


# -- helpers -------------------------------------------------------------------------------------


def _waiting_request() -> Any:
    return rules.new_request(DRAFT, "r1", "c1", T0, Timeouts())


async def _fails(cls: type[Exception], aw: Any) -> Any:
    with pytest.raises(cls) as info:
        await aw
    assert type(info.value) is cls
    return info.value


async def test_the_asker_of_an_end_is_answered_when_a_repair_records_it_first(
    world: World,
) -> None:
    """Between the pool's end and the record's, the repair loop (of any server)
    may find the session ended in the pool and record it first, telling both
    sides without the asker's ref: the asker must still get its answer (found
    by the load test: 1 in 150 ``session.end`` frames went unanswered)."""
    client = User("c1", Role.CLIENT, name="Cleo")
    await world.dispatcher.open_booked(client, "b1", "c1", "t1")
    recorded = world.records.session_ended
    raced: list[str] = []

    async def repair_first(sid: str, ended_at: float, reason: str, duration_s: int) -> bool:
        if not raced:
            raced.append(sid)
            ended = await world.store.get_session(sid)
            assert ended is not None and ended.state is SessionState.ENDED
            await world.signaling.finish(ended)  # what Loops._repair does
        return await recorded(sid, ended_at, reason, duration_s)

    world.records.session_ended = repair_first  # type: ignore[method-assign]
    await world.signaling.end("c1", "s-b1", ("conn-c1", "r9"))
    assert raced == ["s-b1"]
    answers = [
        e
        for e in world.frames
        if e.to == "c1" and e.frame.get("type") == "session.ended" and e.ref == "r9"
    ]
    assert [(e.conn, e.frame["session_id"]) for e in answers] == [("conn-c1", "s-b1")]
    # The therapist was told once (by the repair), not twice.
    assert len(world.frames_to("t1", "session.ended")) == 1
