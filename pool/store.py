"""The contract both pool adapters keep (``memory.MemoryPool``, ``redis_store.RedisPool``).

Every mutating method is one atomic step: after it returns, the change it
reports happened exactly once across the whole service; if it raises a
:mod:`core.errors` error, nothing changed. The rules themselves live in
:mod:`pool.rules`; adapters only read, apply and write atomically.

Time is always passed in (``now``, seconds since the epoch) so that tests
drive the clocks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from core.bus import Outgoing
from core.errors import Taken
from core.identity import Role
from pool.effects import Change
from pool.live import PoolLive
from pool.model import (
    Draft,
    Hold,
    OfferCandidate,
    PoolStats,
    Request,
    Session,
    TherapistProfile,
    Timeouts,
)


class Claimed(Taken):
    """``taken``, with the request as the pool found it (no longer waiting), so
    that a caller answering other claims of it can apply
    :func:`pool.rules.check_claim` without reading it again. Both adapters
    raise it; a caller still copes with plain :class:`~core.errors.Taken`
    (claiming one's own claim again is that)."""

    def __init__(self, request: Request) -> None:
        super().__init__()
        self.request = request


#: ``change -> its effects encoded for the bus`` (None: the bus cannot hand
#: them over). The change is the creation, its ``position`` an integer
#: between 2**31 and 2**32 that the encoding must carry exactly once as a
#: MessagePack uint32, for the adapter to replace with the real place.
Announce = Callable[[Change], Outgoing | None]


class PoolStore(Protocol):
    timeouts: Timeouts

    # -- therapist profiles ------------------------------------------------
    async def put_profile(self, profile: TherapistProfile) -> None: ...
    async def get_profile(self, therapist_id: str) -> TherapistProfile | None: ...

    # -- requests ------------------------------------------------------------
    async def create(
        self,
        draft: Draft,
        client_id: str,
        request_id: str,
        now: float,
        idempotency_key: str | None = None,
        announce: Announce | None = None,
    ) -> tuple[Request, Change | None]:
        """Create a waiting request. Returns ``(request, change)``; the
        change's ``position`` is the request's place in the queue then.

        ``announce`` encodes a creation's effects for the bus (given the
        change with a placeholder ``position``, which the adapter then fills
        in the encoded bytes; see :data:`Announce`). An adapter that can
        publish in the creating step does, and says so in the change's
        ``announced``: the request and its announcement are then one atomic
        step, and no crash between them leaves a request nobody was told of.
        One that cannot (the in-process pool: its bus delivers in the
        publishing task) leaves ``announced`` False and the caller publishes.

        With an ``idempotency_key`` already used by this client, returns the
        request first created under it and ``None`` (no new change); the key
        is remembered for 24 hours. Raises ``RequestExists`` if the client
        already has a request waiting or claimed.
        """
        ...

    async def get(self, request_id: str) -> Request | None: ...

    async def position(self, request_id: str) -> int | None:
        """1-based place among waiting requests (oldest first), or None."""
        ...

    async def positions(self, request_ids: list[str]) -> dict[str, int | None]: ...

    async def moved(self, last: dict[str, int | None]) -> dict[str, tuple[int, Request]]:
        """Of the requests ``last`` names (id -> the place last told, or None),
        those waiting at another place now: id -> (place, request). One step,
        however many: what a server needs to tell its waiting clients after
        the queue moved."""
        ...

    async def waiting(self) -> list[Request]:
        """Every waiting request, oldest first."""
        ...

    async def active_request_of(self, client_id: str) -> Request | None:
        """The client's request that is waiting or claimed, if any."""
        ...

    async def claim(self, request_id: str, therapist: TherapistProfile, now: float) -> Change:
        """Raises NotFound, Busy, NotEligible or Taken (rules.claim)."""
        ...

    async def release(self, request_id: str, therapist_id: str, now: float) -> Change: ...

    async def offer_candidates(self, region: str) -> list[OfferCandidate]:
        """Every therapist who could be offered a request of ``region`` now,
        ordered by id: available (a console connected and available),
        holding no claim and no open session, with a profile naming the
        region; each with when it last claimed a request
        (``DISPATCH_OFFER_FANOUT``, :func:`pool.rules.next_offers`, which
        weighs the rest of the qualification). A read, not a step: the offer
        it informs is stored with the request. The Redis adapter reads the
        region's availability index, not every available therapist."""
        ...

    async def widen(
        self,
        request_id: str,
        widened_at: float,
        offered: frozenset[str] | None,
        now: float,
    ) -> Change | None:
        """Store the wider offer of a waiting request (:func:`pool.rules.widened`)
        exactly once across servers: only while the request is waiting and its
        ``widened_at`` is still ``widened_at`` (the value its caller read), so
        of several servers widening the same request one wins and the others
        get None. ``offered`` None opens it to everyone (``widened_at`` then
        None too); else ``widened_at`` becomes ``now``. The change keeps the
        request ``waiting`` (:func:`pool.effects.effects` finds nothing in it:
        the caller announces the wider offer)."""
        ...

    async def due_widenings(self, upto: float, limit: int = 100) -> list[Request]:
        """The waiting requests offered to a few whose ``widened_at`` is at
        most ``upto`` (the caller passes ``now - DISPATCH_OFFER_WIDEN_S``),
        oldest ``widened_at`` first, ties by id, at most ``limit``. A read of
        the pool's due-widening index, which the steps that create, widen and
        end a request keep: its cost grows with the requests offered to a few,
        not with every waiting one. A claimed request is left out until it is
        waiting again, with the ``widened_at`` it had. A read, not a step:
        :meth:`widen` stores each widening once."""
        ...

    async def decline(self, request_id: str, client_id: str, now: float) -> Change: ...

    async def accept(self, request_id: str, client_id: str, session_id: str, now: float) -> Change:
        """Match the request; opens session ``session_id`` (state ``ready``),
        which the therapist then holds instead of the claim."""
        ...

    async def cancel(self, request_id: str, client_id: str, now: float) -> Change: ...

    async def fire_due(self, now: float, limit: int = 100) -> list[Change | Session]:
        """Apply every deadline and reconnect grace that is due, each exactly
        once across all servers, and return what changed, at most ``limit``
        entries: a :class:`Change` for each request that expired or lost its
        claiming therapist, and the ended :class:`Session` for each session
        ended with ``peer_lost`` (a participant stayed away past its grace;
        the same ending as :meth:`end_session`)."""
        ...

    # -- therapists and sessions -------------------------------------------
    async def hold_of(self, therapist_id: str) -> Hold | None: ...
    async def get_session(self, session_id: str) -> Session | None: ...
    async def open_session_of(self, user_id: str) -> Session | None:
        """The user's session that is ``ready`` or ``live``, if any."""
        ...

    async def open_booked_session(
        self, session_id: str, booking_id: str, client_id: str, therapist_id: str, now: float
    ) -> Session:
        """Open the call of booking ``booking_id`` (PROTOCOL.md §8) as session
        ``session_id``, state ``ready``, ``booking_id`` set: the therapist holds
        it (no offers meanwhile) and it is both users' open session, exactly as
        :meth:`accept` opens a quick-connect one; from there on ``join_session``,
        ``pass_or_hold``, ``end_session`` and the reconnect grace treat it alike.

        Idempotent: when ``session_id`` is already this booking's session (in
        any state, ended too) it is returned unchanged, so both participants and
        every retry, on any server, get the same session. Raises what
        :func:`pool.rules.open_booked` raises: Conflict for a session id of
        another call, Busy when the therapist holds a claim or an open session
        or the client is in an open session, RequestExists when the client has
        a request waiting or claimed.
        """
        ...

    async def join_session(
        self, session_id: str, user_id: str, now: float
    ) -> tuple[Session, bool, list[dict[str, Any]]]:
        """The participant's console opened the call (``session.join``).

        Returns ``(session after, went_live_now, held frames)``. The user is
        in ``joined`` afterwards; when both participants have joined and the
        session was ``ready``, it is ``live`` with ``started_at = now`` and
        ``went_live_now`` is True for this one call alone. The frames held for
        this user (:meth:`pass_or_hold`), in the order they were held, are
        removed in the same step, so each is delivered once. Joining again (a
        reconnecting console) is allowed. Raises NotFound for a missing or
        ended session, Forbidden for anyone but its client and therapist.
        """
        ...

    async def pass_or_hold(
        self, session_id: str, from_user: str, frame: dict[str, Any], max_held: int = 256
    ) -> bool:
        """Relay ``frame`` (``rtc.signal``) to the other participant.

        True: the peer has joined; the caller delivers the frame now and
        nothing is stored. False: the peer has not joined yet, and the frame
        is held for it until its :meth:`join_session`, which returns it. One
        atomic step with respect to ``join_session``, so a frame is never
        lost between the two. Raises NotFound / Forbidden as ``join_session``
        does, and ``Conflict`` (holding nothing) when ``max_held`` frames are
        already held for the peer.

        A participant stays joined when its connection drops (see
        :class:`pool.model.Session`): frames for it then go out on the bus and
        are lost for that console only while it is offline; its reconnect
        (``session.ready`` again, then a new ``session.join``) covers that.
        """
        ...

    async def end_session_by(self, session_id: str, user_id: str, now: float) -> Session | None:
        """A participant ends its session: :meth:`end_session` with the
        reason :func:`pool.rules.ended_by` gives, the participation checked
        in the same step (``Forbidden``, ``NOT_A_PARTICIPANT``, for anyone
        else and for a session that never existed). None when it was already
        ended."""
        ...

    async def end_session(self, session_id: str, reason: str, now: float) -> Session | None:
        """End an open (``ready`` or ``live``) session exactly once.

        State ``ended``, ``ended_at = now``, ``end_reason = reason``; the
        therapist's hold is freed (it may claim again and gets offers), both
        users' open-session pointers are cleared, held frames are dropped, and
        each user's reconnect grace is cancelled if it holds nothing else.
        Returns the ended session to the one caller that ended it; None when
        it was already ended or never existed (several servers may see the
        same end). :meth:`get_session` still returns the ended session.
        """
        ...

    # -- presence ----------------------------------------------------------
    async def connect(
        self, user_id: str, role: Role, conn_id: str, server_id: str, now: float
    ) -> None:
        """Record a live connection; cancels the user's reconnect grace."""
        ...

    async def disconnect(
        self, user_id: str, role: Role, conn_id: str, server_id: str, now: float
    ) -> None:
        """Forget a connection. When it was the user's last one anywhere and
        the user holds a claim or an open session, arms the reconnect grace."""
        ...

    async def set_available(self, therapist_id: str, available: bool) -> bool:
        """Record availability; returns the state now in force."""
        ...

    async def is_available(self, therapist_id: str) -> bool: ...

    async def heartbeat(self, server_id: str, now: float) -> bool:
        """Mark a server alive. False when the pool did not know it as alive:
        its first beat, or it was reaped meanwhile (its connections were
        dropped, so it must register them again)."""
        ...

    async def reap_servers(self, now: float, dead_after_s: float) -> list[str]:
        """Treat every connection of a server silent for ``dead_after_s`` as
        disconnected (arming graces as above); returns the reaped server ids."""
        ...

    # -- operators ---------------------------------------------------------
    async def stats(self, now: float) -> PoolStats: ...

    async def live(self, now: float) -> PoolLive:
        """A read-only snapshot of who is where (:class:`pool.live.PoolLive`):
        the waiting requests (oldest first, no notes), the claims, the open
        sessions and the therapists online with their name, availability and
        whether they hold a claim or a session. Each list holds at most
        :data:`pool.live.LIVE_LIMIT` entries; its total counts them all."""
        ...

    async def record_sample(self, bucket: int, sample: dict[str, Any]) -> bool:
        """Keep ``sample`` as the stats history's entry for ``bucket`` (its
        start, whole seconds since the epoch; :func:`pool.live.bucket_of`)
        unless the bucket has one already: True for the one call across all
        servers that stored it. Forgets the entries older than
        :data:`pool.live.HISTORY_WINDOW_S` before ``bucket``. ``sample`` is
        JSON-safe and comes back as given."""
        ...

    async def history(self, now: float) -> list[dict[str, Any]]:
        """The samples of the buckets that start within
        :data:`pool.live.HISTORY_WINDOW_S` before ``now`` (or later), oldest first."""
        ...

    async def ping(self) -> None:
        """Raises ``Unavailable`` when the backing store does not answer."""
        ...

    async def aclose(self) -> None: ...
