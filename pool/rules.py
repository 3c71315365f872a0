"""The pool's rules as pure functions (PROTOCOL.md §4). No I/O, no ``await``.

Each transition takes the current request (and whatever else it needs to
know, read atomically by the adapter) and returns the next request, or raises
a :mod:`core.errors` error and changes nothing. Both adapters apply
exactly these rules; the Redis adapter's Lua scripts mirror them and the
contract tests (``tests/test_pool_contract.py``) hold the two to the same
answers.

State machine::

    waiting --claim--> claimed --client accepts--> matched
       ^                  |  client declines / therapist releases /
       +------------------+  therapist gone past the grace
    waiting|claimed --client cancels--> cancelled
    waiting --max wait passes--> expired ("no_therapist")
    claimed --confirm timeout passes--> expired ("client_no_response")

A request's ``expires_at`` is the one deadline of its current state; the
adapters keep it in a single timer index, so a request never has two timers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import Busy, Conflict, Forbidden, NotEligible, NotFound, RequestExists, Taken
from core.identity import Role
from pool.model import (
    CLIENT_BUSY,
    CLIENT_WAITING,
    HEAD_START,
    NOT_OFFERED,
    SESSION_ID_USED,
    THERAPIST_BUSY,
    Draft,
    EndReason,
    Hold,
    OfferCandidate,
    Reason,
    Request,
    Session,
    SessionState,
    State,
    TherapistProfile,
    Timeouts,
)


def may_take(profile: TherapistProfile, request: Request | Draft) -> bool:
    """Whether a therapist is qualified for a request (ignores declines and holds).

    Region and language must be among the therapist's; the request's topics
    must be empty or share one with the therapist's; a minor needs a therapist
    who works with minors.
    """
    if request.region not in profile.regions:
        return False
    if request.language not in profile.languages:
        return False
    if request.topics and not set(request.topics) & set(profile.topics):
        return False
    return not (request.minor and not profile.works_with_minors)


def may_see(profile: TherapistProfile, request: Request) -> bool:
    """Whether a request belongs on this therapist's list: qualified and not declined."""
    return profile.id not in request.declined and may_take(profile, request)


def paused_for(profile: TherapistProfile, knows_client: bool) -> bool:
    """Whether a therapist not accepting new clients keeps a request from a
    client away (PROTOCOL.md §7): from a client it has never had a session
    with (``knows_client`` False). Such a request is not offered to it, not
    claimable by it, and brings it no text."""
    return not profile.accepting_new_clients and not knows_client


def head_start_holder(request: Request, now: float) -> str | None:
    """The therapist a referred client's request is kept for at ``now``
    (PROTOCOL.md §10, ``DISPATCH_REFERRAL_HEAD_START_S``), or None when every
    qualified therapist may have it.

    The head start runs from the request's creation up to (not including)
    ``head_start_until``, and only while the request has never been claimed:
    nobody but the referring therapist could claim it meanwhile, so a request
    back in ``waiting`` (declined, released, its therapist lost) has had its
    head start, and the others get it at once. A waiting request's
    ``reason`` is None exactly when it has never been claimed.

    While it holds, the request is offered to the holder alone (``request.new``,
    ``pool.snapshot``), only the holder may claim it (``not_eligible``) and
    only the holder could be texted about it."""
    if request.referred_to is None or request.head_start_until is None:
        return None
    if now >= request.head_start_until or request.reason is not None:
        return None
    return request.referred_to


def head_start_applies(
    referrer: TherapistProfile | None,
    draft: Draft,
    *,
    watching: bool,
    busy: bool,
    guarded: bool,
    paused: bool,
) -> bool:
    """Whether a referred client's new request gets its referring therapist's
    head start: only when that therapist would be offered it at once (a
    console available, no claim or open call, qualified for it, and neither
    its pause on new clients nor the guard near a booked session keeps it
    away). Nobody waits for a therapist who would not see the request: with
    the referrer away the request goes to everyone from the start."""
    if referrer is None or not watching or busy or guarded or paused:
        return False
    return may_take(referrer, draft)


