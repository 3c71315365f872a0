"""Value types of the pool. Pure: no I/O, no ``await``.

Times are floats of seconds since the epoch (UTC); they become RFC 3339
strings only at the protocol edge (:func:`core.clock.rfc3339`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgpack

from core.clock import rfc3339
from core.errors import Forbidden, NotFound
from core.identity import Role


class State(StrEnum):
    WAITING = "waiting"
    CLAIMED = "claimed"
    MATCHED = "matched"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


#: States in which a request still belongs to the pool (the client may not open another).
ACTIVE_STATES = frozenset({State.WAITING, State.CLAIMED})
FINAL_STATES = frozenset({State.MATCHED, State.CANCELLED, State.EXPIRED})


class Reason(StrEnum):
    """Why a request left ``waiting`` or ``claimed`` (the ``reason`` field)."""

    CLAIMED = "claimed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    NO_THERAPIST = "no_therapist"
    CLIENT_NO_RESPONSE = "client_no_response"
    DECLINED = "declined"
    RELEASED = "released"
    THERAPIST_LOST = "therapist_lost"
    MATCHED = "matched"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """The pool's clocks, in seconds (PROTOCOL.md §1)."""

    claim_confirm_s: float = 60.0
    request_max_wait_s: float = 600.0
    reconnect_grace_s: float = 15.0


@dataclass(frozen=True, slots=True)
class Draft:
    """A validated "talk now" body, before it has an id."""

    region: str
    language: str
    topics: tuple[str, ...] = ()
    notes: str = ""
    age: int | None = None
    guardian_consent: bool = False
    #: The referring therapist (PROTOCOL.md §10), set by the dispatcher, never
    #: by the body: the request is its alone for ``head_start_s`` seconds
    #: (:func:`pool.rules.head_start_holder`). None, or 0 seconds: no head start.
    referred_to: str | None = None
    head_start_s: float = 0.0
    #: The therapists offered the request first (``DISPATCH_OFFER_FANOUT``,
    #: :func:`pool.rules.next_offers`), set by the dispatcher, never by the
    #: body. None: every eligible therapist (today's behaviour).
    offered: frozenset[str] | None = None

    @property
    def minor(self) -> bool:
        return self.age is not None and self.age < 18


