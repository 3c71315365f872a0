"""Who must be told what when a request changes. Pure: no I/O.

A :class:`Change` is what an adapter returns for every state change it made.
:func:`effects` turns it into :class:`Effect` values; the dispatch layer
publishes them on the bus and every server delivers them to the connections
it holds. Broadcasts carry the request so that each server decides locally,
with :func:`pool.rules.may_see`, which of its therapists get the frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.clock import rfc3339
from pool.model import Request, Session, State, TherapistProfile


@dataclass(frozen=True, slots=True)
class Change:
    """One atomic state change of one request."""

    before: Request | None
    after: Request
    #: The claimer: for the offer of a claim, for the call log of a match.
    therapist: TherapistProfile | None = None
    session: Session | None = None  # set when the request was matched
    lost_therapist: str | None = None  # set when a claim was dropped past the grace
    #: The request's place in the waiting queue right after the change, when
    #: the step knew it (a creation: the script's own ZRANK), so that no server
    #: has to read it again to announce the request.
    position: int | None = None
    #: The step published the change's effects itself, in the same atomic
    #: step (a creation on Redis, :meth:`pool.store.PoolStore.create`'s
    #: ``announce``): nobody else must publish them again.
    announced: bool = False


@dataclass(frozen=True, slots=True)
class Effect:
    """A message for the bus.

    ``kind`` is one of:

    - ``new``: ``request`` entered ``waiting``; every available, idle therapist
      who may see it (and, offered to a few at a time, is among
      ``request.offered``) gets ``request.new``. ``position`` is set for a
      request just created (its place then); otherwise each server reads it.
    - ``widened``: a waiting ``request`` offered to a few was offered to more
      (:func:`pool.rules.widened`); those newly offered get ``request.new``,
      not those in ``frame["already"]`` (they had it).
    - ``gone``: ``request`` left ``waiting``; therapists who may take it get
      ``request.gone`` with ``reason``.
    - ``client_state``: the owning client gets ``request.state`` (the server
      hosting it adds the position).
    - ``user``: ``frame`` goes to every connection of user ``to``.
    - ``positions``: the waiting queue moved; servers refresh their waiting
      clients' positions.
    - ``profile``: therapist ``to`` changed its profile; servers reload it.
    - ``operators``: ``frame`` goes to every operator's connection (a
      safeguarding alert, PROTOCOL.md §10).
    """

    kind: str
    request: Request | None = None
    reason: str | None = None
    to: str | None = None
    frame: dict[str, Any] = field(default_factory=dict)
    #: The connection whose frame caused this effect and the ``ref`` it carried:
    #: that connection alone gets the ``ref`` echoed (set by the dispatch layer).
    conn: str | None = None
    ref: str | None = None
    position: int | None = None

    def to_wire(self) -> dict[str, Any]:
        """A msgpack-safe map for the bus."""
        return {
            "kind": self.kind,
            "request": self.request.to_record() if self.request is not None else None,
            "reason": self.reason,
            "to": self.to,
            "frame": self.frame,
            "conn": self.conn,
            "ref": self.ref,
            "position": self.position,
        }

    @classmethod
    def from_wire(cls, m: dict[str, Any]) -> Effect:
        req = m.get("request")
        return cls(
            kind=str(m["kind"]),
            request=Request.from_record(req) if req is not None else None,
            reason=m.get("reason"),
            to=m.get("to"),
            frame=dict(m.get("frame") or {}),
            conn=m.get("conn"),
            ref=m.get("ref"),
            position=m.get("position"),
        )


_GONE_REASON = {
    State.CLAIMED: "claimed",
    State.CANCELLED: "cancelled",
    State.EXPIRED: "expired",
    State.MATCHED: "claimed",
}


def effects(change: Change, ice_servers: list[dict[str, Any]] | None = None) -> list[Effect]:
    """Everything users must learn from ``change``, in the order to send it."""
    before, after = change.before, change.after
    was = before.state if before is not None else None
    now_state = after.state
    out: list[Effect] = []
    rid = after.id

    if was is now_state and was is not None:
        return out

    # Therapists' lists: a request entering or leaving the pool.
    if was is State.WAITING:
        out.append(Effect("gone", request=after, reason=_GONE_REASON[now_state]))
        out.append(Effect("positions"))

    # The therapist who held the claim, when it ends without a match.
    if was is State.CLAIMED and before is not None and before.claimed_by is not None:
        tid = before.claimed_by
        if now_state is State.WAITING:
            if after.reason == "declined":
                out.append(_to(tid, {"type": "claim.declined", "request_id": rid}))
            elif after.reason == "released":
                out.append(_to(tid, {"type": "claim.released", "request_id": rid}))
            else:
                out.append(
                    _to(tid, {"type": "claim.expired", "request_id": rid, "reason": after.reason})
                )
        elif now_state is State.CANCELLED:
            out.append(_to(tid, {"type": "claim.cancelled", "request_id": rid}))
        elif now_state is State.EXPIRED:
            out.append(
                _to(tid, {"type": "claim.expired", "request_id": rid, "reason": after.reason})
            )

    if now_state is State.CLAIMED and after.claimed_by is not None:
        out.append(_to(after.claimed_by, claim_ok_frame(after)))

    out.append(Effect("client_state", request=after, to=after.client_id))

    if now_state is State.CLAIMED and change.therapist is not None:
        out.append(_to(after.client_id, offer_frame(after, change.therapist)))

    if now_state is State.MATCHED and change.session is not None:
        ready = session_ready_frame(change.session, ice_servers or [])
        out.append(_to(change.session.therapist_id, ready))
        out.append(_to(change.session.client_id, ready))

    if now_state is State.WAITING:
        out.append(Effect("new", request=after, position=change.position if was is None else None))
        if was is not None:
            out.append(Effect("positions"))
    return out


# -- frames: built here once, for a change (above) and for a reconnect (resume) --


def _expires(req: Request) -> str | None:
    return rfc3339(req.expires_at) if req.expires_at is not None else None


def claim_ok_frame(req: Request) -> dict[str, Any]:
    """``claim.ok`` for the therapist holding ``req`` (PROTOCOL.md §5)."""
    return {"type": "claim.ok", "request_id": req.id, "expires_at": _expires(req)}


def offer_frame(req: Request, therapist: TherapistProfile) -> dict[str, Any]:
    """``request.offer`` for the client of a claimed ``req``: who claimed it."""
    return {
        "type": "request.offer",
        "request_id": req.id,
        "therapist": therapist.public(),
        "expires_at": _expires(req),
    }


def session_ready_frame(session: Session, ice_servers: list[dict[str, Any]]) -> dict[str, Any]:
    """``session.ready`` for both participants of ``session``."""
    return {"type": "session.ready", "session": session.public(ice_servers)}


def _to(user_id: str, frame: dict[str, Any]) -> Effect:
    return Effect("user", to=user_id, frame=frame)