def eligible_during_head_start(request: Request, therapist_id: str, now: float) -> bool:
    """Whether a referral head start leaves ``therapist_id`` free to be
    offered and to claim ``request`` at ``now`` (:func:`head_start_holder`)."""
    holder = head_start_holder(request, now)
    return holder is None or holder == therapist_id


# -- offer to a few at a time (DISPATCH_OFFER_FANOUT) ---------------------------------------


def offer_rank(request: Request | Draft, candidate: OfferCandidate) -> tuple[bool, int, float, str]:
    """Where a candidate stands for ``request``, best first (sort ascending):
    the referring therapist first, then the better topic match (more of the
    request's topics among the therapist's: a qualified therapist shares at
    least one of them already), then the longest idle (its last claim longest
    ago; never claimed: first of all), then by id so the order is total."""
    profile = candidate.profile
    idle = candidate.last_claim_at
    return (
        profile.id != request.referred_to,
        -len(set(request.topics) & set(profile.topics)),
        float("-inf") if idle is None else idle,
        profile.id,
    )


def next_offers(
    request: Request | Draft,
    offered: frozenset[str],
    candidates: Iterable[OfferCandidate],
    fanout: int,
) -> frozenset[str] | None:
    """The therapists ``request`` is offered to once ``fanout`` more are
    added to ``offered``: the best-placed (:func:`offer_rank`) of the
    candidates not offered yet who may see it (qualified, not declined).

    None means every eligible therapist, as without the setting: for a
    ``fanout`` of 0 (off), and as soon as the candidates left fit in
    ``fanout`` (the offer then covers everyone there is, so a therapist who
    becomes available later, or an away one for a text, gets it too)."""
    if fanout <= 0:
        return None
    declined = request.declined if isinstance(request, Request) else frozenset()
    fresh = sorted(
        (
            c
            for c in candidates
            if c.profile.id not in offered
            and c.profile.id not in declined
            and may_take(c.profile, request)
        ),
        key=lambda c: offer_rank(request, c),
    )
    if len(fresh) <= fanout:
        return None
    return offered | {c.profile.id for c in fresh[:fanout]}


def offered_to(request: Request, therapist_id: str) -> bool:
    """Whether offers to a few at a time leave ``therapist_id`` free to be
    offered ``request`` and to claim it (None: everyone)."""
    return request.offered is None or therapist_id in request.offered


def widen_due(request: Request, now: float, widen_s: float) -> bool:
    """Whether a waiting request offered to a few is due to widen at ``now``:
    ``widen_s`` after its last widening (or its creation)."""
    return (
        request.state is State.WAITING
        and request.offered is not None
        and request.widened_at is not None
        and now >= request.widened_at + widen_s
    )


def widened(
    request: Request, candidates: Iterable[OfferCandidate], fanout: int, now: float
) -> Request:
    """``request`` offered to ``fanout`` more (:func:`next_offers`),
    widened at ``now``; open to everyone (both fields None) once the
    candidates left fit."""
    offered = next_offers(request, request.offered or frozenset(), candidates, fanout)
    return request.replace(offered=offered, widened_at=None if offered is None else now)


def guard_window(now: float, guard_min: float, late_min: float = 0.0) -> tuple[float, float]:
    """The starts of the booked sessions that keep a therapist off quick
    connect at ``now`` (PROTOCOL.md §8, ``DISPATCH_QC_GUARD_MIN``): from
    ``late_min`` minutes ago (a booked call whose start has passed but that is
    still on, or still awaited) to ``guard_min`` minutes ahead, both included.
    :func:`guarded` is the same rule for one start."""
    return now - late_min * 60.0, now + guard_min * 60.0


