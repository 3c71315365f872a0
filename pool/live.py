"""What an operator sees of the pool beyond its numbers. Pure: no I/O, no ``await``.

* :class:`PoolLive`: a read-only snapshot of who is where right now (the
  requests waiting, the claims, the open sessions, the therapists online),
  each list bounded to :data:`LIVE_LIMIT` entries with the full count beside
  it, so the answer stays small however busy the service is
  (``PoolStore.live``).
* The stats history: one sample of the pool's numbers per
  :data:`SAMPLE_INTERVAL_S` bucket, kept :data:`HISTORY_WINDOW_S`
  (``PoolStore.record_sample`` / ``history``), so the operator's charts
  survive a reload. Every server's stats loop offers each bucket's sample;
  the store keeps the first one only.

A request's ``notes`` never appear here: an operator's overview needs who
waits and for what, not what the client wrote.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from core.clock import rfc3339
from pool.model import PoolStats, Request, Session

#: Entries per list of a :class:`PoolLive`, at most.
LIVE_LIMIT: Final = 200
#: The width of one stats-history bucket, in seconds.
SAMPLE_INTERVAL_S: Final = 5
#: How far back the stats history goes, in seconds.
HISTORY_WINDOW_S: Final = 15 * 60
#: The fields of :class:`PoolStats` a history sample keeps (besides ``at``).
SAMPLE_FIELDS: Final = (
    "waiting",
    "claimed",
    "therapists_online",
    "therapists_available",
    "therapists_busy",
    "oldest_wait_s",
    "wait_p50_s",
    "wait_p95_s",
)


def bucket_of(now: float, interval_s: int = SAMPLE_INTERVAL_S) -> int:
    """The bucket ``now`` falls in: its start, whole seconds since the epoch."""
    return math.floor(now / interval_s) * interval_s


def sample_of(stats: PoolStats, now: float) -> dict[str, Any]:
    """A history sample: :data:`SAMPLE_FIELDS` of ``stats`` and ``at`` (RFC 3339)."""
    numbers = stats.public()
    return {"at": rfc3339(now), **{name: numbers[name] for name in SAMPLE_FIELDS}}


@dataclass(frozen=True, slots=True)
class LiveRequest:
    """A waiting request as the operator's list shows it (no notes)."""

    id: str
    client_id: str
    created_at: float
    region: str
    language: str
    topics: tuple[str, ...]

    @classmethod
    def of(cls, req: Request) -> LiveRequest:
        return cls(req.id, req.client_id, req.created_at, req.region, req.language, req.topics)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "client_id": self.client_id,
            "created_at": rfc3339(self.created_at),
            "region": self.region,
            "language": self.language,
            "topics": list(self.topics),
        }


@dataclass(frozen=True, slots=True)
class LiveClaim:
    """A claimed request: who holds it and until when the client may accept."""

    request_id: str
    therapist_id: str
    claimed_at: float
    expires_at: float

    @classmethod
    def of(cls, req: Request) -> LiveClaim | None:
        """The claim of ``req``; None when the record lacks a claim's fields."""
        if req.claimed_by is None or req.claimed_at is None or req.expires_at is None:
            return None
        return cls(req.id, req.claimed_by, req.claimed_at, req.expires_at)

    def public(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "therapist_id": self.therapist_id,
            "claimed_at": rfc3339(self.claimed_at),
            "expires_at": rfc3339(self.expires_at),
        }


@dataclass(frozen=True, slots=True)
class LiveSession:
    """An open session (``ready`` or ``live``)."""

    id: str
    client_id: str
    therapist_id: str
    state: str
    created_at: float
    started_at: float | None

    @classmethod
    def of(cls, s: Session) -> LiveSession:
        return cls(s.id, s.client_id, s.therapist_id, str(s.state), s.created_at, s.started_at)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "client_id": self.client_id,
            "therapist_id": self.therapist_id,
            "state": self.state,
            "created_at": rfc3339(self.created_at),
            "started_at": None if self.started_at is None else rfc3339(self.started_at),
        }


@dataclass(frozen=True, slots=True)
class LiveTherapist:
    """A therapist with at least one connection; ``busy``: it holds a claim or a session."""

    id: str
    name: str
    available: bool
    busy: bool

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "available": self.available, "busy": self.busy}


@dataclass(frozen=True, slots=True)
class PoolLive:
    """The snapshot of ``PoolStore.live``. Each list holds at most
    :data:`LIVE_LIMIT` entries; its ``*_total`` counts them all.

    Orders: ``waiting`` oldest first (as the queue); ``claims`` by
    ``claimed_at``, ``sessions`` by ``created_at`` (ties by id);
    ``therapists`` by id.
    """

    at: float
    waiting: tuple[LiveRequest, ...]
    waiting_total: int
    claims: tuple[LiveClaim, ...]
    claims_total: int
    sessions: tuple[LiveSession, ...]
    sessions_total: int
    therapists: tuple[LiveTherapist, ...]
    therapists_total: int

    @classmethod
    def build(
        cls,
        at: float,
        waiting: list[LiveRequest],
        waiting_total: int,
        claims: list[LiveClaim],
        sessions: list[LiveSession],
        therapists: list[LiveTherapist],
        limit: int = LIVE_LIMIT,
    ) -> PoolLive:
        """Order and bound the lists (``waiting`` comes already oldest first
        and may be cut already, hence its own total)."""
        claims = sorted(claims, key=lambda c: (c.claimed_at, c.request_id))
        sessions = sorted(sessions, key=lambda s: (s.created_at, s.id))
        therapists = sorted(therapists, key=lambda t: t.id)
        return cls(
            at=at,
            waiting=tuple(waiting[:limit]),
            waiting_total=waiting_total,
            claims=tuple(claims[:limit]),
            claims_total=len(claims),
            sessions=tuple(sessions[:limit]),
            sessions_total=len(sessions),
            therapists=tuple(therapists[:limit]),
            therapists_total=len(therapists),
        )

    def public(self) -> dict[str, Any]:
        """The body of ``GET /v1/pool/live``."""
        return {
            "at": rfc3339(self.at),
            "waiting": [r.public() for r in self.waiting],
            "waiting_total": self.waiting_total,
            "claims": [c.public() for c in self.claims],
            "claims_total": self.claims_total,
            "sessions": [s.public() for s in self.sessions],
            "sessions_total": self.sessions_total,
            "therapists": [t.public() for t in self.therapists],
            "therapists_total": self.therapists_total,
        }