@dataclass(frozen=True, slots=True)
class Request:
    """One "talk now" request. ``declined`` is private: never shown to users."""

    id: str
    client_id: str
    region: str
    language: str
    topics: tuple[str, ...]
    notes: str
    age: int | None
    guardian_consent: bool
    created_at: float
    state: State = State.WAITING
    claimed_by: str | None = None
    claimed_at: float | None = None
    expires_at: float | None = None
    session_id: str | None = None
    reason: str | None = None
    updated_at: float = 0.0
    declined: frozenset[str] = field(default_factory=frozenset)
    #: The referring therapist's head start (PROTOCOL.md §10): until
    #: ``head_start_until`` only ``referred_to`` is offered the request and may
    #: claim it (:func:`pool.rules.head_start_holder`). Both None, or both set.
    #: Private, like ``declined``: never shown to users.
    referred_to: str | None = None
    head_start_until: float | None = None
    #: Offer to a few at a time (``DISPATCH_OFFER_FANOUT``): only the
    #: therapists in ``offered`` get ``request.new`` and may claim it
    #: (:func:`pool.rules.offered_to`); ``widened_at`` is when it was last
    #: widened (or created), so every server widens it from the same time
    #: (:func:`pool.rules.widen_due`). Both None (everyone, today's
    #: behaviour), or both set. Private: never shown to users.
    offered: frozenset[str] | None = None
    widened_at: float | None = None

    @property
    def minor(self) -> bool:
        return self.age is not None and self.age < 18

    def replace(self, **changes: Any) -> Request:
        return dataclasses.replace(self, **changes)

    def public(self, position: int | None = None) -> dict[str, Any]:
        """The request object R of PROTOCOL.md §3 (``position`` from the store)."""
        return {
            "id": self.id,
            "state": str(self.state),
            "created_at": rfc3339(self.created_at),
            "client_id": self.client_id,
            "region": self.region,
            "language": self.language,
            "topics": list(self.topics),
            "notes": self.notes,
            "age": self.age,
            "guardian_consent": self.guardian_consent,
            "position": position if self.state is State.WAITING else None,
            "claimed_by": self.claimed_by,
            "expires_at": rfc3339(self.expires_at) if self.expires_at is not None else None,
            "session_id": self.session_id,
            "reason": self.reason,
        }

    def to_record(self) -> dict[str, Any]:
        """Everything, for storage (msgpack/JSON-safe)."""
        return {
            "id": self.id,
            "client_id": self.client_id,
            "region": self.region,
            "language": self.language,
            "topics": list(self.topics),
            "notes": self.notes,
            "age": self.age,
            "guardian_consent": self.guardian_consent,
            "created_at": self.created_at,
            "state": str(self.state),
            "claimed_by": self.claimed_by,
            "claimed_at": self.claimed_at,
            "expires_at": self.expires_at,
            "session_id": self.session_id,
            "reason": self.reason,
            "updated_at": self.updated_at,
            "declined": sorted(self.declined),
            "referred_to": self.referred_to,
            "head_start_until": self.head_start_until,
            "offered": None if self.offered is None else sorted(self.offered),
            "widened_at": self.widened_at,
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Request:
        return cls(
            id=str(rec["id"]),
            client_id=str(rec["client_id"]),
            region=str(rec["region"]),
            language=str(rec["language"]),
            topics=tuple(str(t) for t in rec.get("topics") or ()),
            notes=str(rec.get("notes") or ""),
            age=None if rec.get("age") is None else int(rec["age"]),
            guardian_consent=bool(rec.get("guardian_consent")),
            created_at=float(rec["created_at"]),
            state=State(rec["state"]),
            claimed_by=_opt_str(rec.get("claimed_by")),
            claimed_at=_opt_float(rec.get("claimed_at")),
            expires_at=_opt_float(rec.get("expires_at")),
            session_id=_opt_str(rec.get("session_id")),
            reason=_opt_str(rec.get("reason")),
            updated_at=float(rec.get("updated_at") or 0.0),
            declined=frozenset(str(d) for d in rec.get("declined") or ()),
            # Records written before the head start existed: none.
            referred_to=_opt_str(rec.get("referred_to")),
            head_start_until=_opt_float(rec.get("head_start_until")),
            # Records written before offers to a few at a time: everyone.
            offered=(
                None if rec.get("offered") is None else frozenset(str(t) for t in rec["offered"])
            ),
            widened_at=_opt_float(rec.get("widened_at")),
        )


@dataclass(frozen=True, slots=True)
class TherapistProfile:
    id: str
    name: str
    bio: str = ""
    photo_url: str = ""
    regions: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    works_with_minors: bool = False
    #: False: no quick-connect offers for clients it has never had a session
    #: with (:func:`pool.rules.paused_for`); those it knows still reach it.
    accepting_new_clients: bool = True
    #: The price of a booked session, in minor units (PROTOCOL.md §7, §8).
    session_price_minor: int | None = None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "bio": self.bio,
            "photo_url": self.photo_url,
            "regions": list(self.regions),
            "languages": list(self.languages),
            "topics": list(self.topics),
            "works_with_minors": self.works_with_minors,
            "accepting_new_clients": self.accepting_new_clients,
            "session_price_minor": self.session_price_minor,
        }

    to_record = public

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> TherapistProfile:
        return cls(
            id=str(rec["id"]),
            name=str(rec.get("name") or ""),
            bio=str(rec.get("bio") or ""),
            photo_url=str(rec.get("photo_url") or ""),
            regions=tuple(str(x) for x in rec.get("regions") or ()),
            languages=tuple(str(x) for x in rec.get("languages") or ()),
            topics=tuple(str(x) for x in rec.get("topics") or ()),
            works_with_minors=bool(rec.get("works_with_minors")),
            # Records written before these fields existed: the defaults.
            accepting_new_clients=rec.get("accepting_new_clients") is not False,
            session_price_minor=(
                None if rec.get("session_price_minor") is None else int(rec["session_price_minor"])
            ),
        )


