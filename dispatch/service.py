"""What users can do to the pool, with the side effects the protocol promises.

Each method applies one atomic store step, then publishes the resulting
effects on the bus, so every server tells its own connections. ``origin``
(the connection id and the ``ref`` of the frame that asked) travels with the
effects so that only the asking connection sees its ``ref`` echoed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import time
from collections.abc import Awaitable, Callable

from core.bus import Bus, Outgoing
from core.errors import (
    DispatchError,
    Forbidden,
    InsufficientFunds,
    NotEligible,
    NotFound,
    Taken,
)
from core.identity import Role, User
from core.logs import get_logger
from dispatch.guard import GuardedIds
from dispatch.metrics import Metrics
from pool import effects as fx
from pool import rules
from pool.effects import Change, Effect
from pool.model import Draft, OfferCandidate, Request, Session, State, TherapistProfile
from pool.store import Claimed, PoolStore
from signaling.ice import IceProvider
from signaling.records import Records
from wallet.ledger import Ledger

log = get_logger(component="service")

Origin = tuple[str, str | None]  # (conn_id, ref)
Clock = Callable[[], float]
#: ``client id -> the therapist whose referral code it used`` (care.referral).
ReferrerOf = Callable[[str], Awaitable[str | None]]
#: How much later than ``now - DISPATCH_OFFER_WIDEN_S`` the due-widening read reaches.
_WIDEN_SLACK_S = 0.001


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def booked_session_id(booking_id: str) -> str:
    """The session id of a booking's call: derived, so every server agrees."""
    return f"s-{booking_id}"