def guarded(next_start: float | None, now: float, guard_min: float, late_min: float = 0.0) -> bool:
    """Whether a therapist whose next scheduled booking starts at
    ``next_start`` (None: it has none) is guarded at ``now``: such a therapist
    gets no ``request.new`` and no ``pool.snapshot`` entries, may not claim
    (``not_eligible``) and gets no texts, as :func:`paused_for` keeps a
    request away, so that a quick-connect call never runs into a booked one."""
    if next_start is None:
        return False
    lo, hi = guard_window(now, guard_min, late_min)
    return lo <= next_start <= hi


def open_booked(
    existing: Session | None,
    session_id: str,
    booking_id: str,
    client_id: str,
    therapist_id: str,
    *,
    therapist_hold: Hold | None,
    client_session: str | None,
    client_request: str | None,
    now: float,
) -> Session | None:
    """Open the call of a booking (PROTOCOL.md §8): the new ``ready`` session
    to write, or None when ``existing`` (what the pool holds under
    ``session_id``, in any state) is already this booking's session: the
    caller then answers that one unchanged, so both participants, and a retry,
    get the same session. A session id of another call raises Conflict.

    A new session keeps the pool's busy rule (§4), checked in this order: the
    therapist holds a claim or an open session (Busy), the client is in an
    open session (Busy), the client has a request waiting or claimed
    (RequestExists: accepting an offer meanwhile would put it in two calls).
    """
    if existing is not None:
        if (
            existing.booking_id != booking_id
            or existing.client_id != client_id
            or existing.therapist_id != therapist_id
        ):
            raise Conflict(SESSION_ID_USED)
        return None
    if therapist_hold is not None:
        raise Busy(THERAPIST_BUSY)
    if client_session is not None:
        raise Busy(CLIENT_BUSY)
    if client_request is not None:
        raise RequestExists(CLIENT_WAITING)
    return Session(
        id=session_id,
        request_id=booking_id,
        client_id=client_id,
        therapist_id=therapist_id,
        state=SessionState.READY,
        created_at=now,
        booking_id=booking_id,
    )


def new_request(draft: Draft, request_id: str, client_id: str, now: float, t: Timeouts) -> Request:
    """A new waiting request; a referral head start of ``draft.head_start_s``
    seconds (0: none) counts from ``now``."""
    head_start = draft.referred_to is not None and draft.head_start_s > 0
    return Request(
        id=request_id,
        client_id=client_id,
        region=draft.region,
        language=draft.language,
        topics=draft.topics,
        notes=draft.notes,
        age=draft.age,
        guardian_consent=draft.guardian_consent,
        created_at=now,
        state=State.WAITING,
        expires_at=waiting_deadline_at(now, now, t),
        updated_at=now,
        referred_to=draft.referred_to if head_start else None,
        head_start_until=now + draft.head_start_s if head_start else None,
        offered=draft.offered,
        widened_at=None if draft.offered is None else now,
    )


def waiting_deadline_at(created_at: float, now: float, t: Timeouts) -> float:
    """When a waiting request expires: its max wait counts from creation.

    A request that comes back to ``waiting`` (declined, released, therapist
    lost) keeps its original deadline, so nobody waits longer than the max
    wait in all; if that is already past it expires on the next tick.
    """
    del now  # the deadline does not move; kept for the signature's symmetry
    return created_at + t.request_max_wait_s


def claim(
    request: Request | None,
    therapist: TherapistProfile,
    hold: Hold | None,
    now: float,
    t: Timeouts,
) -> Request:
    """After this returns, the request is claimed by ``therapist``; else it
    raised, as :func:`check_claim` does."""
    return claimed(check_claim(request, therapist, hold, now), therapist, now, t)


def claimed(request: Request, therapist: TherapistProfile, now: float, t: Timeouts) -> Request:
    """``request`` as ``therapist``'s claim makes it, unchecked: for an
    adapter whose own step has already checked and written the claim
    (``claim.lua``), so that the request it reports is the one it stored."""
    return request.replace(
        state=State.CLAIMED,
        claimed_by=therapist.id,
        claimed_at=now,
        expires_at=now + t.claim_confirm_s,
        reason=None,
        updated_at=now,
    )


