"""The Redis pool: the adapter that lets several servers form one service.

It keeps exactly the contract of :class:`pool.memory.MemoryPool` (the
reference; ``tests/test_pool_contract.py`` runs the same tests on both).
Every state change is one Lua script (``pool/lua``), so it happens exactly
once however many servers try at the same time; Python never reads, decides
and writes back. A script checks what ``pool.rules`` checks, in the same
order, writes the new state and every index, and returns the request as it
was *before*; Python then applies the same pure rule to that ``before`` to
build the :class:`Change` (the scripts mirror the rule, the rule names the
result), so both adapters report identical changes.

Key layout: :mod:`pool._redis_keys` (one hash tag for the whole pool).
Encoding: :mod:`pool._redis_codec`. Redis being down or restarting surfaces
as :class:`core.errors.Unavailable`.

Beyond MemoryPool: a finished request (matched, cancelled, expired) and an
ended session are kept :data:`FINISHED_TTL_S` and then forgotten, and the
15-minute stats counters are trimmed on every create as well as on every
``stats``, so Redis does not grow without bound when no operator looks.

Held ``rtc.signal`` frames are msgpack in a list per session and addressee
(``held:<sid>:client`` / ``held:<sid>:therapist``); the join that takes them
reads its reply undecoded (:meth:`RedisPool._run_raw`), so a client made with
``decode_responses=True`` gets them whole too.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import redis.exceptions
from redis.asyncio.cluster import RedisCluster
from redis.client import NEVER_DECODE

from core.errors import Forbidden, Unavailable
from core.identity import Role
from pool import _redis_client, _redis_live, _redis_scripts, rules
from pool._redis_client import DOWN_ERRORS, Client, unavailable_when_down
from pool._redis_codec import (
    decode_hold,
    decode_request,
    decode_session,
    num,
    raw,
    request_fields,
    text,
)
from pool._redis_keys import Keys
from pool.effects import Change
from pool.live import PoolLive
from pool.model import (
    NOT_A_PARTICIPANT,
    Draft,
    EndReason,
    Hold,
    OfferCandidate,
    PoolStats,
    Reason,
    Request,
    Session,
    SessionState,
    TherapistProfile,
    Timeouts,
    pack_frame,
    unpack_frame,
)
from pool.store import Announce, Claimed, PoolStore

_IDEMPOTENCY_TTL_S = 24 * 3600
#: Placeholder places in an announced creation are this or above (a MessagePack uint32).
_PLACEHOLDER_BASE = 1 << 31
_STATS_WINDOW_S = 15 * 60.0
#: Stats entries older than the window by this much are dropped on create; the
#: slack keeps ``stats`` exact for callers whose clocks lag a little.
_STATS_SLACK_S = 3600.0
#: How long a finished request stays readable (longer than an idempotency key lives).
FINISHED_TTL_S = 7 * 24 * 3600
#: Parsed profiles kept per process (RedisPool._remember), by their digest.
PROFILE_CACHE_MAX = 20_000
#: The availability index by region is built again from every available
#: therapist this often (offer_candidates.lua; adding only): what a server of
#: an earlier version, which does not keep it, made available joins then.
AVAIL_INDEX_REBUILD_S = 600
#: Any error of a ping means "not ready"; a Cluster's are not all RedisErrors.
_PING_ERRORS: tuple[type[Exception], ...] = (redis.exceptions.RedisError, *DOWN_ERRORS)


class RedisPool:
    """A :class:`pool.store.PoolStore` on Redis; one per process, shared by its tasks."""

    def __init__(self, client: Client, timeouts: Timeouts, prefix: str = "qc") -> None:
        self.timeouts = timeouts
        self._client = client
        self._keys = Keys(prefix)
        self._scripts = _redis_scripts.register(client)
        self._profiles_by_digest: dict[str, TherapistProfile] = {}

    @classmethod
    def from_url(
        cls,
        url: str,
        timeouts: Timeouts,
        *,
        prefix: str = "qc",
        max_connections: int = 64,
        pool_timeout_s: float = 5.0,
    ) -> RedisPool:
        """A pool on its own bounded connection pool (see :func:`_redis_client.connect`);
        on a Redis Cluster when ``url`` is ``redis+cluster://`` (or ``rediss+cluster://``)."""
        client = _redis_client.connect(
            url, max_connections=max_connections, pool_timeout_s=pool_timeout_s
        )
        return cls(client, timeouts, prefix=prefix)

    @property
    def client(self) -> Client:
        """The underlying client, for others that share its connections (the bus)."""
        return self._client

    async def _run(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._scripts[script](keys=keys, args=args)

    async def _run_raw(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a script whose reply carries binary data (held msgpack frames),
        never decoded, even on a client made with ``decode_responses=True``.
        Heals NOSCRIPT as ``register_script`` does."""
        registered = self._scripts[script]
        # execute_command is untyped in redis-py; NEVER_DECODE is its option
        # for a raw reply (as DUMP uses), which EVALSHA's wrapper cannot pass.
        execute = cast(Callable[..., Awaitable[Any]], self._client.execute_command)
        raw_reply: dict[str, Any] = {NEVER_DECODE: []}
        try:
            return await execute("EVALSHA", registered.sha, len(keys), *keys, *args, **raw_reply)
        except redis.exceptions.NoScriptError:
            registered.sha = await self._client.script_load(registered.script)
            return await execute("EVALSHA", registered.sha, len(keys), *keys, *args, **raw_reply)

    async def _step(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Request:
        """Run a state-changing script; the request before the change, or raise its error."""
        reply = await self._run(script, keys, args)
        code = text(reply[0])
        if code != "ok":
            raise _redis_scripts.error(code)
        before = decode_request(reply[1])
        assert before is not None  # an "ok" step always found the request
        return before

    # -- profiles ----------------------------------------------------------
    @unavailable_when_down
    async def put_profile(self, profile: TherapistProfile) -> None:
        k = self._keys
        raw = json.dumps(profile.to_record())
        await self._run(
            "put_profile",
            [k.profile(profile.id), k.profile_versions, k.available],
            [profile.id, raw, _digest(raw), k.base],
        )

    @unavailable_when_down
    async def get_profile(self, therapist_id: str) -> TherapistProfile | None:
        raw = await self._client.get(self._keys.profile(therapist_id))
        return None if raw is None else TherapistProfile.from_record(json.loads(raw))

    # -- requests ----------------------------------------------------------
    @unavailable_when_down
    async def create(
        self,
        draft: Draft,
        client_id: str,
        request_id: str,
        now: float,
        idempotency_key: str | None = None,
        announce: Announce | None = None,
    ) -> tuple[Request, Change | None]:
        """create.lua; with ``announce``, it also publishes the creation's
        effects, its place filled in (see :func:`_announcement`)."""
        k = self._keys
        req = rules.new_request(draft, request_id, client_id, now, self.timeouts)
        assert req.expires_at is not None
        keys = [
            k.req(request_id),
            k.active(client_id),
            k.waiting,
            k.deadlines,
            *k.stats,
            k.open_session(client_id),
            k.widening,
        ]
        if idempotency_key is not None:
            keys.append(k.idem(client_id, idempotency_key))
        fields = [x for pair in request_fields(req).items() for x in pair]
        args = [
            k.base,
            request_id,
            num(now),
            num(req.expires_at),
            num(now + _IDEMPOTENCY_TTL_S),
            _IDEMPOTENCY_TTL_S,
            num(now - _STATS_WINDOW_S - _STATS_SLACK_S),
            "" if req.widened_at is None else num(req.widened_at),
            *_announcement(req, announce),
            *fields,
        ]
        reply = await self._run("create", keys, args)
        code = text(reply[0])
        if code == "dup":
            first = decode_request(reply[1])
            assert first is not None
            return first, None
        if code != "ok":
            raise _redis_scripts.error(code)
        return req, Change(None, req, position=int(reply[1]) + 1, announced=int(reply[2]) == 1)

    @unavailable_when_down
    async def get(self, request_id: str) -> Request | None:
        return decode_request(await self._client.hgetall(self._keys.req(request_id)))

    async def position(self, request_id: str) -> int | None:
        return (await self.positions([request_id]))[request_id]

    @unavailable_when_down
    async def positions(self, request_ids: list[str]) -> dict[str, int | None]:
        """Every position in one round trip (``positions.lua``)."""
        if not request_ids:
            return {}
        ranks = await self._run("positions", [self._keys.waiting], request_ids)
        pairs = zip(request_ids, ranks, strict=True)
        return {rid: None if int(r) < 0 else int(r) + 1 for rid, r in pairs}

    @unavailable_when_down
    async def moved(self, last: dict[str, int | None]) -> dict[str, tuple[int, Request]]:
        """One script (``moved.lua``): the places, and the requests of those
        that moved."""
        if not last:
            return {}
        pairs = [x for rid, told in last.items() for x in (rid, "" if told is None else told)]
        flat = await self._run("moved", [self._keys.waiting], [self._keys.base, *pairs])
        out: dict[str, tuple[int, Request]] = {}
        for i in range(0, len(flat), 3):
            req = decode_request(flat[i + 2])
            if req is not None:
                out[text(flat[i])] = (int(flat[i + 1]), req)
        return out

    @unavailable_when_down
    async def waiting(self) -> list[Request]:
        flats = await self._run("waiting", [self._keys.waiting], [self._keys.base])
        return [r for r in map(decode_request, flats) if r is not None]

    @unavailable_when_down
    async def active_request_of(self, client_id: str) -> Request | None:
        k = self._keys
        return decode_request(await self._run("read_via", [k.active(client_id)], [k.req_prefix]))

    @unavailable_when_down
    async def claim(self, request_id: str, therapist: TherapistProfile, now: float) -> Change:
        k = self._keys
        # What rules.may_take weighs of the therapist goes in, and the script
        # weighs it against the request in the same step (no read before it).
        qualification = json.dumps(
            [
                list(therapist.regions),
                list(therapist.languages),
                list(therapist.topics),
                therapist.works_with_minors,
            ]
        )
        reply = await self._run(
            "claim",
            [k.req(request_id), k.holds, k.waiting, k.deadlines, k.claimed, k.last_claim],
            [
                request_id,
                therapist.id,
                qualification,
                num(now),
                num(now + self.timeouts.claim_confirm_s),
            ],
        )
        code = text(reply[0])
        if code == "taken":
            taken = decode_request(reply[1])
            assert taken is not None  # 'taken' always found the request
            raise Claimed(taken)
        if code != "ok":
            raise _redis_scripts.error(code)
        before = decode_request(reply[1])
        assert before is not None  # an "ok" step always found the request
        # The script checked and wrote the claim: describe it, do not judge it again.
        after = rules.claimed(before, therapist, now, self.timeouts)
        return Change(before, after, therapist=therapist)

    @unavailable_when_down
    async def offer_candidates(self, region: str) -> list[OfferCandidate]:
        """One script, one round trip (``offer_candidates.lua``), reading the
        region's availability index, not every available therapist."""
        k = self._keys
        rows = await self._run(
            "offer_candidates",
            [
                k.available,
                k.holds,
                k.last_claim,
                k.profile_versions,
                k.avail(region),
                k.avail_index,
            ],
            [k.base, AVAIL_INDEX_REBUILD_S],
        )
        cache = self._profiles_by_digest
        found: list[tuple[str, TherapistProfile | None, str]] = []
        unknown: list[str] = []
        for tid_, digest_, at_, raw_ in rows:
            tid, digest, at, raw = text(tid_), text(digest_), text(at_), text(raw_)
            if not digest and raw:  # stored before profiles had a digest
                digest = _digest(raw)
                if digest not in cache:
                    self._remember(digest, raw)
            profile = cache.get(digest)
            if profile is None:
                unknown.append(tid)
            found.append((tid, profile, at))
        if unknown:
            # A version this process has not parsed yet: one read for all.
            raws = await self._client.mget([k.profile(tid) for tid in unknown])
            fetched = {
                tid: self._remember(_digest(text(raw)), text(raw))
                for tid, raw in zip(unknown, raws, strict=True)
                if raw is not None
            }
            found = [(tid, p or fetched.get(tid), at) for tid, p, at in found]
        # The index may still hold one whose profile has left the region.
        return [
            OfferCandidate(profile, float(at) if at else None)
            for _, profile, at in sorted(found, key=lambda row: row[0])
            if profile is not None and region in profile.regions
        ]

    def _remember(self, digest: str, raw: str) -> TherapistProfile:
        """Parse a profile's JSON and keep it by its digest (a profile is
        immutable; a changed one has another digest). Choosing whom to offer
        a request reads every available therapist: parsing them all each
        time was most of its cost (6 us a profile)."""
        cache = self._profiles_by_digest
        if len(cache) >= PROFILE_CACHE_MAX:
            cache.clear()  # profiles changed that often are parsed again
        profile = cache[digest] = TherapistProfile.from_record(json.loads(raw))
        return profile

    @unavailable_when_down
    async def widen(
        self,
        request_id: str,
        widened_at: float,
        offered: frozenset[str] | None,
        now: float,
    ) -> Change | None:
        wider = "" if offered is None else json.dumps(sorted(offered))
        k = self._keys
        reply = await self._run(
            "widen", [k.req(request_id), k.widening], [num(widened_at), num(now), wider, request_id]
        )
        if text(reply[0]) != "ok":
            return None
        before = decode_request(reply[1])
        assert before is not None
        after = before.replace(offered=offered, widened_at=None if offered is None else now)
        return Change(before, after)

    @unavailable_when_down
    async def due_widenings(self, upto: float, limit: int = 100) -> list[Request]:
        """One script over the due-widening index (``due_widenings.lua``)."""
        k = self._keys
        flats = await self._run("due_widenings", [k.widening], [k.base, num(upto), limit])
        return [r for r in map(decode_request, flats) if r is not None]

    def _back_keys(self, request_id: str) -> list[str]:
        k = self._keys
        return [k.req(request_id), k.waiting, k.deadlines, k.claimed, k.holds]

    @unavailable_when_down
    async def release(self, request_id: str, therapist_id: str, now: float) -> Change:
        args = [request_id, therapist_id, num(now), num(self.timeouts.request_max_wait_s)]
        before = await self._step("release", self._back_keys(request_id), args)
        return Change(before, self._back(before, Reason.RELEASED, now))

    @unavailable_when_down
    async def decline(self, request_id: str, client_id: str, now: float) -> Change:
        args = [request_id, client_id, num(now), num(self.timeouts.request_max_wait_s)]
        before = await self._step("decline", self._back_keys(request_id), args)
        return Change(before, self._back(before, Reason.DECLINED, now))

    def _back(self, before: Request, reason: Reason, now: float) -> Request:
        """What release.lua / decline.lua wrote (they checked; this does not judge again)."""
        return rules.back_to_waiting(before, reason, now, self.timeouts)

    @unavailable_when_down
    async def accept(self, request_id: str, client_id: str, session_id: str, now: float) -> Change:
        k = self._keys
        reply = await self._run(
            "accept",
            [
                k.req(request_id),
                k.active(client_id),
                k.deadlines,
                k.claimed,
                k.holds,
                k.sess(session_id),
                k.open_session(client_id),
                k.stat("matched"),
                k.widening,
            ],
            [k.base, request_id, client_id, session_id, num(now), FINISHED_TTL_S],
        )
        if text(reply[0]) != "ok":
            raise _redis_scripts.error(text(reply[0]))
        before = decode_request(reply[1])
        assert before is not None  # an "ok" step always found the request
        raw = reply[2] if len(reply) > 2 else None
        therapist = TherapistProfile.from_record(json.loads(raw)) if raw else None
        after = rules.matched(before, session_id, now)  # accept.lua checked it
        assert before.claimed_by is not None  # the script found it claimed
        session = Session(
            id=session_id,
            request_id=request_id,
            client_id=client_id,
            therapist_id=before.claimed_by,
            state=SessionState.READY,
            created_at=now,
        )
        return Change(before, after, therapist=therapist, session=session)

    @unavailable_when_down
    async def cancel(self, request_id: str, client_id: str, now: float) -> Change:
        k = self._keys
        before = await self._step(
            "cancel",
            [
                k.req(request_id),
                k.active(client_id),
                k.waiting,
                k.deadlines,
                k.claimed,
                k.holds,
                k.stat("cancelled"),
                k.widening,
            ],
            [request_id, client_id, num(now), FINISHED_TTL_S],
        )
        return Change(before, rules.cancelled(before, now))  # cancel.lua checked it

    @unavailable_when_down
    async def fire_due(self, now: float, limit: int = 100) -> list[Change | Session]:
        k = self._keys
        t = self.timeouts
        fired = await self._run(
            "fire_due",
            [
                k.deadlines,
                k.waiting,
                k.claimed,
                k.holds,
                k.graces,
                k.grace_seq,
                k.stat("expired"),
                k.widening,
            ],
            [k.base, num(now), limit, num(t.request_max_wait_s), FINISHED_TTL_S],
        )
        changes: list[Change | Session] = []
        for kind, user, flat in fired:
            if text(kind) == "peer_lost":
                session = decode_session(flat)
                assert session is not None  # the script found it open
                changes.append(session.ended(EndReason.PEER_LOST, now))
                continue
            before = decode_request(flat)
            assert before is not None
            if text(kind) == "expired":
                after = rules.on_deadline(before, now)
                lost = None
            else:
                lost = text(user)
                after = rules.on_therapist_lost(before, lost, now, t)
            assert after is not None  # the script applied exactly this rule
            changes.append(Change(before, after, lost_therapist=lost))
        return changes

    # -- therapists and sessions -------------------------------------------
    @unavailable_when_down
    async def hold_of(self, therapist_id: str) -> Hold | None:
        return decode_hold(await self._client.hget(self._keys.holds, therapist_id))

    @unavailable_when_down
    async def get_session(self, session_id: str) -> Session | None:
        return decode_session(await self._client.hgetall(self._keys.sess(session_id)))

    @unavailable_when_down
    async def open_session_of(self, user_id: str) -> Session | None:
        k = self._keys
        return decode_session(
            await self._run("read_via", [k.open_session(user_id)], [k.sess_prefix])
        )

    def _session_keys(self, session_id: str) -> list[str]:
        k = self._keys
        return [k.sess(session_id), k.held(session_id, "client"), k.held(session_id, "therapist")]

    @unavailable_when_down
    async def open_booked_session(
        self, session_id: str, booking_id: str, client_id: str, therapist_id: str, now: float
    ) -> Session:
        k = self._keys
        reply = await self._run(
            "open_booked_session",
            [
                k.sess(session_id),
                k.holds,
                k.open_session(client_id),
                k.open_session(therapist_id),
                k.active(client_id),
            ],
            [session_id, booking_id, client_id, therapist_id, num(now)],
        )
        code = text(reply[0])
        if code == "existing":
            existing = decode_session(reply[1])
            assert existing is not None  # the script found it
            return existing
        if code != "ok":
            raise _redis_scripts.error(code)
        opened = rules.open_booked(
            None,
            session_id,
            booking_id,
            client_id,
            therapist_id,
            therapist_hold=None,
            client_session=None,
            client_request=None,
            now=now,
        )
        assert opened is not None  # a new session, as the script wrote it
        return opened

    @unavailable_when_down
    async def join_session(
        self, session_id: str, user_id: str, now: float
    ) -> tuple[Session, bool, list[dict[str, Any]]]:
        reply = await self._run_raw(
            "join_session", self._session_keys(session_id), [user_id, num(now)]
        )
        code = text(reply[0])
        if code != "ok":
            raise _redis_scripts.error(code)
        before = decode_session(reply[1])
        assert before is not None  # an "ok" join found the session
        after = before.joined_by(user_id, now)
        went_live = before.state is SessionState.READY and after.state is SessionState.LIVE
        return after, went_live, [unpack_frame(raw(f)) for f in reply[2]]

    @unavailable_when_down
    async def pass_or_hold(
        self, session_id: str, from_user: str, frame: dict[str, Any], max_held: int = 256
    ) -> bool:
        reply = await self._run(
            "pass_or_hold",
            self._session_keys(session_id),
            [from_user, pack_frame(frame), max_held],
        )
        code = text(reply[0])
        if code == "pass":
            return True
        if code == "held":
            return False
        raise _redis_scripts.error(code)

    @unavailable_when_down
    async def end_session_by(self, session_id: str, user_id: str, now: float) -> Session | None:
        if not user_id:  # '' tells the script "no participant to check"
            raise Forbidden(NOT_A_PARTICIPANT)
        return await self._end_session(session_id, "", now, user_id)

    @unavailable_when_down
    async def end_session(self, session_id: str, reason: str, now: float) -> Session | None:
        return await self._end_session(session_id, str(reason), now, "")

    async def _end_session(
        self, session_id: str, reason: str, now: float, by: str
    ) -> Session | None:
        k = self._keys
        reply = await self._run(
            "end_session",
            [*self._session_keys(session_id), k.holds, k.graces, k.grace_seq],
            [k.base, session_id, reason, num(now), FINISHED_TTL_S, by],
        )
        if not reply:
            return None
        if text(reply[0]) != "ok":
            raise _redis_scripts.error(text(reply[0]))
        before = decode_session(reply[1])
        assert before is not None  # an "ok" end found the session open
        return before.ended(rules.ended_by(before, by) if by else reason, now)

    # -- presence ----------------------------------------------------------
    @unavailable_when_down
    async def connect(
        self, user_id: str, role: Role, conn_id: str, server_id: str, now: float
    ) -> None:
        k = self._keys
        await self._run(
            "connect",
            [k.conns(user_id), k.server_conns(server_id), k.online, k.graces, k.grace_seq],
            [
                user_id,
                f"{server_id}|{conn_id}",
                f"{user_id}|{conn_id}",
                "1" if role is Role.THERAPIST else "0",
            ],
        )

    @unavailable_when_down
    async def disconnect(
        self, user_id: str, role: Role, conn_id: str, server_id: str, now: float
    ) -> None:
        k = self._keys
        await self._run(
            "disconnect",
            [
                k.conns(user_id),
                k.server_conns(server_id),
                k.open_session(user_id),
                *self._presence_keys(),
            ],
            [
                user_id,
                f"{server_id}|{conn_id}",
                f"{user_id}|{conn_id}",
                num(now + self.timeouts.reconnect_grace_s),
            ],
        )

    def _presence_keys(self) -> list[str]:
        """The indexes ``drop_conn`` (``_lib.lua``) keeps, in the scripts' KEYS order."""
        k = self._keys
        return [k.available, k.online, k.holds, k.graces, k.grace_seq, k.seq]

    @unavailable_when_down
    async def set_available(self, therapist_id: str, available: bool) -> bool:
        k = self._keys
        now_available = await self._run(
            "set_available",
            [k.available, k.conns(therapist_id), k.profile(therapist_id)],
            [therapist_id, "1" if available else "0", k.base],
        )
        return bool(now_available)

    @unavailable_when_down
    async def is_available(self, therapist_id: str) -> bool:
        return bool(await self._client.sismember(self._keys.available, therapist_id))

    @unavailable_when_down
    async def heartbeat(self, server_id: str, now: float) -> bool:
        k = self._keys
        known = await self._run(
            "heartbeat", [k.servers, k.server_seq, k.seq], [server_id, num(now)]
        )
        return bool(known)

    @unavailable_when_down
    async def reap_servers(self, now: float, dead_after_s: float) -> list[str]:
        k = self._keys
        dead = await self._run(
            "reap_servers",
            [k.servers, k.server_seq, *self._presence_keys()],
            [k.base, num(now - dead_after_s), num(now + self.timeouts.reconnect_grace_s)],
        )
        return [text(s) for s in dead]

    # -- operators ---------------------------------------------------------
    @unavailable_when_down
    async def stats(self, now: float) -> PoolStats:
        """One round trip, one snapshot (``stats.lua``): trims the 15-minute
        windows and reads."""
        k = self._keys
        reply = await self._run(
            "stats",
            [*k.stats, k.waiting, k.claimed, k.online, k.available, k.holds],
            [f"({num(now - _STATS_WINDOW_S)}"],
        )
        created, matched, expired, cancelled = (int(n) for n in reply[:4])
        matched_members, waiting, claimed, online, available, busy, oldest = reply[4:]
        # st:matched members are "<request id>|<wait seconds>".
        waits = [float(text(m).rsplit("|", 1)[1]) for m in matched_members]
        oldest_at = float(oldest[1]) if oldest else now
        return PoolStats(
            waiting=int(waiting),
            claimed=int(claimed),
            therapists_online=int(online),
            therapists_available=int(available),
            therapists_busy=int(busy),
            oldest_wait_s=round(max(0.0, now - oldest_at), 3),
            wait_p50_s=rules.percentile(waits, 50),
            wait_p95_s=rules.percentile(waits, 95),
            created_15m=created,
            matched_15m=matched,
            expired_15m=expired,
            cancelled_15m=cancelled,
        )

    @unavailable_when_down
    async def live(self, now: float) -> PoolLive:
        script = self._scripts["live_indexes"]
        return await _redis_live.read_live(self._client, script, self._keys, now)

    @unavailable_when_down
    async def record_sample(self, bucket: int, sample: dict[str, Any]) -> bool:
        script = self._scripts["record_sample"]
        return await _redis_live.record_sample(script, self._keys, bucket, sample)

    @unavailable_when_down
    async def history(self, now: float) -> list[dict[str, Any]]:
        return await _redis_live.history(self._client, self._keys, now)

    async def ping(self) -> None:
        """Whether the pool's Redis answers. On a Cluster, the node that holds
        the pool's slot: a ``PING`` would ask every node, and one node down
        that holds nothing of the pool must not take the servers out of service."""
        try:
            if isinstance(self._client, RedisCluster):
                await self._client.exists(self._keys.seq)
            else:
                await self._client.ping()
        except _PING_ERRORS as exc:
            raise Unavailable("the pool's redis does not answer") from exc

    async def aclose(self) -> None:
        """Close the client and, when it owns one (``from_url``), its connection pool."""
        await self._client.aclose()


if TYPE_CHECKING:
    _: type[PoolStore] = RedisPool


def _announcement(req: Request, announce: Announce | None) -> list[str | bytes]:
    """create.lua's ARGV[9..12]: the creation's effects as the bus publishes
    them, the bytes standing for its place in them, the publish command and
    the channel; four empty strings without ``announce``.

    The place is only known inside the script (its ZRANK). So the effects
    are encoded with a random placeholder place between 2**31 and 2**32,
    which MessagePack writes as a uint32 (0xce and four bytes), and the
    script puts the real place (also a uint32) over those five bytes: the
    same length, so the rest of the encoding stands. Should the five bytes
    occur anywhere else in the payload, the script publishes nothing (and
    says so) and the caller publishes as usual."""
    if announce is None:
        return ["", "", "", ""]
    placeholder = _PLACEHOLDER_BASE | secrets.randbits(31)
    out = announce(Change(None, req, position=placeholder))
    if out is None:
        return ["", "", "", ""]
    return [out.payload, b"\xce" + placeholder.to_bytes(4, "big"), out.command, out.channel]


def _digest(raw: str) -> str:
    """A short digest of a profile's JSON: its version (put_profile.lua)."""
    return hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()