class SessionState(StrEnum):
    READY = "ready"
    LIVE = "live"
    ENDED = "ended"


#: States in which a session is open: its participants may join and signal.
OPEN_SESSION_STATES = frozenset({SessionState.READY, SessionState.LIVE})


class EndReason(StrEnum):
    """Why a session ended (the ``reason`` of ``session.ended``)."""

    ENDED_BY_CLIENT = "ended_by_client"
    ENDED_BY_THERAPIST = "ended_by_therapist"
    PEER_LOST = "peer_lost"
    FUNDS_EXHAUSTED = "funds_exhausted"


#: The messages of the errors the session steps raise; both adapters (and the
#: Redis scripts' error codes) use exactly these.
NO_SUCH_SESSION = "no such session"
NOT_A_PARTICIPANT = "you are not a participant of this session"
TOO_MANY_HELD = "too many frames held for a peer who has not joined"
#: A client in an open session (``ready`` or ``live``) may not ask for another
#: therapist: ``create`` refuses it (RequestExists) in its atomic step.
IN_SESSION = "you are in an open session"
#: ``open_booked_session``: the pool's busy rule (PROTOCOL.md §4) holds for a
#: booked call too; each adapter raises these messages alike.
THERAPIST_BUSY = "the therapist holds a claim or is in another call"
CLIENT_BUSY = "the client is in another call"
CLIENT_WAITING = "the client has a quick-connect request waiting or claimed"
SESSION_ID_USED = "this session id belongs to another call"
#: ``claim`` by another therapist during a referral head start (PROTOCOL.md §10).
HEAD_START = "this client's own therapist has the request alone for a few seconds more"
#: ``claim`` by a therapist the request has not been offered to yet
#: (``DISPATCH_OFFER_FANOUT``, :func:`pool.rules.offered_to`).
NOT_OFFERED = "this request is offered to a few therapists at a time: not to you yet"