class Dispatcher:
    def __init__(
        self,
        store: PoolStore,
        bus: Bus[Effect],
        metrics: Metrics,
        ice: IceProvider,
        records: Records,
        ledger: Ledger,
        *,
        min_balance_minor: int,
        clock: Clock = time.time,
        guarded: GuardedIds | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.metrics = metrics
        self.ice = ice
        self.records = records
        self.ledger = ledger
        self.min_balance_minor = min_balance_minor
        self.clock = clock
        #: The therapists near a booked session (:mod:`dispatch.guard`); None: nobody.
        self.guarded = guarded
        #: Referral (PROTOCOL.md §10): who referred a client, and how long its
        #: therapist has a referred client's requests alone (build_context sets them).
        self.referrer_of: ReferrerOf | None = None
        self.head_start_s = 0.0
        #: Offer to a few at a time (``DISPATCH_OFFER_FANOUT``; 0: to every
        #: eligible therapist) and how often such an offer widens.
        self.offer_fanout = 0
        self.offer_widen_s = 10.0
        #: Request id -> the outcome of the claim of it in flight on this
        #: process: (settled for everyone, the request as it then was).
        self._claiming: dict[str, asyncio.Future[tuple[bool, Request | None]]] = {}

    # -- publishing --------------------------------------------------------
    async def publish(
        self, change: Change, actor: str | None = None, origin: Origin | None = None
    ) -> None:
        ice = await self.ice.ice_servers() if change.session is not None else []
        out = fx.effects(change, ice)
        if origin is not None and actor is not None:
            conn, ref = origin
            out = [dataclasses.replace(e, conn=conn, ref=ref) if e.to == actor else e for e in out]
        self._log_change(change)
        await self.bus.publish(out)

    def _log_change(self, change: Change) -> None:
        after = change.after
        log.info(
            "request.state",
            request_id=after.id,
            user_id=after.client_id,
            therapist_id=after.claimed_by or change.lost_therapist,
            state=str(after.state),
            previous=str(change.before.state) if change.before is not None else None,
            reason=after.reason,
            session_id=after.session_id,
        )

    # -- therapists ----------------------------------------------------------
    async def put_profile(self, profile: TherapistProfile) -> None:
        await self.store.put_profile(profile)
        await self.bus.publish([Effect("profile", to=profile.id)])
        log.info("therapist.profile_saved", user_id=profile.id)

    async def set_status(self, user: User, available: bool, origin: Origin | None) -> bool:
        now_available = await self.store.set_available(user.id, available)
        conn, ref = origin if origin is not None else (None, None)
        frame = {"type": "status.ok", "available": now_available}
        await self.bus.publish([Effect("user", to=user.id, frame=frame, conn=conn, ref=ref)])
        log.info("therapist.status", user_id=user.id, available=now_available)
        return now_available

    async def claim(
        self,
        user: User,
        request_id: str,
        origin: Origin | None,
        *,
        profile: TherapistProfile | None = None,
        busy: bool = True,
    ) -> Change:
        """``claim`` (PROTOCOL.md §5). ``profile`` and ``busy``: what the
        asking console already knows of its therapist (the hub keeps both
        current from the bus), sparing a read; ``busy=False`` lets the claim
        be answered from another claim of the same request (see
        :meth:`_store_claim`)."""
        if profile is None or profile.id != user.id:
            profile = await self.store.get_profile(user.id)
        if profile is None:
            self.metrics.claims.labels(outcome="not_eligible").inc()
            raise Forbidden("no therapist profile for this user")
        if self.guarded is not None and user.id in await self.guarded(self.clock()):
            # The guard near a booked session (PROTOCOL.md §8, pool.rules.guarded).
            self.metrics.claims.labels(outcome="not_eligible").inc()
            raise NotEligible("a booked session of yours starts soon: no quick connect now")
        if not profile.accepting_new_clients:
            # The pause on new clients (PROTOCOL.md §7): the request's client
            # must be one this therapist has had a session with.
            req = await self.store.get(request_id)
            if req is not None and rules.paused_for(
                profile, await self.knows_client(profile.id, req.client_id)
            ):
                self.metrics.claims.labels(outcome="not_eligible").inc()
                raise NotEligible("not accepting new clients: this client is new to you")
        try:
            change = await self._store_claim(request_id, profile, busy)
        except DispatchError as exc:
            self.metrics.claims.labels(outcome=exc.code).inc()
            raise
        self.metrics.claims.labels(outcome="won").inc()
        await self.publish(change, user.id, origin)
        return change

    async def _store_claim(self, request_id: str, profile: TherapistProfile, busy: bool) -> Change:
        """The store's claim, one per request at a time on this process.

        When a hundred consoles claim the same request at once, the first
        claim of it here goes to the store; the others wait for its outcome
        instead of queueing one atomic step each behind it. If that outcome
        leaves the request no longer waiting (claimed, by the first or by
        someone on another server, or gone), every waiting claim is answered
        at once by the pool's own rule (:func:`pool.rules.check_claim`)
        applied to the request as it then was: the answer the store would
        have given a moment later. A claim whose therapist may hold
        something (``busy``) and any claim after an outcome that was the
        first's alone (busy, not eligible) go to the store themselves."""
        while not busy and (ahead := self._claiming.get(request_id)) is not None:
            known, then = await asyncio.shield(ahead)
            if known:
                # Raises: the request was gone or no longer waiting.
                rules.check_claim(then, profile, None, self.clock())
        first = self._claiming.get(request_id) is None
        outcome: asyncio.Future[tuple[bool, Request | None]] | None = None
        if first:
            outcome = asyncio.get_running_loop().create_future()
            self._claiming[request_id] = outcome
        try:
            change = await self.store.claim(request_id, profile, self.clock())
            if outcome is not None:
                outcome.set_result((True, change.after))
            return change
        except (Taken, NotFound) as exc:
            if outcome is not None:
                # Settled for everyone: the request as it now is (as the pool
                # found it, or one read shared by every claim waiting here).
                request: Request | None = exc.request if isinstance(exc, Claimed) else None
                if request is None:
                    with contextlib.suppress(DispatchError):
                        request = await self.store.get(request_id)
                settled = request is None or request.state is not State.WAITING
                outcome.set_result((settled, request))
            raise
        finally:
            if outcome is not None:
                if not outcome.done():  # busy, not eligible, unavailable, cancelled
                    outcome.set_result((False, None))
                del self._claiming[request_id]

    async def release(self, user: User, request_id: str, origin: Origin | None) -> Change:
        change = await self.store.release(request_id, user.id, self.clock())
        await self.publish(change, user.id, origin)
        return change

    async def knows_client(self, therapist_id: str, client_id: str) -> bool:
        """Whether the client has had a session with the therapist."""
        return client_id in await self.records.clients_known(therapist_id, [client_id])

    # -- clients -------------------------------------------------------------
    async def create_request(
        self,
        user: User,
        draft: Draft,
        idempotency_key: str | None,
        before_pool: Callable[[str], Awaitable[None]] | None = None,
    ) -> tuple[Request, Change | None]:
        """Returns the request and its creation, or ``None`` for a replay of
        the same idempotency key (the change carries the request's place in
        the queue).

        A client in an open session may not ask for another therapist: the
        pool refuses it in the same atomic step that creates the request.
        Money held for bookings does not count (PROTOCOL.md §8).

        ``before_pool`` is awaited with the new request's id once every
        check before the pool's has passed, just before the pool step: what
        must exist before the request does (a minor's guardian consent). If
        it raises, no request is made."""
        balance = await self.ledger.available(user.id)
        if balance < self.min_balance_minor:
            raise InsufficientFunds(
                "top up the wallet to talk now",
                balance_minor=balance,
                required_minor=self.min_balance_minor,
            )
        draft = await self._with_head_start(user.id, draft)
        draft = await self._with_offers(user.id, draft)
        request_id = new_id("req")
        if before_pool is not None:
            await before_pool(request_id)
        request, change = await self.store.create(
            draft, user.id, request_id, self.clock(), idempotency_key, self._announcement
        )
        if change is not None:
            self.metrics.requests_created.inc()
            if change.announced:  # published by the creating step itself
                self._log_change(change)
            else:
                await self.publish(change)
        return request, change

    def _announcement(self, change: Change) -> Outgoing | None:
        """A creation's effects, encoded for the pool to publish in the
        creating step (:meth:`pool.store.PoolStore.create`). A creation opens
        no session: no ICE servers, no origin to answer."""
        return self.bus.outgoing(fx.effects(change))

    async def _with_head_start(self, client_id: str, draft: Draft) -> Draft:
        """``draft`` with its referring therapist's head start (PROTOCOL.md §10)
        when the client was referred and that therapist would be offered the
        request now (:func:`pool.rules.head_start_applies`); else unchanged.
        The referral unreadable (the database down) costs the head start, never
        the request."""
        if self.referrer_of is None or self.head_start_s <= 0:
            return draft
        try:
            tid = await self.referrer_of(client_id)
        except DispatchError as exc:
            log.warning("referral.unreadable", user_id=client_id, code=exc.code)
            return draft
        if tid is None:
            return draft
        profile = await self.store.get_profile(tid)
        guarded = self.guarded is not None and tid in await self.guarded(self.clock())
        paused = (
            profile is not None
            and not profile.accepting_new_clients
            and rules.paused_for(profile, await self.knows_client(tid, client_id))
        )
        applies = rules.head_start_applies(
            profile,
            draft,
            watching=await self.store.is_available(tid),
            busy=await self.store.hold_of(tid) is not None,
            guarded=guarded,
            paused=paused,
        )
        log.info("referral.head_start", user_id=client_id, therapist_id=tid, applies=applies)
        if not applies:
            return draft
        return dataclasses.replace(draft, referred_to=tid, head_start_s=self.head_start_s)

    # -- offer to a few at a time (DISPATCH_OFFER_FANOUT) ---------------------
    async def offer_candidates(self, client_id: str, region: str) -> list[OfferCandidate]:
        """The therapists a request of ``client_id`` in ``region`` could be
        offered now: available, free and licensed there (the pool's
        :meth:`~pool.store.PoolStore.offer_candidates`),
        neither guarded near a booked session nor paused for this client
        (the same as who gets ``request.new``); qualification is the rule's.
        A bounded number of round trips whatever the number of therapists: one
        to the pool, the guard's (cached), and one query when any is paused."""
        candidates = await self.store.offer_candidates(region)
        if not candidates:
            return []
        guarded = set() if self.guarded is None else await self.guarded(self.clock())
        candidates = [c for c in candidates if c.profile.id not in guarded]
        # One query for every paused therapist, not one each.
        paused = [c.profile.id for c in candidates if not c.profile.accepting_new_clients]
        known = await self.records.therapists_known_to(client_id, paused) if paused else set()
        return [c for c in candidates if not rules.paused_for(c.profile, c.profile.id in known)]

    async def _with_offers(self, client_id: str, draft: Draft) -> Draft:
        """``draft`` offered to the ``offer_fanout`` best-placed therapists
        (:func:`pool.rules.next_offers`), stored with the request so that
        every server offers it to the same ones; unchanged when the setting
        is off."""
        if self.offer_fanout <= 0:
            return draft
        candidates = await self.offer_candidates(client_id, draft.region)
        offered = rules.next_offers(draft, frozenset(), candidates, self.offer_fanout)
        self.metrics.offers_first.labels(to="everyone" if offered is None else "few").inc()
        if offered is not None:
            self.metrics.offer_first_size.observe(len(offered))
        log.info(
            "offer.first",
            user_id=client_id,
            candidates=len(candidates),
            offered=None if offered is None else len(offered),
        )
        return dataclasses.replace(draft, offered=offered)

    async def widen_offers(self, limit: int = 100) -> int:
        """Offer each waiting request offered to a few, whose time has come
        (:func:`pool.rules.widen_due`), to ``offer_fanout`` more: the pool
        stores the wider offer once across servers (the others' attempts come
        back None), and the one that stored it announces it on the bus to the
        therapists newly offered. Returns how many requests widened here.

        The due ones come from the pool's due-widening index
        (:meth:`~pool.store.PoolStore.due_widenings`), at most ``limit`` a
        call, oldest first (the next tick takes the rest), never from a scan
        of every waiting request; the rule still decides."""
        if self.offer_fanout <= 0:
            return 0
        now = self.clock()
        widened = 0
        # A millisecond of slack: float rounding of ``now - widen_s`` must never
        # hide a request the rule finds due (the rule filters exactly).
        upto = now - self.offer_widen_s + _WIDEN_SLACK_S
        for req in await self.store.due_widenings(upto, limit):
            if not rules.widen_due(req, now, self.offer_widen_s) or req.widened_at is None:
                continue
            candidates = await self.offer_candidates(req.client_id, req.region)
            wider = rules.widened(req, candidates, self.offer_fanout, now)
            change = await self.store.widen(req.id, req.widened_at, wider.offered, now)
            if change is None:
                continue
            self.metrics.offer_widenings.labels(
                to="everyone" if wider.offered is None else "few"
            ).inc()
            already = sorted(req.offered or ())
            await self.bus.publish(
                [Effect("widened", request=change.after, frame={"already": already})]
            )
            log.info(
                "offer.widened",
                request_id=req.id,
                offered=None if wider.offered is None else len(wider.offered),
            )
            widened += 1
        return widened

    async def get_request(self, user: User, request_id: str) -> tuple[Request, int | None]:
        request = await self.store.get(request_id)
        if request is None or (user.role is not Role.OPERATOR and request.client_id != user.id):
            raise NotFound("no such request")
        position = await self.store.position(request_id)
        return request, position

    async def cancel(self, user: User, request_id: str, origin: Origin | None = None) -> Change:
        change = await self.store.cancel(request_id, user.id, self.clock())
        self.metrics.cancellations.inc()
        await self.publish(change, user.id, origin)
        return change

    async def accept(
        self, user: User, request_id: str, terms_version: str, origin: Origin | None
    ) -> Change:
        """Match the request and open its session; the durable record is
        written before anyone is told, so the call log never misses a call."""
        now = self.clock()
        try:
            change = await self.store.accept(request_id, user.id, new_id("ses"), now)
        except Taken:
            change = await self._unrecorded_match(user, request_id)
        after = change.after
        if change.session is not None:
            # The pool's accept hands the therapist's profile back with the match.
            profile = change.therapist or await self.store.get_profile(change.session.therapist_id)
            await self.records.session_matched(
                change.session,
                after,
                client_name=user.name,
                therapist_name=profile.name if profile is not None else None,
                terms_version=terms_version,
                now=now,
            )
        self.metrics.matches.inc()
        if change.before is not None and change.before.claimed_at is not None:
            self.metrics.wait_time.observe(change.before.claimed_at - after.created_at)
        await self.publish(change, user.id, origin)
        return change

    async def _unrecorded_match(self, user: User, request_id: str) -> Change:
        """A retried accept whose first try matched in the pool but failed to
        write the durable record: finish that match instead of refusing it.
        Raises ``Taken`` again for any other request that is not on offer."""
        req = await self.store.get(request_id)
        session = (
            await self.store.get_session(req.session_id)
            if req is not None and req.session_id is not None
            else None
        )
        if (
            req is None
            or session is None
            or req.client_id != user.id
            or req.state is not State.MATCHED
            or await self.records.get_session(session.id) is not None
        ):
            raise Taken("there is no offer on this request")
        return Change(req.replace(state=State.CLAIMED), req, session=session)

    async def decline(self, user: User, request_id: str, origin: Origin | None) -> Change:
        change = await self.store.decline(request_id, user.id, self.clock())
        await self.publish(change, user.id, origin)
        return change

    # -- booked calls (PROTOCOL.md §8) -------------------------------------------
    async def open_booked(
        self, user: User, booking_id: str, client_id: str, therapist_id: str
    ) -> Session:
        """Open (or rejoin) the call of a booking: the same session for both
        participants and every retry, on any server (its id is
        :func:`booked_session_id`). Whether ``user`` may, and whether it is
        the time, is the caller's check (the booking's rules). The durable
        record is written (again, harmlessly, on a rejoin) before anyone is
        told; the call that opened it then sends each participant
        ``session.ready`` (the therapist's consoles count it as busy), as after
        a quick-connect match. Raises the pool's Busy / RequestExists /
        Conflict (:meth:`pool.store.PoolStore.open_booked_session`)."""
        now = self.clock()
        session = await self.store.open_booked_session(
            booked_session_id(booking_id), booking_id, client_id, therapist_id, now
        )
        if not session.is_open:
            return session
        profile = await self.store.get_profile(therapist_id)
        await self.records.session_booked(
            session,
            client_name=user.name if user.id == client_id else None,
            therapist_name=profile.name if profile is not None else None,
            now=now,
        )
        if session.created_at != now:
            return session  # opened before (the peer, a retry): they were told then
        ice = await self.ice.ice_servers()
        frame = fx.session_ready_frame(session, ice)
        await self.bus.publish(
            [Effect("user", to=u, frame=frame) for u in (client_id, therapist_id)]
        )
        log.info(
            "session.booked_opened",
            session_id=session.id,
            booking_id=booking_id,
            user_id=user.id,
        )
        return session

    # -- timers --------------------------------------------------------------
    async def fired(self, change: Change) -> None:
        """Announce a change a timer made (deadline or claim grace)."""
        if change.after.state is State.EXPIRED:
            self.metrics.expiries.labels(reason=change.after.reason or "unknown").inc()
        await self.publish(change)