def check_claim(
    request: Request | None,
    therapist: TherapistProfile,
    hold: Hold | None,
    now: float,
) -> Request:
    """Whether ``therapist`` may claim ``request`` now: returns it if so, else
    raises the refusal. Applied to a request that is no longer waiting, it
    always raises: the answer a claim of it gets.

    A request past its deadline counts as expired even before its timer has
    fired, so nobody waits longer than the max wait in all.

    Checks, in this order: the request exists and is live (``not_found``), the
    therapist holds nothing else (``busy``), is qualified and was not declined
    (``not_eligible``), no referral head start keeps the request for another
    (``not_eligible``, :func:`head_start_holder`), the request was offered
    to the therapist (``not_eligible``, :func:`offered_to`), the request is
    waiting (``taken``).
    """
    if request is None or request.state in (State.CANCELLED, State.EXPIRED):
        raise NotFound("no such request")
    if request.state is State.WAITING and past_deadline(request, now):
        raise NotFound("the request has expired")
    if hold is not None:
        if hold.kind == "claim" and hold.id == request.id:
            raise Taken("you already hold this claim")
        raise Busy()
    if not may_see(therapist, request):
        raise NotEligible()
    if not eligible_during_head_start(request, therapist.id, now):
        raise NotEligible(HEAD_START)
    if not offered_to(request, therapist.id):
        raise NotEligible(NOT_OFFERED)
    if request.state is not State.WAITING:
        raise Taken()
    return request


def back_to_waiting(request: Request, reason: Reason, now: float, t: Timeouts) -> Request:
    """A claimed request returns to the pool (decline, release, therapist lost),
    unchecked: :func:`release` and :func:`decline` check first; an adapter
    whose own step checked and wrote it (``release.lua``, ``decline.lua``)
    builds its report with this alone."""
    declined = request.declined
    if reason is Reason.DECLINED and request.claimed_by is not None:
        declined = declined | {request.claimed_by}
    return request.replace(
        state=State.WAITING,
        claimed_by=None,
        claimed_at=None,
        expires_at=waiting_deadline_at(request.created_at, now, t),
        reason=str(reason),
        updated_at=now,
        declined=declined,
    )


def release(request: Request | None, therapist_id: str, now: float, t: Timeouts) -> Request:
    """The claiming therapist lets go; the request is waiting again."""
    if request is None:
        raise NotFound("no such request")
    if request.state is not State.CLAIMED or request.claimed_by != therapist_id:
        raise Forbidden("you do not hold a claim on this request")
    return back_to_waiting(request, Reason.RELEASED, now, t)


def past_deadline(request: Request, now: float) -> bool:
    """Whether the current state's deadline has passed (its timer may lag)."""
    return request.expires_at is not None and now >= request.expires_at


def _own_claimed(request: Request | None, client_id: str, now: float) -> Request:
    """The client's request with a live offer: an offer past its confirm
    deadline is treated as already expired."""
    if request is None or request.client_id != client_id:
        raise NotFound("no such request")
    if request.state is not State.CLAIMED or past_deadline(request, now):
        raise Taken("there is no offer on this request")
    return request


def decline(request: Request | None, client_id: str, now: float, t: Timeouts) -> Request:
    """The client declines the therapist; that therapist never sees it again."""
    req = _own_claimed(request, client_id, now)
    return back_to_waiting(req, Reason.DECLINED, now, t)


def ended_by(session: Session, user_id: str) -> EndReason:
    """Why a session ends when ``user_id`` ends it: ``ended_by_client`` or
    ``ended_by_therapist`` by its role; Forbidden for anyone else."""
    if session.role_of(user_id) is Role.CLIENT:
        return EndReason.ENDED_BY_CLIENT
    return EndReason.ENDED_BY_THERAPIST


def accept(request: Request | None, client_id: str, session_id: str, now: float) -> Request:
    """The client accepts the offer; the request is matched to a new session."""
    return matched(_own_claimed(request, client_id, now), session_id, now)


