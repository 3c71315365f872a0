"""The in-process pool: the embedded default for a single server.

An asyncio program runs one coroutine at a time, and no method here awaits
between reading and writing, so every method is atomic by construction. It
applies :mod:`pool.rules` to plain dictionaries.
"""

from __future__ import annotations

import bisect
import copy
from typing import Any

from core.errors import Conflict, Forbidden, NotFound, RequestExists, Taken
from core.identity import Role
from pool import rules
from pool.effects import Change
from pool.live import (
    HISTORY_WINDOW_S,
    LIVE_LIMIT,
    LiveClaim,
    LiveRequest,
    LiveSession,
    LiveTherapist,
    PoolLive,
)
from pool.model import (
    ACTIVE_STATES,
    IN_SESSION,
    NOT_A_PARTICIPANT,
    TOO_MANY_HELD,
    Draft,
    EndReason,
    Hold,
    OfferCandidate,
    PoolStats,
    Request,
    Session,
    SessionState,
    State,
    TherapistProfile,
    Timeouts,
    open_session_for,
    pack_frame,
    unpack_frame,
)
from pool.store import Announce, Claimed

_IDEMPOTENCY_TTL_S = 24 * 3600.0
_STATS_WINDOW_S = 15 * 60.0


class MemoryPool:
    def __init__(self, timeouts: Timeouts | None = None) -> None:
        self.timeouts = timeouts or Timeouts()
        self._profiles: dict[str, TherapistProfile] = {}
        self._requests: dict[str, Request] = {}
        self._waiting: list[tuple[float, str]] = []  # sorted (created_at, id)
        self._active_by_client: dict[str, str] = {}
        self._idem: dict[tuple[str, str], tuple[str, float]] = {}
        self._holds: dict[str, Hold] = {}
        self._sessions: dict[str, Session] = {}
        self._open_session_by_user: dict[str, str] = {}
        #: (session id, role of the addressee) -> frames held for it, packed.
        self._held: dict[tuple[str, Role], list[bytes]] = {}
        self._conns: dict[str, set[str]] = {}  # user -> {"server|conn"}
        self._server_conns: dict[str, set[tuple[str, str]]] = {}  # server -> {(user, conn)}
        self._roles: dict[str, Role] = {}
        self._available: set[str] = set()
        self._graces: dict[str, float] = {}  # user -> due
        self._servers: dict[str, float] = {}
        self._events: dict[str, list[float]] = {
            "created": [],
            "matched": [],
            "expired": [],
            "cancelled": [],
        }
        self._waits: list[tuple[float, float]] = []  # (matched_at, wait_s)
        self._samples: dict[int, dict[str, Any]] = {}  # stats history: bucket -> sample
        self._last_claim: dict[str, float] = {}  # therapist -> when it last claimed
        #: The due-widening index: sorted (widened_at, id) of the requests
        #: offered to a few, waiting or claimed (a claimed one is skipped by
        #: due_widenings and keeps its widened_at for when it waits again),
        #: and id -> its widened_at there.
        self._widening: list[tuple[float, str]] = []
        self._widening_at: dict[str, float] = {}

    # -- profiles ----------------------------------------------------------
    async def put_profile(self, profile: TherapistProfile) -> None:
        self._profiles[profile.id] = profile

    async def get_profile(self, therapist_id: str) -> TherapistProfile | None:
        return self._profiles.get(therapist_id)

    # -- requests ----------------------------------------------------------
    async def create(
        self,
        draft: Draft,
        client_id: str,
        request_id: str,
        now: float,
        idempotency_key: str | None = None,
        announce: Announce | None = None,
    ) -> tuple[Request, Change | None]:
        del announce  # one process: the caller's bus delivers in its own task
        if client_id in self._open_session_by_user:
            raise RequestExists(IN_SESSION)
        if idempotency_key is not None:
            hit = self._idem.get((client_id, idempotency_key))
            if hit is not None and hit[1] > now:
                return self._requests[hit[0]], None
        if client_id in self._active_by_client:
            raise RequestExists()
        req = rules.new_request(draft, request_id, client_id, now, self.timeouts)
        self._write(None, req)
        self._events["created"].append(now)
        if idempotency_key is not None:
            self._idem[(client_id, idempotency_key)] = (req.id, now + _IDEMPOTENCY_TTL_S)
        return req, Change(None, req, position=self._place(req))

    async def get(self, request_id: str) -> Request | None:
        return self._requests.get(request_id)

    async def position(self, request_id: str) -> int | None:
        req = self._requests.get(request_id)
        if req is None or req.state is not State.WAITING:
            return None
        return self._place(req)

    def _place(self, req: Request) -> int:
        """A waiting request's place in the queue, from 1."""
        return bisect.bisect_left(self._waiting, (req.created_at, req.id)) + 1

    async def positions(self, request_ids: list[str]) -> dict[str, int | None]:
        return {rid: await self.position(rid) for rid in request_ids}

    async def moved(self, last: dict[str, int | None]) -> dict[str, tuple[int, Request]]:
        out: dict[str, tuple[int, Request]] = {}
        for rid, told in last.items():
            req = self._requests.get(rid)
            if req is not None and req.state is State.WAITING:
                place = self._place(req)
                if place != told:
                    out[rid] = (place, req)
        return out

    async def waiting(self) -> list[Request]:
        return [self._requests[rid] for _, rid in self._waiting]

    async def active_request_of(self, client_id: str) -> Request | None:
        rid = self._active_by_client.get(client_id)
        return None if rid is None else self._requests[rid]

    async def claim(self, request_id: str, therapist: TherapistProfile, now: float) -> Change:
        before = self._requests.get(request_id)
        hold = self._holds.get(therapist.id)
        try:
            after = rules.claim(before, therapist, hold, now, self.timeouts)
        except Taken:
            own = hold is not None and hold.kind == "claim" and hold.id == request_id
            if before is None or own:
                raise
            raise Claimed(before) from None  # as the Redis adapter says it
        self._write(before, after)
        self._last_claim[therapist.id] = now
        return Change(before, after, therapist=therapist)

    async def offer_candidates(self, region: str) -> list[OfferCandidate]:
        return [
            OfferCandidate(self._profiles[tid], self._last_claim.get(tid))
            for tid in sorted(self._available)
            if tid in self._profiles
            and tid not in self._holds
            and region in self._profiles[tid].regions
        ]

    async def widen(
        self,
        request_id: str,
        widened_at: float,
        offered: frozenset[str] | None,
        now: float,
    ) -> Change | None:
        before = self._requests.get(request_id)
        if before is None or before.state is not State.WAITING or before.widened_at != widened_at:
            return None
        after = before.replace(offered=offered, widened_at=None if offered is None else now)
        self._write(before, after)
        return Change(before, after)

    async def due_widenings(self, upto: float, limit: int = 100) -> list[Request]:
        out: list[Request] = []
        for at, rid in self._widening:
            if at > upto or len(out) >= limit:
                break
            req = self._requests[rid]
            if req.state is State.WAITING:
                out.append(req)
        return out

    async def release(self, request_id: str, therapist_id: str, now: float) -> Change:
        before = self._requests.get(request_id)
        after = rules.release(before, therapist_id, now, self.timeouts)
        self._write(before, after)
        return Change(before, after)

    async def decline(self, request_id: str, client_id: str, now: float) -> Change:
        before = self._requests.get(request_id)
        after = rules.decline(before, client_id, now, self.timeouts)
        self._write(before, after)
        return Change(before, after)

    async def accept(self, request_id: str, client_id: str, session_id: str, now: float) -> Change:
        before = self._requests.get(request_id)
        after = rules.accept(before, client_id, session_id, now)
        assert before is not None and before.claimed_by is not None  # rules.accept checked
        session = Session(
            id=session_id,
            request_id=request_id,
            client_id=client_id,
            therapist_id=before.claimed_by,
            state=SessionState.READY,
            created_at=now,
        )
        self._sessions[session_id] = session
        self._open_session_by_user[client_id] = session_id
        self._open_session_by_user[session.therapist_id] = session_id
        self._write(before, after)
        self._events["matched"].append(now)
        self._waits.append((now, (before.claimed_at or now) - before.created_at))
        therapist = self._profiles.get(session.therapist_id)
        return Change(before, after, therapist=therapist, session=session)

    async def cancel(self, request_id: str, client_id: str, now: float) -> Change:
        before = self._requests.get(request_id)
        after = rules.cancel(before, client_id, now)
        self._write(before, after)
        self._events["cancelled"].append(now)
        return Change(before, after)

    async def fire_due(self, now: float, limit: int = 100) -> list[Change | Session]:
        changes: list[Change | Session] = []
        due = sorted(
            (r.expires_at, r.id)
            for r in self._requests.values()
            if r.state in ACTIVE_STATES and r.expires_at is not None and r.expires_at <= now
        )
        for _, rid in due[:limit]:
            before = self._requests[rid]
            after = rules.on_deadline(before, now)
            if after is not None:
                self._write(before, after)
                self._events["expired"].append(now)
                changes.append(Change(before, after))
        for user, at in sorted(self._graces.items(), key=lambda kv: kv[1]):
            if at > now or len(changes) >= limit:
                continue
            # An ending earlier in this loop may have cancelled this grace.
            if self._graces.pop(user, None) is None or self._conns.get(user):
                continue
            hold = self._holds.get(user)
            sid = self._open_session_by_user.get(user)
            if hold is not None and hold.kind == "claim":
                before = self._requests[hold.id]
                after = rules.on_therapist_lost(before, user, now, self.timeouts)
                if after is not None:
                    self._write(before, after)
                    changes.append(Change(before, after, lost_therapist=user))
            elif sid is not None and self._sessions[sid].is_open:
                changes.append(self._end(self._sessions[sid], EndReason.PEER_LOST, now))
        return changes

    # -- therapists and sessions -------------------------------------------
    async def hold_of(self, therapist_id: str) -> Hold | None:
        return self._holds.get(therapist_id)

    async def get_session(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    async def open_session_of(self, user_id: str) -> Session | None:
        sid = self._open_session_by_user.get(user_id)
        return None if sid is None else self._sessions.get(sid)

    async def open_booked_session(
        self, session_id: str, booking_id: str, client_id: str, therapist_id: str, now: float
    ) -> Session:
        existing = self._sessions.get(session_id)
        session = rules.open_booked(
            existing,
            session_id,
            booking_id,
            client_id,
            therapist_id,
            therapist_hold=self._holds.get(therapist_id),
            client_session=self._open_session_by_user.get(client_id),
            client_request=self._active_by_client.get(client_id),
            now=now,
        )
        if session is None:
            assert existing is not None  # rules.open_booked returns None only for it
            return existing
        self._sessions[session_id] = session
        self._holds[therapist_id] = Hold("session", session_id)
        self._open_session_by_user[client_id] = session_id
        self._open_session_by_user[therapist_id] = session_id
        return session

    async def join_session(
        self, session_id: str, user_id: str, now: float
    ) -> tuple[Session, bool, list[dict[str, Any]]]:
        before = open_session_for(self._sessions.get(session_id), user_id)
        after = before.joined_by(user_id, now)
        self._sessions[session_id] = after
        held = self._held.pop((session_id, before.role_of(user_id)), [])
        went_live = before.state is SessionState.READY and after.state is SessionState.LIVE
        return after, went_live, [unpack_frame(f) for f in held]

    async def pass_or_hold(
        self, session_id: str, from_user: str, frame: dict[str, Any], max_held: int = 256
    ) -> bool:
        packed = pack_frame(frame)  # first, as RedisPool must: a bad frame fails alike
        session = open_session_for(self._sessions.get(session_id), from_user)
        peer, peer_role = session.peer_of(from_user)
        if peer in session.joined:
            return True
        held = self._held.setdefault((session_id, peer_role), [])
        if len(held) >= max_held:
            raise Conflict(TOO_MANY_HELD)
        held.append(packed)
        return False

    async def end_session_by(self, session_id: str, user_id: str, now: float) -> Session | None:
        session = self._sessions.get(session_id)
        if session is None:
            raise Forbidden(NOT_A_PARTICIPANT)
        reason = rules.ended_by(session, user_id)
        if not session.is_open:
            return None
        return self._end(session, reason, now)

    async def end_session(self, session_id: str, reason: str, now: float) -> Session | None:
        session = self._sessions.get(session_id)
        if session is None or not session.is_open:
            return None
        return self._end(session, reason, now)

    def _end(self, session: Session, reason: str, now: float) -> Session:
        """Open -> ended, and let go of everything the session held."""
        sid = session.id
        after = session.ended(reason, now)
        self._sessions[sid] = after
        for role in (Role.CLIENT, Role.THERAPIST):
            self._held.pop((sid, role), None)
        tid = session.therapist_id
        if self._holds.get(tid) == Hold("session", sid):
            del self._holds[tid]
        for user in (session.client_id, tid):
            if self._open_session_by_user.get(user) == sid:
                del self._open_session_by_user[user]
            if user not in self._holds and user not in self._open_session_by_user:
                self._graces.pop(user, None)
        return after

    # -- presence ----------------------------------------------------------
    async def connect(
        self, user_id: str, role: Role, conn_id: str, server_id: str, now: float
    ) -> None:
        self._conns.setdefault(user_id, set()).add(f"{server_id}|{conn_id}")
        self._server_conns.setdefault(server_id, set()).add((user_id, conn_id))
        self._roles[user_id] = role
        self._graces.pop(user_id, None)

    async def disconnect(
        self, user_id: str, role: Role, conn_id: str, server_id: str, now: float
    ) -> None:
        self._server_conns.get(server_id, set()).discard((user_id, conn_id))
        self._drop_conn(user_id, f"{server_id}|{conn_id}", now)

    def _drop_conn(self, user_id: str, member: str, now: float) -> None:
        conns = self._conns.get(user_id)
        if conns is None:
            return
        conns.discard(member)
        if conns:
            return
        del self._conns[user_id]
        self._available.discard(user_id)
        if user_id in self._holds or user_id in self._open_session_by_user:
            self._graces[user_id] = now + self.timeouts.reconnect_grace_s

    async def set_available(self, therapist_id: str, available: bool) -> bool:
        if available and therapist_id in self._conns:
            self._available.add(therapist_id)
        else:
            self._available.discard(therapist_id)
        return therapist_id in self._available

    async def is_available(self, therapist_id: str) -> bool:
        return therapist_id in self._available

    async def heartbeat(self, server_id: str, now: float) -> bool:
        known = server_id in self._servers
        self._servers[server_id] = now
        return known

    async def reap_servers(self, now: float, dead_after_s: float) -> list[str]:
        dead = [s for s, at in self._servers.items() if at < now - dead_after_s]
        for server_id in dead:
            del self._servers[server_id]
            for user_id, conn_id in self._server_conns.pop(server_id, set()):
                self._drop_conn(user_id, f"{server_id}|{conn_id}", now)
        return dead

    # -- operators ---------------------------------------------------------
    async def stats(self, now: float) -> PoolStats:
        since = now - _STATS_WINDOW_S
        for name, stamps in self._events.items():
            self._events[name] = [t for t in stamps if t >= since]
        self._waits = [(t, w) for t, w in self._waits if t >= since]
        waits = [w for _, w in self._waits]
        online = {u for u in self._conns if self._roles.get(u) is Role.THERAPIST}
        claimed = sum(1 for r in self._requests.values() if r.state is State.CLAIMED)
        oldest = self._requests[self._waiting[0][1]].created_at if self._waiting else now
        return PoolStats(
            waiting=len(self._waiting),
            claimed=claimed,
            therapists_online=len(online),
            therapists_available=len(self._available & online),
            therapists_busy=len(self._holds),
            oldest_wait_s=round(max(0.0, now - oldest), 3),
            wait_p50_s=rules.percentile(waits, 50),
            wait_p95_s=rules.percentile(waits, 95),
            created_15m=len(self._events["created"]),
            matched_15m=len(self._events["matched"]),
            expired_15m=len(self._events["expired"]),
            cancelled_15m=len(self._events["cancelled"]),
        )

    async def live(self, now: float) -> PoolLive:
        waiting = [LiveRequest.of(self._requests[rid]) for _, rid in self._waiting[:LIVE_LIMIT]]
        claims: list[LiveClaim] = []
        sessions: list[LiveSession] = []
        for hold in self._holds.values():
            if hold.kind == "claim":
                claim = LiveClaim.of(self._requests[hold.id])
                if claim is not None:
                    claims.append(claim)
            else:
                sessions.append(LiveSession.of(self._sessions[hold.id]))
        therapists = [
            LiveTherapist(
                u,
                p.name if (p := self._profiles.get(u)) is not None else "",
                u in self._available,
                u in self._holds,
            )
            for u in self._conns
            if self._roles.get(u) is Role.THERAPIST
        ]
        return PoolLive.build(now, waiting, len(self._waiting), claims, sessions, therapists)

    async def record_sample(self, bucket: int, sample: dict[str, Any]) -> bool:
        added = bucket not in self._samples
        if added:
            self._samples[bucket] = copy.deepcopy(sample)
        oldest = bucket - HISTORY_WINDOW_S
        for old in [b for b in self._samples if b < oldest]:
            del self._samples[old]
        return added

    async def history(self, now: float) -> list[dict[str, Any]]:
        since = now - HISTORY_WINDOW_S
        return [copy.deepcopy(self._samples[b]) for b in sorted(self._samples) if b >= since]

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    # -- internals ---------------------------------------------------------
    def _write(self, before: Request | None, after: Request) -> None:
        """Store ``after`` and keep every index in step with its state."""
        if before is None and after.id in self._requests:
            raise NotFound("request id already used")
        self._requests[after.id] = after
        key = (after.created_at, after.id)
        i = bisect.bisect_left(self._waiting, key)
        present = i < len(self._waiting) and self._waiting[i] == key
        if after.state is State.WAITING and not present:
            self._waiting.insert(i, key)
        elif after.state is not State.WAITING and present:
            del self._waiting[i]
        self._index_widening(after)
        if after.state in ACTIVE_STATES:
            self._active_by_client[after.client_id] = after.id
        elif self._active_by_client.get(after.client_id) == after.id:
            del self._active_by_client[after.client_id]
        therapist = after.claimed_by or (before.claimed_by if before is not None else None)
        if therapist is None:
            return
        hold = rules.hold_after(after)
        if hold is not None:
            self._holds[therapist] = hold
        elif self._holds.get(therapist) == Hold("claim", after.id):
            del self._holds[therapist]

    def _index_widening(self, after: Request) -> None:
        """Keep ``after`` in the due-widening index at its ``widened_at``
        while it is offered to a few and waiting or claimed; else out of it."""
        old = self._widening_at.pop(after.id, None)
        if old is not None:
            i = bisect.bisect_left(self._widening, (old, after.id))
            del self._widening[i]
        if after.widened_at is not None and after.state in ACTIVE_STATES:
            self._widening_at[after.id] = after.widened_at
            bisect.insort(self._widening, (after.widened_at, after.id))
