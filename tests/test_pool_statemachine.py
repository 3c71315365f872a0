"""Stateful property test of the in-process pool (``pool.memory.MemoryPool``).

Hypothesis drives random sequences of client, therapist, session, presence
and clock steps against one :class:`MemoryPool`, alongside a small model
written from PROTOCOL.md §4 and §5 with plain dicts. Each step's outcome
(success or the exact error class) is predicted by the model; after every
step the invariants of the pool are checked: one owner per request, one hold
per therapist (a claim or an open session, never both, never two), no request
lost, one active request per client, contiguous positions, final states
frozen, declines respected and ``expires_at`` in step with the state; every
session where the model says (joined, live once, held frames delivered once
and in order), an ended session frees its therapist and never changes again,
and ``open_session_of`` in step with the sessions.

``MemoryPool``'s coroutines never suspend, so each one is driven to
completion with :func:`run` instead of an event loop.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from core.errors import (
    Busy,
    Conflict,
    DispatchError,
    Forbidden,
    NotEligible,
    NotFound,
    RequestExists,
    Taken,
)
from core.identity import Role
from pool.effects import Change, effects
from pool.memory import MemoryPool
from pool.model import (
    Draft,
    EndReason,
    Hold,
    Request,
    Session,
    SessionState,
    State,
    TherapistProfile,
    Timeouts,
)
from pool.store import Claimed

_T = TypeVar("_T")

#: Short clocks so that deadlines and graces fall within a run's clock steps.
TIMEOUTS = Timeouts(claim_confirm_s=10.0, request_max_wait_s=25.0, reconnect_grace_s=1.0)
START = 1_700_000_000.0

CLIENTS = ["c1", "c2", "c3", "c4"]
PROFILES = {
    p.id: p
    for p in (
        TherapistProfile("t1", "T1", regions=("GB-ENG",), languages=("en",), topics=("anxiety",)),
        TherapistProfile(
            "t2",
            "T2",
            regions=("GB-ENG", "US-CA"),
            languages=("en", "fr"),
            topics=("anxiety", "couples"),
            works_with_minors=True,
        ),
        TherapistProfile("t3", "T3", regions=("US-CA",), languages=("en",), topics=()),
        TherapistProfile(
            "t4",
            "T4",
            regions=("GB-ENG",),
            languages=("fr", "en"),
            topics=("grief", "couples"),
            works_with_minors=True,
        ),
        TherapistProfile(
            "t5",
            "T5",
            regions=("GB-ENG", "US-CA", "FR"),
            languages=("en", "fr"),
            topics=("anxiety", "grief", "couples"),
        ),
    )
}
THERAPISTS = sorted(PROFILES)
SERVERS = ["srv-a", "srv-b"]
MISSING = "r-missing"
MISSING_SID = "s-missing"
FINAL = (State.MATCHED, State.CANCELLED, State.EXPIRED)
ACTIVE = (State.WAITING, State.CLAIMED)

drafts = st.builds(
    lambda region, language, topics, age: Draft(
        region=region,
        language=language,
        topics=tuple(topics),
        notes="n",
        age=age,
        guardian_consent=age is not None and age < 18,
    ),
    region=st.sampled_from(["GB-ENG", "GB-ENG", "US-CA", "FR"]),
    language=st.sampled_from(["en", "en", "fr"]),
    topics=st.lists(st.sampled_from(["anxiety", "couples", "grief"]), unique=True, max_size=2),
    age=st.sampled_from([None, None, 30, 16]),
)


def run(coro: Coroutine[Any, Any, _T]) -> _T:
    """Drive a coroutine that never suspends to its result."""
    try:
        coro.send(None)
    except StopIteration as stop:
        result: _T = stop.value
        return result
    coro.close()
    raise AssertionError("a MemoryPool coroutine suspended")


def qualifies(
    profile: TherapistProfile, region: str, language: str, topics: tuple[str, ...], age: int | None
) -> bool:
    """PROTOCOL.md §5 "A therapist may take a request when ...", written afresh."""
    return (
        region in profile.regions
        and language in profile.languages
        and (not topics or bool(set(topics) & set(profile.topics)))
        and (age is None or age >= 18 or profile.works_with_minors)
    )


@dataclass
class MReq:
    """The model's view of one request."""

    id: str
    client: str
    draft: Draft
    created_at: float
    state: State = State.WAITING
    claimed_by: str | None = None
    claimed_at: float | None = None
    declined: set[str] = field(default_factory=set)
    session_id: str | None = None
    reason: str | None = None

    def expires_at(self) -> float | None:
        if self.state is State.WAITING:
            return self.created_at + TIMEOUTS.request_max_wait_s
        if self.state is State.CLAIMED:
            assert self.claimed_at is not None
            return self.claimed_at + TIMEOUTS.claim_confirm_s
        return None