@dataclass(frozen=True, slots=True)
class Session:
    """The session object S (PROTOCOL.md §5); ``ice_servers`` is added at the edge.

    State machine::

        ready --both participants joined--> live
        ready|live --end (a participant, funds, peer lost past the grace)--> ended

    ``booking_id`` is set for a booked call (PROTOCOL.md §8), None for quick
    connect. A booked session has no request: its ``request_id`` is its
    booking id (the durable record's unique key), shown as null on the wire.

    ``joined`` is private (never in :meth:`public`): the participants whose
    console has opened the call; frames are held only for one that has not
    (``PoolStore.pass_or_hold``). A participant stays in it when its
    connection drops, on purpose: frames relayed meanwhile are passed, go out
    on the bus, and are lost for that console only while it is offline. Its
    reconnect covers that: it gets ``session.ready`` again and joins again,
    and the call's signalling starts over from there.
    """

    id: str
    request_id: str
    client_id: str
    therapist_id: str
    state: SessionState = SessionState.READY
    created_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    joined: frozenset[str] = frozenset()
    booking_id: str | None = None

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_SESSION_STATES

    def role_of(self, user_id: str) -> Role:
        """The participant's role; raises Forbidden for anyone else."""
        if user_id == self.client_id:
            return Role.CLIENT
        if user_id == self.therapist_id:
            return Role.THERAPIST
        raise Forbidden(NOT_A_PARTICIPANT)

    def peer_of(self, user_id: str) -> tuple[str, Role]:
        """The other participant and its role; raises Forbidden for a non-participant."""
        if self.role_of(user_id) is Role.CLIENT:
            return self.therapist_id, Role.THERAPIST
        return self.client_id, Role.CLIENT

    def joined_by(self, user_id: str, now: float) -> Session:
        """The session once ``user_id`` (a participant) has joined: ``live``,
        started at ``now``, when both have joined and it was ``ready``."""
        joined = self.joined | {user_id}
        if self.state is SessionState.READY and {self.client_id, self.therapist_id} <= joined:
            return dataclasses.replace(self, joined=joined, state=SessionState.LIVE, started_at=now)
        return dataclasses.replace(self, joined=joined)

    def ended(self, reason: str, now: float) -> Session:
        """The session ended at ``now`` for ``reason`` (it was open)."""
        return dataclasses.replace(
            self, state=SessionState.ENDED, ended_at=now, end_reason=str(reason)
        )

    def duration_s(self) -> int:
        """Whole seconds (rounded down) from going live to the end; 0 for a
        session that never went live or has not ended."""
        if self.started_at is None or self.ended_at is None:
            return 0
        return max(0, int(self.ended_at - self.started_at))

    def public(self, ice_servers: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "request_id": None if self.booking_id is not None else self.request_id,
            "booking_id": self.booking_id,
            "client_id": self.client_id,
            "therapist_id": self.therapist_id,
            "state": str(self.state),
            "ice_servers": ice_servers,
            "started_at": rfc3339(self.started_at) if self.started_at is not None else None,
            "ended_at": rfc3339(self.ended_at) if self.ended_at is not None else None,
        }

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "request_id": self.request_id,
            "client_id": self.client_id,
            "therapist_id": self.therapist_id,
            "state": str(self.state),
            "created_at": self.created_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "end_reason": self.end_reason,
            "joined": sorted(self.joined),
            "booking_id": self.booking_id,
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Session:
        return cls(
            id=str(rec["id"]),
            request_id=str(rec["request_id"]),
            client_id=str(rec["client_id"]),
            therapist_id=str(rec["therapist_id"]),
            state=SessionState(rec.get("state") or "ready"),
            created_at=float(rec.get("created_at") or 0.0),
            started_at=_opt_float(rec.get("started_at")),
            ended_at=_opt_float(rec.get("ended_at")),
            end_reason=_opt_str(rec.get("end_reason")),
            joined=frozenset(str(u) for u in rec.get("joined") or ()),
            booking_id=_opt_str(rec.get("booking_id")),
        )


def open_session_for(session: Session | None, user_id: str) -> Session:
    """``session`` when it is open and ``user_id`` takes part in it.

    Raises NotFound for a missing or ended session (checked first), then
    Forbidden for anyone but its client and therapist.
    """
    if session is None or not session.is_open:
        raise NotFound(NO_SUCH_SESSION)
    session.role_of(user_id)
    return session


def pack_frame(frame: dict[str, Any]) -> bytes:
    """A frame held for a participant, as stored (both adapters: msgpack)."""
    packed: bytes = msgpack.packb(frame, use_bin_type=True)
    return packed


def unpack_frame(data: bytes) -> dict[str, Any]:
    frame: dict[str, Any] = msgpack.unpackb(data, raw=False, strict_map_key=False)
    return frame


@dataclass(frozen=True, slots=True)
class Hold:
    """What a therapist holds: a claim on a request, or an open session."""

    kind: str  # "claim" or "session"
    id: str


@dataclass(frozen=True, slots=True)
class OfferCandidate:
    """A therapist who could be offered a new request now: available, holding
    no claim and no open session (:meth:`pool.store.PoolStore.offer_candidates`).
    ``last_claim_at``: when it last claimed a request (None: never), the
    ranking's "longest idle" (:func:`pool.rules.offer_rank`)."""

    profile: TherapistProfile
    last_claim_at: float | None = None


@dataclass(frozen=True, slots=True)
class PoolStats:
    """The ``pool.stats`` frame's fields (PROTOCOL.md §5, Operator)."""

    waiting: int
    claimed: int
    therapists_online: int
    therapists_available: int
    therapists_busy: int
    oldest_wait_s: float
    wait_p50_s: float | None
    wait_p95_s: float | None
    created_15m: int
    matched_15m: int
    expired_15m: int
    cancelled_15m: int

    def public(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _opt_str(v: Any) -> str | None:
    return None if v is None or v == "" else str(v)


def _opt_float(v: Any) -> float | None:
    return None if v is None or v == "" else float(v)