def matched(request: Request, session_id: str, now: float) -> Request:
    """``request`` as an accepted offer leaves it, unchecked: for an adapter
    whose own step has already checked and written the acceptance
    (``accept.lua``), so that the request it reports is the one it stored."""
    return request.replace(
        state=State.MATCHED,
        session_id=session_id,
        notes="",
        expires_at=None,
        reason=str(Reason.MATCHED),
        updated_at=now,
    )


def cancel(request: Request | None, client_id: str, now: float) -> Request:
    """The owning client cancels while ``waiting`` or ``claimed``."""
    if request is None or request.client_id != client_id:
        raise NotFound("no such request")
    if request.state not in (State.WAITING, State.CLAIMED):
        raise Taken("the request can no longer be cancelled")
    return cancelled(request, now)


def cancelled(request: Request, now: float) -> Request:
    """``request`` as its client's cancellation leaves it, unchecked (for an
    adapter whose ``cancel.lua`` has checked and written it)."""
    return request.replace(
        state=State.CANCELLED,
        notes="",
        expires_at=None,
        reason=str(Reason.CANCELLED),
        updated_at=now,
    )


def on_deadline(request: Request, now: float) -> Request | None:
    """The request's timer fired. Returns the expired request, or None if stale."""
    if not past_deadline(request, now):
        return None
    if request.state is State.WAITING:
        reason = Reason.NO_THERAPIST
    elif request.state is State.CLAIMED:
        reason = Reason.CLIENT_NO_RESPONSE
    else:
        return None
    return request.replace(
        state=State.EXPIRED, notes="", expires_at=None, reason=str(reason), updated_at=now
    )


def on_therapist_lost(
    request: Request, therapist_id: str, now: float, t: Timeouts
) -> Request | None:
    """The claiming therapist stayed away past the grace: back to waiting."""
    if request.state is not State.CLAIMED or request.claimed_by != therapist_id:
        return None
    return back_to_waiting(request, Reason.THERAPIST_LOST, now, t)


def hold_after(request: Request) -> Hold | None:
    """What the claiming therapist holds once ``request`` is in its state."""
    if request.state is State.CLAIMED and request.claimed_by is not None:
        return Hold("claim", request.id)
    if request.state is State.MATCHED and request.session_id is not None:
        return Hold("session", request.session_id)
    return None


# -- a therapist console's presence (who gets request.new) ---------------------------------

#: Frames to a therapist that start its hold (a claim or an open session).
HOLDING_FRAMES = frozenset({"claim.ok", "session.ready"})
#: Frames to a therapist that end its hold: it may get offers again.
FREEING_FRAMES = frozenset(
    {"claim.declined", "claim.released", "claim.expired", "claim.cancelled", "session.ended"}
)


@dataclass(frozen=True, slots=True)
class Presence:
    """What a therapist's console knows of itself. Only a console that is
    available and not busy (no claim, no open session) gets ``request.new``
    (PROTOCOL.md §4: a therapist holding something gets no offers)."""

    available: bool = False
    busy: bool = False

    @property
    def gets_offers(self) -> bool:
        return gets_offers(self.available, self.busy)


def gets_offers(available: bool, busy: bool) -> bool:
    """:attr:`Presence.gets_offers` without making a Presence (the fan-out
    asks it of every console)."""
    return available and not busy


def presence_after(presence: Presence, frame: Mapping[str, Any]) -> tuple[Presence, bool]:
    """A therapist console's presence once ``frame`` has reached it, and whether
    it now gets offers after a stretch without them (busy, or away): it missed
    every ``request.new`` meanwhile, so it needs the pool as it now is (a
    ``pool.snapshot``)."""
    ftype = frame.get("type")
    if ftype in HOLDING_FRAMES:
        return Presence(presence.available, busy=True), False
    if ftype in FREEING_FRAMES:
        return Presence(presence.available, busy=False), presence.busy
    if ftype == "status.ok":
        available = bool(frame.get("available"))
        back = available and not presence.available and not presence.busy
        return Presence(available, presence.busy), back
    return presence, False


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]