@dataclass
class MSess:
    """The model's view of one session."""

    id: str
    request_id: str
    client: str
    therapist: str
    state: SessionState = SessionState.READY
    joined: set[str] = field(default_factory=set)
    started_at: float | None = None
    ended_at: float | None = None
    reason: str | None = None
    #: frames held for the client / the therapist, oldest first
    held: dict[Role, list[dict[str, Any]]] = field(
        default_factory=lambda: {Role.CLIENT: [], Role.THERAPIST: []}
    )

    @property
    def open(self) -> bool:
        return self.state is not SessionState.ENDED

    def role_of(self, user: str) -> Role | None:
        if user == self.client:
            return Role.CLIENT
        if user == self.therapist:
            return Role.THERAPIST
        return None


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pool = MemoryPool(TIMEOUTS)
        self.now = START
        self.seq = 0
        self.reqs: dict[str, MReq] = {}
        self.holds: dict[str, Hold] = {}
        self.sessions: dict[str, MSess] = {}
        self.open_of: dict[str, str] = {}  # user -> its open session (the newest)
        self.frozen_sessions: dict[str, Session] = {}
        self.idem: dict[tuple[str, str], str] = {}
        self.conns: dict[str, set[tuple[str, str]]] = {}  # user -> {(server, conn)}
        self.heartbeats: dict[str, float] = {}
        self.hung: set[str] = set()
        self.graces: dict[str, float] = {}
        self.available: set[str] = set()
        self.frozen: dict[str, Request] = {}

    # -- helpers -----------------------------------------------------------

    def _id(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}{self.seq:05d}"

    def _connected(self, user: str) -> bool:
        return bool(self.conns.get(user))

    def _outcome(
        self, expected: type[DispatchError] | None, rid: str, coro: Coroutine[Any, Any, Change]
    ) -> Change | None:
        """Run a mutating call; check it failed exactly as predicted and changed nothing,
        or that it succeeded and its Change describes the stored before/after."""
        op = getattr(coro, "__name__", "call")
        event(f"{op}: {expected.__name__ if expected else 'ok'}")
        before = run(self.pool.get(rid))
        if expected is not None:
            with pytest.raises(DispatchError) as info:
                run(coro)
            assert type(info.value) is expected, (
                f"expected {expected.__name__}, got {type(info.value).__name__}"
            )
            assert run(self.pool.get(rid)) == before
            return None
        change = run(coro)
        assert change.before == before
        assert change.after == run(self.pool.get(rid))
        effects(change)  # must not choke on any change the pool reports
        return change

    def _lose_conn(self, user: str, member: tuple[str, str]) -> None:
        conns = self.conns.get(user)
        if not conns or member not in conns:
            return
        conns.discard(member)
        if conns:
            return
        del self.conns[user]
        self.available.discard(user)
        if user in self.holds or user in self.open_of:
            self.graces[user] = self.now + TIMEOUTS.reconnect_grace_s

    def _back_to_waiting(self, m: MReq, reason: str) -> None:
        assert m.claimed_by is not None
        if reason == "declined":
            m.declined.add(m.claimed_by)
        del self.holds[m.claimed_by]
        m.state, m.claimed_by, m.claimed_at, m.reason = State.WAITING, None, None, reason

    def _pick_rid(self, data: st.DataObject, prefer: State | None = None) -> str:
        all_rids = sorted(self.reqs)
        preferred = [r for r in all_rids if prefer is not None and self.reqs[r].state is prefer]
        return data.draw(st.sampled_from(preferred * 6 + all_rids * 2 + [MISSING]))

    def _pick_client_for(self, data: st.DataObject, rid: str) -> str:
        """Mostly the owner, sometimes anyone (who may be the owner too)."""
        m = self.reqs.get(rid)
        owner = [m.client] * 6 if m is not None else []
        return data.draw(st.sampled_from(owner + CLIENTS))

    # -- setup -------------------------------------------------------------

    @initialize(first=st.lists(drafts, min_size=3, max_size=3))
    def profiles_presence_and_requests(self, first: list[Draft]) -> None:
        for prof in PROFILES.values():
            run(self.pool.put_profile(prof))
            assert run(self.pool.get_profile(prof.id)) == prof
        for server in SERVERS:
            run(self.pool.heartbeat(server, self.now))
            self.heartbeats[server] = self.now
        # every therapist starts online and available on the first server
        for tid in THERAPISTS:
            conn = self._id("k")
            run(self.pool.connect(tid, Role.THERAPIST, conn, SERVERS[0], self.now))
            self.conns[tid] = {(SERVERS[0], conn)}
            assert run(self.pool.set_available(tid, True)) is True
            self.available.add(tid)
        # three clients are already waiting, so even short runs have work to do
        for client, d in zip(CLIENTS, first, strict=False):
            self.create(client, d, None)

    # -- clients -----------------------------------------------------------

    @rule(
        client=st.sampled_from(CLIENTS),
        draft=drafts,
        key=st.sampled_from([None, None, "k1", "k2"]),
    )
    def create(self, client: str, draft: Draft, key: str | None) -> None:
        rid = self._id("r")
        if client in self.open_of:  # in an open session: refused before anything else
            with pytest.raises(RequestExists, match="open session"):
                run(self.pool.create(draft, client, rid, self.now, key))
            assert run(self.pool.get(rid)) is None
            return
        if key is not None and (client, key) in self.idem:
            first = self.idem[(client, key)]
            req, change = run(self.pool.create(draft, client, rid, self.now, key))
            assert change is None
            assert req == run(self.pool.get(first))
            assert run(self.pool.get(rid)) is None
            return
        active = [m for m in self.reqs.values() if m.client == client and m.state in ACTIVE]
        if active:
            with pytest.raises(RequestExists):
                run(self.pool.create(draft, client, rid, self.now, key))
            assert run(self.pool.get(rid)) is None
            return
        req, change = run(self.pool.create(draft, client, rid, self.now, key))
        assert change is not None and change.before is None and change.after == req
        assert req.id == rid and req.state is State.WAITING and req.client_id == client
        assert req.created_at == self.now
        effects(change)
        self.reqs[rid] = MReq(rid, client, draft, self.now)
        if key is not None:
            self.idem[(client, key)] = rid

    @precondition(lambda self: bool(self.reqs))
    @rule(data=st.data())
    def decline(self, data: st.DataObject) -> None:
        rid = self._pick_rid(data, State.CLAIMED)
        client = self._pick_client_for(data, rid)
        m = self.reqs.get(rid)
        expected: type[DispatchError] | None = None
        if m is None or m.client != client:
            expected = NotFound
        elif m.state is not State.CLAIMED or self._past_deadline(m):
            expected = Taken
        change = self._outcome(expected, rid, self.pool.decline(rid, client, self.now))
        if change is None:
            return
        assert m is not None
        assert change.after.reason == "declined"
        self._back_to_waiting(m, "declined")

    @precondition(lambda self: bool(self.reqs))
    @rule(data=st.data())
    def accept(self, data: st.DataObject) -> None:
        rid = self._pick_rid(data, State.CLAIMED)
        client = self._pick_client_for(data, rid)
        sid = self._id("s")
        m = self.reqs.get(rid)
        expected: type[DispatchError] | None = None
        if m is None or m.client != client:
            expected = NotFound
        elif m.state is not State.CLAIMED or self._past_deadline(m):
            expected = Taken
        change = self._outcome(expected, rid, self.pool.accept(rid, client, sid, self.now))
        if change is None:
            assert run(self.pool.get_session(sid)) is None
            return
        assert m is not None
        self._accepted(m, sid, change)

    def _accepted(self, m: MReq, sid: str, change: Change) -> None:
        """The model after ``m``'s client accepted: matched, session ``sid`` open."""
        rid, client = m.id, m.client
        assert m.claimed_by is not None
        assert change.session is not None
        assert change.session.id == sid
        assert change.session.request_id == rid
        assert change.session.client_id == client
        assert change.session.therapist_id == m.claimed_by
        assert change.session.state is SessionState.READY
        m.state, m.session_id, m.reason = State.MATCHED, sid, "matched"
        self.holds[m.claimed_by] = Hold("session", sid)
        self.sessions[sid] = MSess(sid, rid, client, m.claimed_by)
        self.open_of[client] = sid
        self.open_of[m.claimed_by] = sid

    @precondition(lambda self: bool(self.reqs))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        rid = self._pick_rid(data, State.WAITING)
        client = self._pick_client_for(data, rid)
        m = self.reqs.get(rid)
        expected: type[DispatchError] | None = None
        if m is None or m.client != client:
            expected = NotFound
        elif m.state not in (State.WAITING, State.CLAIMED):
            expected = Taken
        change = self._outcome(expected, rid, self.pool.cancel(rid, client, self.now))
        if change is None:
            return
        assert m is not None
        if m.state is State.CLAIMED:
            assert m.claimed_by is not None
            del self.holds[m.claimed_by]
        m.state, m.reason = State.CANCELLED, "cancelled"

    # -- therapists --------------------------------------------------------

    def _past_deadline(self, m: Any) -> bool:
        exp = m.expires_at()
        return exp is not None and self.now >= exp

    @precondition(lambda self: bool(self.reqs) and any(self._connected(t) for t in THERAPISTS))
    @rule(data=st.data())
    def claim(self, data: st.DataObject) -> None:
        rid = self._pick_rid(data, State.WAITING)
        m = self.reqs.get(rid)
        # Only connected therapists send frames, so only they claim; mostly
        # the ones who may take the request, as the offers go to them.
        online = [t for t in THERAPISTS if self._connected(t)]
        fitting = [
            t
            for t in online
            if m is not None
            and t not in self.holds
            and qualifies(
                PROFILES[t], m.draft.region, m.draft.language, m.draft.topics, m.draft.age
            )
        ]
        tid = data.draw(st.sampled_from(fitting * 4 + online))
        hold = self.holds.get(tid)
        expected: type[DispatchError] | None = None
        if m is None or m.state in (State.CANCELLED, State.EXPIRED):
            expected = NotFound
        elif m.state is State.WAITING and self._past_deadline(m):
            expected = NotFound  # due but not yet fired: already counts as expired
        elif hold is not None:
            expected = Taken if hold == Hold("claim", rid) else Busy
        elif tid in m.declined or not qualifies(
            PROFILES[tid], m.draft.region, m.draft.language, m.draft.topics, m.draft.age
        ):
            expected = NotEligible
        elif m.state is not State.WAITING:
            expected = Claimed  # "taken", with the request as the pool found it
        change = self._outcome(expected, rid, self.pool.claim(rid, PROFILES[tid], self.now))
        if change is None:
            return
        assert m is not None
        assert change.therapist == PROFILES[tid]
        m.state, m.claimed_by, m.claimed_at, m.reason = State.CLAIMED, tid, self.now, None
        self.holds[tid] = Hold("claim", rid)

    @precondition(lambda self: bool(self.reqs))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        claimers = sorted(t for t, h in self.holds.items() if h.kind == "claim")
        tid = data.draw(st.sampled_from(claimers * 3 + THERAPISTS))
        rid = self._pick_rid(data, State.CLAIMED)
        hold = self.holds.get(tid)
        if hold is not None and hold.kind == "claim" and data.draw(st.booleans()):
            rid = hold.id  # mostly release what one holds
        m = self.reqs.get(rid)
        expected: type[DispatchError] | None = None
        if m is None:
            expected = NotFound
        elif m.state is not State.CLAIMED or m.claimed_by != tid:
            expected = Forbidden
        change = self._outcome(expected, rid, self.pool.release(rid, tid, self.now))
        if change is None:
            return
        assert m is not None
        assert change.after.reason == "released"
        self._back_to_waiting(m, "released")

    # -- sessions ----------------------------------------------------------

    def _matchable(self) -> list[tuple[str, str]]:
        """(waiting request, connected idle therapist who may take it) pairs."""
        return [
            (m.id, t)
            for m in sorted(self.reqs.values(), key=lambda m: m.id)
            if m.state is State.WAITING and not self._past_deadline(m)
            for t in THERAPISTS
            if self._connected(t)
            and t not in self.holds
            and t not in m.declined
            and qualifies(
                PROFILES[t], m.draft.region, m.draft.language, m.draft.topics, m.draft.age
            )
        ]

    @precondition(
        lambda self: not any(ms.open for ms in self.sessions.values()) and bool(self._matchable())
    )
    @rule(data=st.data())
    def match(self, data: st.DataObject) -> None:
        """While no session is open, a therapist claims and the client accepts
        straight away: a session opens (the claim and accept rules reach this
        only now and then; only while none is open, so that claims keep
        timing out and being lost as often as before)."""
        rid, tid = data.draw(st.sampled_from(self._matchable()))
        m = self.reqs[rid]
        claimed = self._outcome(None, rid, self.pool.claim(rid, PROFILES[tid], self.now))
        assert claimed is not None and claimed.therapist == PROFILES[tid]
        m.state, m.claimed_by, m.claimed_at, m.reason = State.CLAIMED, tid, self.now, None
        self.holds[tid] = Hold("claim", rid)
        sid = self._id("s")
        change = self._outcome(None, rid, self.pool.accept(rid, m.client, sid, self.now))
        assert change is not None
        self._accepted(m, sid, change)

    def _pick_sid(self, data: st.DataObject) -> str:
        """Mostly an open session, sometimes an ended one or one that never existed."""
        open_sids = sorted(sid for sid, ms in self.sessions.items() if ms.open)
        return data.draw(st.sampled_from(open_sids * 6 + sorted(self.sessions) + [MISSING_SID]))

    def _pick_user_for(self, data: st.DataObject, sid: str) -> str:
        """Mostly a participant, sometimes anyone (who may be a participant too)."""
        ms = self.sessions.get(sid)
        mine = [ms.client, ms.therapist] * 4 if ms is not None else []
        return data.draw(st.sampled_from(mine + CLIENTS + THERAPISTS))

    def _session_error(self, sid: str, user: str) -> type[DispatchError] | None:
        ms = self.sessions.get(sid)
        if ms is None or not ms.open:
            return NotFound
        if ms.role_of(user) is None:
            return Forbidden
        return None

    def _check_session(self, sid: str) -> None:
        """The stored session is the model's."""
        ms = self.sessions[sid]
        got = run(self.pool.get_session(sid))
        assert got is not None
        assert (got.id, got.request_id, got.client_id, got.therapist_id) == (
            sid,
            ms.request_id,
            ms.client,
            ms.therapist,
        )
        assert got.state is ms.state
        assert got.joined == frozenset(ms.joined)
        assert (got.started_at, got.ended_at, got.end_reason) == (
            ms.started_at,
            ms.ended_at,
            ms.reason,
        )

    @precondition(lambda self: bool(self.sessions))
    @rule(data=st.data())
    def join_session(self, data: st.DataObject) -> None:
        sid = self._pick_sid(data)
        user = self._pick_user_for(data, sid)
        expected = self._session_error(sid, user)
        event(f"join_session: {expected.__name__ if expected else 'ok'}")
        before = run(self.pool.get_session(sid))
        if expected is not None:
            with pytest.raises(DispatchError) as info:
                run(self.pool.join_session(sid, user, self.now))
            assert type(info.value) is expected
            assert run(self.pool.get_session(sid)) == before
            return
        ms = self.sessions[sid]
        role = ms.role_of(user)
        assert role is not None
        session, went_live, frames = run(self.pool.join_session(sid, user, self.now))
        ms.joined.add(user)
        lights = ms.state is SessionState.READY and {ms.client, ms.therapist} <= ms.joined
        if lights:
            ms.state, ms.started_at = SessionState.LIVE, self.now
        event(f"join_session: went live {lights}, {len(frames)} held")
        assert went_live is lights
        assert frames == ms.held[role], "held frames lost, repeated or out of order"
        ms.held[role] = []
        assert session == run(self.pool.get_session(sid))
        self._check_session(sid)

    @precondition(lambda self: bool(self.sessions))
    @rule(data=st.data(), max_held=st.sampled_from([1, 3, 256]))
    def pass_or_hold(self, data: st.DataObject, max_held: int) -> None:
        sid = self._pick_sid(data)
        user = self._pick_user_for(data, sid)
        frame = {"type": "rtc.signal", "session_id": sid, "data": {"seq": self._id("f")}}
        expected = self._session_error(sid, user)
        ms = self.sessions.get(sid)
        if expected is None:
            assert ms is not None
            peer_role = Role.THERAPIST if ms.role_of(user) is Role.CLIENT else Role.CLIENT
            peer = ms.client if peer_role is Role.CLIENT else ms.therapist
            if peer not in ms.joined and len(ms.held[peer_role]) >= max_held:
                expected = Conflict
        event(f"pass_or_hold: {expected.__name__ if expected else 'ok'}")
        if expected is not None:
            with pytest.raises(DispatchError) as info:
                run(self.pool.pass_or_hold(sid, user, frame, max_held))
            assert type(info.value) is expected
            return
        assert ms is not None
        passed = run(self.pool.pass_or_hold(sid, user, frame, max_held))
        assert passed is (peer in ms.joined)
        if not passed:
            ms.held[peer_role].append(frame)

    @precondition(lambda self: bool(self.sessions))
    @rule(data=st.data(), reason=st.sampled_from(list(EndReason)))
    def end_session(self, data: st.DataObject, reason: EndReason) -> None:
        sid = self._pick_sid(data)
        ms = self.sessions.get(sid)
        before = run(self.pool.get_session(sid))
        got = run(self.pool.end_session(sid, reason, self.now))
        if ms is None or not ms.open:
            event("end_session: nothing to end")
            assert got is None
            assert run(self.pool.get_session(sid)) == before
            return
        event("end_session: ended")
        self._end(ms, reason, self.now)
        assert got == run(self.pool.get_session(sid))
        self._check_session(sid)

    def _end(self, ms: MSess, reason: str, at: float) -> None:
        """The model's ending: what PoolStore.end_session promises."""
        assert ms.open
        ms.state, ms.ended_at, ms.reason = SessionState.ENDED, at, reason
        ms.held = {Role.CLIENT: [], Role.THERAPIST: []}
        if self.holds.get(ms.therapist) == Hold("session", ms.id):
            del self.holds[ms.therapist]
        for user in (ms.client, ms.therapist):
            if self.open_of.get(user) == ms.id:
                del self.open_of[user]
            if user not in self.holds and user not in self.open_of:
                self.graces.pop(user, None)

    @precondition(lambda self: any(self._connected(u) for u in self.open_of))
    @rule(data=st.data())
    def drop_session_participant(self, data: st.DataObject) -> None:
        """The network goes for someone in the middle of a session."""
        self._drop(
            data.draw(st.sampled_from(sorted(u for u in self.open_of if self._connected(u))))
        )

    @rule(tid=st.sampled_from(THERAPISTS), available=st.booleans())
    def set_available(self, tid: str, available: bool) -> None:
        now_in_force = run(self.pool.set_available(tid, available))
        expected = available and self._connected(tid)
        assert now_in_force is expected
        if expected:
            self.available.add(tid)
        else:
            self.available.discard(tid)

    # -- presence ----------------------------------------------------------

    @rule(user=st.sampled_from(THERAPISTS + CLIENTS), server=st.sampled_from(SERVERS))
    def connect(self, user: str, server: str) -> None:
        conn = self._id("k")
        role = Role.THERAPIST if user in PROFILES else Role.CLIENT
        run(self.pool.connect(user, role, conn, server, self.now))
        self.conns.setdefault(user, set()).add((server, conn))
        self.graces.pop(user, None)

    @precondition(lambda self: any(self.conns.values()))
    @rule(data=st.data())
    def disconnect(self, data: st.DataObject) -> None:
        user, server, conn = data.draw(
            st.sampled_from(sorted((u, s, c) for u, cs in self.conns.items() for s, c in cs))
        )
        role = Role.THERAPIST if user in PROFILES else Role.CLIENT
        run(self.pool.disconnect(user, role, conn, server, self.now))
        self._lose_conn(user, (server, conn))

    @precondition(lambda self: any(self.conns.values()))
    @rule(data=st.data())
    def drop_user(self, data: st.DataObject) -> None:
        """A user's network goes: every connection closes, one after another."""
        online = sorted(u for u, cs in self.conns.items() if cs)
        holders = [u for u in online if u in self.holds or u in self.open_of]  # interesting
        self._drop(data.draw(st.sampled_from(holders * 4 + online)))

    def _drop(self, user: str) -> None:
        role = Role.THERAPIST if user in PROFILES else Role.CLIENT
        for server, conn in sorted(self.conns[user]):
            run(self.pool.disconnect(user, role, conn, server, self.now))
            self._lose_conn(user, (server, conn))
        assert user not in self.conns

    @precondition(
        lambda self: any(h.kind == "claim" and self._connected(t) for t, h in self.holds.items())
    )
    @rule(data=st.data())
    def drop_claim_holder(self, data: st.DataObject) -> None:
        """The network goes for a therapist in the middle of a claim."""
        holders = sorted(t for t, h in self.holds.items() if h.kind == "claim")
        self._drop(data.draw(st.sampled_from([t for t in holders if self._connected(t)])))

    @rule(server=st.sampled_from(SERVERS))
    def heartbeat(self, server: str) -> None:
        """A server beats (and, if it had hung, beats again from now on)."""
        run(self.pool.heartbeat(server, self.now))
        self.heartbeats[server] = self.now
        self.hung.discard(server)

    @rule(server=st.sampled_from(SERVERS))
    def hang(self, server: str) -> None:
        """A server stops beating; its connections die when the others reap it."""
        self.hung.add(server)

    @rule(dead_after=st.sampled_from([0.5, 3.0, 10.0]))
    def reap_servers(self, dead_after: float) -> None:
        dead = run(self.pool.reap_servers(self.now, dead_after))
        event(f"reap_servers: {len(dead)} dead")
        expected = {s for s, at in self.heartbeats.items() if at < self.now - dead_after}
        assert set(dead) == expected and len(dead) == len(expected)
        for server in sorted(expected):
            del self.heartbeats[server]
            for user in sorted(self.conns):
                for member in sorted(self.conns.get(user, set())):
                    if member[0] == server:
                        self._lose_conn(user, member)

    # -- clock -------------------------------------------------------------

    @rule(dt=st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 25.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(dt=st.sampled_from([0.5, 1.0, 3.0, 10.0]))
    def tick(self, dt: float) -> None:
        """What the servers' loops do: time passes, live servers beat, everything due fires."""
        self.advance(dt)
        for server in SERVERS:
            if server not in self.hung:
                self.heartbeat(server)
        self.fire_due(100)

    @rule(limit=st.sampled_from([1, 2, 100]))
    def fire_due(self, limit: int) -> None:
        changes = run(self.pool.fire_due(self.now, limit))
        assert len(changes) <= limit
        predicted = self._predict_fire_due() if limit >= 100 else None
        seen: set[str] = set()
        for change in changes:
            if isinstance(change, Session):
                self._fired_session(change)
                continue
            effects(change)
            rid = change.after.id
            event(f"fire_due: {change.after.reason}")
            assert rid not in seen, "one request changed twice by one fire_due"
            seen.add(rid)
            m = self.reqs[rid]
            assert change.before is not None and change.before.state is m.state
            if change.lost_therapist is None:
                # a deadline: it was due and the request expires for the right reason
                assert change.before.expires_at is not None
                assert change.before.expires_at <= self.now
                assert change.after.state is State.EXPIRED
                want = "no_therapist" if m.state is State.WAITING else "client_no_response"
                assert change.after.reason == want
                if m.state is State.CLAIMED:
                    assert m.claimed_by is not None
                    del self.holds[m.claimed_by]
                m.state, m.reason = State.EXPIRED, want
            else:
                # a grace: the claimer stayed away past it, the request waits again
                tid = change.lost_therapist
                assert m.state is State.CLAIMED and m.claimed_by == tid
                assert not self._connected(tid)
                assert tid in self.graces and self.graces[tid] <= self.now
                assert change.after.state is State.WAITING
                assert change.after.reason == "therapist_lost"
                del self.graces[tid]
                self._back_to_waiting(m, "therapist_lost")
        if predicted is not None:
            got = {
                (c.id, c.state, c.end_reason)
                if isinstance(c, Session)
                else (c.after.id, c.after.state, c.after.reason)
                for c in changes
            }
            assert got == predicted
            # Nothing due is left behind, save requests that came back to
            # waiting in this very call with their original deadline past.
            lost_now = {c.after.id for c in changes if isinstance(c, Change) and c.lost_therapist}
            for m in self.reqs.values():
                exp = m.expires_at()
                assert exp is None or exp > self.now or m.id in lost_now, m.id
            # An unlimited call forgets every due grace; none still guards a claim.
            for user, due in list(self.graces.items()):
                if due <= self.now:
                    hold = self.holds.get(user)
                    assert hold is None or hold.kind != "claim"
                    assert user not in self.open_of, "a due grace left a session open"
                    del self.graces[user]

    def _fired_session(self, session: Session) -> None:
        """A session fire_due ended: a participant stayed away past its grace."""
        ms = self.sessions[session.id]
        event("fire_due: peer_lost")
        assert ms.open, "an ended session ended again"
        lost = [
            u
            for u in (ms.client, ms.therapist)
            if self.open_of.get(u) == ms.id
            and not self._connected(u)
            and self.graces.get(u, self.now + 1) <= self.now
        ]
        assert lost, "a session ended with no participant away past the grace"
        self._end(ms, "peer_lost", self.now)
        assert session == run(self.pool.get_session(session.id))
        self._check_session(session.id)

    def _predict_fire_due(self) -> set[tuple[str, State | SessionState, str | None]]:
        """What an unlimited fire_due must do: every due deadline, then every due grace."""
        out: set[tuple[str, State | SessionState, str | None]] = set()
        expiring: set[str] = set()
        for m in self.reqs.values():
            exp = m.expires_at()
            if exp is not None and exp <= self.now:
                reason = "no_therapist" if m.state is State.WAITING else "client_no_response"
                out.add((m.id, State.EXPIRED, reason))
                expiring.add(m.id)
        for user, due in self.graces.items():
            hold = self.holds.get(user)
            lost = due <= self.now and hold is not None and hold.kind == "claim"
            if lost and hold is not None and hold.id not in expiring:
                out.add((hold.id, State.WAITING, "therapist_lost"))
            elif due <= self.now and user in self.open_of:
                out.add((self.open_of[user], SessionState.ENDED, "peer_lost"))
        return out

    # -- invariants --------------------------------------------------------

    @invariant()
    def every_request_is_where_the_model_says(self) -> None:
        for rid, m in self.reqs.items():
            req = run(self.pool.get(rid))
            assert req is not None, f"request {rid} lost"
            assert req.state is m.state, (rid, req.state, m.state)
            assert req.client_id == m.client
            assert req.created_at == m.created_at
            assert req.declined == frozenset(m.declined)
            assert req.expires_at == m.expires_at(), (rid, req.state)
            if m.state is State.CLAIMED:
                assert req.claimed_by == m.claimed_by and req.claimed_at == m.claimed_at
                assert req.claimed_by not in req.declined
            if m.state is State.WAITING:
                assert req.claimed_by is None
            if m.state is State.MATCHED:
                assert req.session_id == m.session_id and req.session_id is not None
                sess = run(self.pool.get_session(req.session_id))
                assert sess is not None
                assert (sess.request_id, sess.client_id, sess.therapist_id) == (
                    rid,
                    m.client,
                    req.claimed_by,
                )
            if m.state in (State.CANCELLED, State.EXPIRED, State.MATCHED):
                assert req.reason == m.reason
        assert run(self.pool.get(MISSING)) is None

    @invariant()
    def final_states_never_change(self) -> None:
        for rid, m in self.reqs.items():
            req = run(self.pool.get(rid))
            assert req is not None
            if rid in self.frozen:
                assert req == self.frozen[rid], f"final request {rid} changed"
            elif m.state in FINAL:
                self.frozen[rid] = req

    @invariant()
    def waiting_queue_and_positions(self) -> None:
        queue = run(self.pool.waiting())
        ids = [r.id for r in queue]
        expected = sorted(
            (m for m in self.reqs.values() if m.state is State.WAITING),
            key=lambda m: (m.created_at, m.id),
        )
        assert ids == [m.id for m in expected]
        assert len(set(ids)) == len(ids)
        assert all(r.state is State.WAITING for r in queue)
        assert [r.created_at for r in queue] == sorted(r.created_at for r in queue)
        positions = run(self.pool.positions([*self.reqs, MISSING]))
        for i, rid in enumerate(ids, start=1):
            assert positions[rid] == i
            assert run(self.pool.position(rid)) == i
            req = run(self.pool.get(rid))
            assert req is not None and req.public(i)["position"] == i
        for rid, m in self.reqs.items():
            if m.state is not State.WAITING:
                assert positions[rid] is None
        assert positions[MISSING] is None

    @invariant()
    def one_owner_per_request_and_one_hold_per_therapist(self) -> None:
        claimers: dict[str, list[str]] = {}
        for tid in THERAPISTS:
            hold = run(self.pool.hold_of(tid))
            assert hold == self.holds.get(tid), (tid, hold, self.holds.get(tid))
            if hold is not None and hold.kind == "claim":
                claimers.setdefault(hold.id, []).append(tid)
                req = run(self.pool.get(hold.id))
                assert req is not None and req.state is State.CLAIMED
                assert req.claimed_by == tid
            if hold is not None and hold.kind == "session":
                sess = run(self.pool.get_session(hold.id))
                assert sess is not None and sess.therapist_id == tid
                assert sess.state in (SessionState.READY, SessionState.LIVE)
        assert all(len(ts) == 1 for ts in claimers.values())
        per_therapist: dict[str, int] = {}
        for rid in self.reqs:
            req = run(self.pool.get(rid))
            assert req is not None
            if req.state is State.CLAIMED:
                assert req.claimed_by is not None
                assert claimers.get(rid) == [req.claimed_by]
                per_therapist[req.claimed_by] = per_therapist.get(req.claimed_by, 0) + 1
        for ms in self.sessions.values():
            if ms.open:
                per_therapist[ms.therapist] = per_therapist.get(ms.therapist, 0) + 1
                assert self.holds.get(ms.therapist) == Hold("session", ms.id)
            else:  # an ended session frees its therapist
                assert run(self.pool.hold_of(ms.therapist)) != Hold("session", ms.id)
        assert all(n <= 1 for n in per_therapist.values()), per_therapist

    @invariant()
    def sessions_where_the_model_says(self) -> None:
        for sid, ms in self.sessions.items():
            self._check_session(sid)
            got = run(self.pool.get_session(sid))
            assert got is not None
            if sid in self.frozen_sessions:
                assert got == self.frozen_sessions[sid], f"ended session {sid} changed"
            elif not ms.open:
                self.frozen_sessions[sid] = got
            if ms.state is SessionState.LIVE:
                assert {ms.client, ms.therapist} <= ms.joined
        assert run(self.pool.get_session(MISSING_SID)) is None

    @invariant()
    def open_session_of_is_in_step(self) -> None:
        for user in CLIENTS + THERAPISTS:
            got = run(self.pool.open_session_of(user))
            want = self.open_of.get(user)
            assert (got.id if got is not None else None) == want, user
            if got is not None:
                assert got.state in (SessionState.READY, SessionState.LIVE)
                assert user in (got.client_id, got.therapist_id)

    @invariant()
    def one_active_request_per_client(self) -> None:
        for client in CLIENTS:
            active = [
                m.id
                for m in self.reqs.values()
                if m.client == client and m.state in (State.WAITING, State.CLAIMED)
            ]
            assert len(active) <= 1
            got = run(self.pool.active_request_of(client))
            assert (got.id if got is not None else None) == (active[0] if active else None)

    @invariant()
    def presence_and_stats(self) -> None:
        for tid in THERAPISTS:
            assert run(self.pool.is_available(tid)) is (tid in self.available)
        stats = run(self.pool.stats(self.now))
        online = {t for t in THERAPISTS if self._connected(t)}
        assert stats.waiting == sum(m.state is State.WAITING for m in self.reqs.values())
        assert stats.claimed == sum(m.state is State.CLAIMED for m in self.reqs.values())
        assert stats.therapists_online == len(online)
        assert stats.therapists_available == len(self.available & online)
        assert stats.therapists_busy == len(self.holds)


PoolMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    # A step's rule is drawn among those whose precondition holds; hypothesis
    # counts the redraws as filtering, which is expected here, not a smell.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestPoolMachine = PoolMachine.TestCase


# -- fixed scenarios -------------------------------------------------------
# The machine above reaches these paths only now and then; these pin them.

GRACE = TIMEOUTS.reconnect_grace_s


def _matched_pool() -> tuple[MemoryPool, str]:
    """t1 on srv-a has just been matched with c1; returns the pool and the session id."""
    pool = MemoryPool(TIMEOUTS)
    run(pool.connect("t1", Role.THERAPIST, "k1", "srv-a", START))
    run(pool.create(Draft("GB-ENG", "en"), "c1", "r1", START))
    run(pool.claim("r1", PROFILES["t1"], START + 1))
    run(pool.accept("r1", "c1", "s1", START + 2))
    assert run(pool.hold_of("t1")) == Hold("session", "s1")
    return pool, "s1"


def _changes(fired: list[Change | Session]) -> list[Change]:
    """The entries of a fire_due that ends no session: all requests' Changes."""
    changes = [c for c in fired if isinstance(c, Change)]
    assert changes == fired, fired
    return changes


def _claimed_pool() -> MemoryPool:
    pool = MemoryPool(TIMEOUTS)
    run(pool.heartbeat("srv-a", START))
    run(pool.connect("t1", Role.THERAPIST, "k1", "srv-a", START))
    run(pool.create(Draft("GB-ENG", "en"), "c1", "r1", START))
    run(pool.claim("r1", PROFILES["t1"], START + 1))
    return pool


def test_reconnect_within_grace_keeps_the_claim() -> None:
    pool = _claimed_pool()
    run(pool.disconnect("t1", Role.THERAPIST, "k1", "srv-a", START + 2))
    run(pool.connect("t1", Role.THERAPIST, "k2", "srv-b", START + 2 + GRACE / 2))
    assert run(pool.fire_due(START + 2 + GRACE * 2)) == []
    req = run(pool.get("r1"))
    assert req is not None and req.state is State.CLAIMED and req.claimed_by == "t1"
    assert run(pool.hold_of("t1")) == Hold("claim", "r1")


def test_one_of_two_connections_closing_arms_no_grace() -> None:
    pool = _claimed_pool()
    run(pool.connect("t1", Role.THERAPIST, "k2", "srv-b", START + 1))
    run(pool.disconnect("t1", Role.THERAPIST, "k1", "srv-a", START + 2))
    # closing a connection the pool never saw changes nothing either
    run(pool.disconnect("t1", Role.THERAPIST, "k9", "srv-a", START + 2))
    run(pool.disconnect("t9", Role.THERAPIST, "k9", "srv-a", START + 2))
    assert run(pool.fire_due(START + 2 + GRACE)) == []
    assert run(pool.hold_of("t1")) == Hold("claim", "r1")


def test_reaped_server_loses_the_claim_after_the_grace() -> None:
    pool = _claimed_pool()
    assert run(pool.reap_servers(START + 5, dead_after_s=3)) == ["srv-a"]
    assert run(pool.fire_due(START + 5 + GRACE / 2)) == []
    changes = _changes(run(pool.fire_due(START + 5 + GRACE)))
    assert [(c.after.id, c.after.state, c.after.reason, c.lost_therapist) for c in changes] == [
        ("r1", State.WAITING, "therapist_lost", "t1")
    ]
    assert run(pool.hold_of("t1")) is None
    assert run(pool.position("r1")) == 1
    req = run(pool.get("r1"))
    assert req is not None and req.expires_at == START + TIMEOUTS.request_max_wait_s
    assert "t1" not in req.declined  # lost, not declined: t1 may claim it again
    run(pool.connect("t1", Role.THERAPIST, "k2", "srv-b", START + 7))
    assert run(pool.claim("r1", PROFILES["t1"], START + 7)).after.claimed_by == "t1"


def test_fire_due_respects_its_limit_and_leaves_the_rest_for_the_next_call() -> None:
    pool = MemoryPool(TIMEOUTS)
    for i, client in enumerate(CLIENTS[:3]):
        run(pool.create(Draft("GB-ENG", "en"), client, f"r{i}", START + i))
    late = START + 2 + TIMEOUTS.request_max_wait_s
    first = _changes(run(pool.fire_due(late, limit=2)))
    assert [c.after.id for c in first] == ["r0", "r1"]  # oldest deadline first
    assert [r.id for r in run(pool.waiting())] == ["r2"]
    second = _changes(run(pool.fire_due(late, limit=2)))
    assert [(c.after.id, c.after.reason) for c in second] == [("r2", "no_therapist")]
    assert run(pool.fire_due(late, limit=2)) == []


def test_session_ends_when_a_participant_stays_away_past_the_grace() -> None:
    pool, sid = _matched_pool()
    run(pool.disconnect("t1", Role.THERAPIST, "k1", "srv-a", START + 3))
    assert run(pool.fire_due(START + 3 + GRACE - 0.5)) == []
    [fired] = run(pool.fire_due(START + 3 + GRACE))
    assert isinstance(fired, Session) and fired.id == sid
    sess = run(pool.get_session(sid))
    assert sess == fired
    assert sess is not None
    assert sess.state is SessionState.ENDED
    assert sess.end_reason == "peer_lost"
    assert run(pool.open_session_of("t1")) is None
    assert run(pool.hold_of("t1")) is None
