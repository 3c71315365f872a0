"""Everything one server process holds, wired together: the store, the bus,
the hub, the domains' services; what a reconnecting console is sent
(:meth:`AppContext.resume`); start and stop. The background loops are
:mod:`dispatch.loops`'.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from care.audit import AuditTrail
from care.datakeys import DataKeys
from care.erasure import Erasures
from care.export import CareExport
from care.feedback import FeedbackStore
from care.referral import Referrals
from care.safeguarding import Safeguarding
from core.bus import Bus
from core.db import Database
from core.errors import BadInput, DispatchError
from core.identity import Role, User
from core.logs import get_logger
from core.wire import Encoded
from dispatch import frames
from dispatch.guard import Guard
from dispatch.hub import Conn, Held, Hub, PoolRead
from dispatch.loops import Loops
from dispatch.metrics import Metrics
from dispatch.ratelimit import KeyedLimiter
from dispatch.service import Dispatcher
from dispatch.settings import Settings
from notify.contacts import ClientContacts, Contacts
from notify.email import EmailWorker
from notify.outbox import Outbox
from notify.rounds import TextRounds
from notify.sms import SmsWorker
from photos.store import Photos
from pool import effects as fx
from pool.effects import Effect
from pool.model import PoolStats, Request, State
from pool.store import PoolStore
from schedule.store import Bookings
from signaling.ice import IceProvider
from signaling.metering import Metering
from signaling.relay import Signaling
from wallet.cards import Payments
from wallet.ledger import Ledger

log = get_logger(component="context")

#: ``texts_sent_15m``, ``texts_failed_15m``: how far back they count.
TEXT_STATS_WINDOW_S: Final = 900.0
#: A text that went out (whatever the network made of it since).
SENT_STATES: Final = ("sent", "delivered", "undelivered")
#: How many consoles a resync reads at once: each resume is a few reads, and
#: the bus delivers nothing until the resync is done. Well under the Redis
#: and database pools (64; 20 + 10 by default).
RESYNC_AT_ONCE: Final = 16


@dataclass(slots=True)
class _Resume:
    """One console's resume under way (:meth:`AppContext.resume`): what it
    holds back, and the console's sequence numbers when it began."""

    conn: Conn
    slot: Held
    told: int
    presence: int
    done: asyncio.Event

    @classmethod
    def begin(cls, conn: Conn) -> _Resume:
        """Mark ``conn`` resuming (it must not be) and hold back its frames."""
        assert conn.resuming is None, "one resume at a time per console"
        done = conn.resuming = asyncio.Event()
        return cls(conn, conn.hold_back(), conn.told_seq, conn.presence_seq, done)

    def end(self, out: list[dict[str, Any]]) -> None:
        """Send ``out`` (what was read), then what was held back meanwhile."""
        self.conn.release(self.slot, [Encoded(frame) for frame in out])
        self.conn.resuming = None
        self.done.set()


@dataclass
class AppContext:
    settings: Settings
    store: PoolStore
    bus: Bus[Effect]
    metrics: Metrics
    hub: Hub
    dispatcher: Dispatcher
    signaling: Signaling
    db: Database
    ice: IceProvider
    ledger: Ledger
    outbox: Outbox
    contacts: Contacts
    #: Clients' email addresses for their booking emails (``/v1/me/contact``).
    client_contacts: ClientContacts
    photos: Photos
    metering: Metering
    #: Paying in (PROTOCOL.md §9): Stripe, the --dev test page, or off.
    payments: Payments
    #: Scheduled care (PROTOCOL.md §8): availability, bookings and their holds.
    bookings: Bookings
    #: Deciding texts and sending them (None: texting is off).
    texts: TextRounds | None = None
    sms: SmsWorker | None = None
    #: Sending emails (None: emails are off).
    mail: EmailWorker | None = None
    #: Safeguarding alerts (PROTOCOL.md §10; build_context sets it).
    safeguarding: Safeguarding | None = None
    #: Clients' feedback on sessions (PROTOCOL.md §10; build_context sets it).
    feedback: FeedbackStore | None = None
    #: Clients' own data keys (PROTOCOL.md §10; build_context sets it).
    data_keys: DataKeys | None = None
    #: The audit trail of reads of clinical records (PROTOCOL.md §10).
    audit: AuditTrail | None = None
    #: Referral codes and links (PROTOCOL.md §10; build_context sets it).
    referrals: Referrals | None = None
    #: Erasing clients (PROTOCOL.md §10; build_context sets it).
    erasures: Erasures | None = None
    #: The care records' part of ``GET /v1/me/export`` (build_context sets it).
    care_export: CareExport | None = None
    #: The quick-connect guard near a booked session (PROTOCOL.md §8): the
    #: same object whose ``ids`` the hub, the dispatcher and the texts were
    #: given; the loops refresh it. The default guards nobody.
    guard: Guard = field(default_factory=Guard)
    clock: Callable[[], float] = time.time
    #: HTTP calls per user (settings ``http_rate_per_s``, ``http_rate_burst``).
    http_limiter: KeyedLimiter = field(default_factory=lambda: KeyedLimiter(10.0, 30))
    loops: Loops = field(init=False)

    def __post_init__(self) -> None:
        self.loops = Loops(self)

    async def stats_body(self, now: float, stats: PoolStats | None = None) -> dict[str, Any]:
        """The body of ``pool.stats`` and ``GET /v1/pool/stats``: the pool's
        numbers and the texts'. With the database down the texts' are left
        out rather than the pool's withheld."""
        if stats is None:
            stats = await self.store.stats(now)
        try:
            texts = await self.text_stats(now)
        except DispatchError as exc:
            log.warning("stats.texts_unavailable", code=exc.code)
            texts = {}
        return {**stats.public(), **texts}

    async def text_stats(self, now: float) -> dict[str, int]:
        """``pool.stats``' text counters (PROTOCOL.md §7): the last 15 minutes."""
        since = now - TEXT_STATS_WINDOW_S
        return {
            "texts_sent_15m": await self.outbox.count("sms", SENT_STATES, since),
            "texts_failed_15m": await self.outbox.count("sms", ("failed",), since),
        }

    # -- frames built from the store (the builders are the pool's) ----------
    async def offer_frame(self, req: Request) -> dict[str, Any] | None:
        if req.state is not State.CLAIMED or req.claimed_by is None:
            return None
        profile = await self.store.get_profile(req.claimed_by)
        if profile is None:
            return None
        return fx.offer_frame(req, profile)

    async def session_frame(self, user: User, conn: Conn, frame: frames.Inbound) -> None:
        """Frames inside a session (signaling, chat, notes, ending)."""
        sig = self.signaling
        match frame:
            case frames.SessionJoin(session_id=sid):

                def answer(out: list[dict[str, Any]]) -> None:
                    for f in out:
                        conn.send_frame(f)

                await sig.join(user.id, sid, frame.ref, answer)
            case frames.RtcSignal(session_id=sid, data=data):
                await sig.signal(user.id, sid, data)
            case frames.ChatSend(session_id=sid, text=text, client_msg_id=cmid):
                await sig.chat(user.id, sid, text, cmid, (conn.id, frame.ref))
            case frames.NoteSave(session_id=sid, text=text):
                await sig.note(user.id, user.role, sid, text, (conn.id, frame.ref))
            case frames.SessionEnd(session_id=sid):
                await sig.end(user.id, sid, (conn.id, frame.ref))
            case _:
                raise BadInput(f"{frame.TYPE} is not a frame this server serves")

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        await self.bus.start(self.hub.deliver, self.resync)
        self.loops.start()
        log.info("server.started", server_id=self.settings.server_id)

    async def stop(self) -> None:
        await self.loops.stop()
        await self.payments.aclose()
        if self.sms is not None:
            await self.sms.sender.aclose()
        await self.hub.close_all(1001, "server shutting down")
        # Let the readers record their disconnects (arming graces) before the
        # store closes; whatever is left the other servers' reaper cleans up.
        for _ in range(40):
            if not self.hub.all():
                break
            await asyncio.sleep(0.05)
        await self.bus.aclose()
        await self.store.aclose()
        await self.db.aclose()

    async def resume(self, conn: Conn) -> None:
        """Send a console everything it needs to pick up where the pool is:
        a therapist its snapshot and its claim, a client its request and
        offer, either its open session.

        What is read here may be overtaken while it is read: the bus's
        deliveries run on meanwhile (a console opening, a resync from the
        heartbeat). So frames delivered to the console during the reads
        wait and go out after what was read (:meth:`Conn.hold_back`), and
        what was read does not overwrite what a delivery set meanwhile (the
        therapist's busy flag, the client's request and place): the newer
        state wins on the console and here. Two resumes of one console (a
        resync while it opens) run one after the other, each reading afresh
        (the state each writes back is then the newer read's)."""
        while conn.resuming is not None:  # one at a time per console
            await conn.resuming.wait()
        await self._read_state(_Resume.begin(conn), None)

    async def _read_state(self, r: _Resume, pool: PoolRead | None) -> None:
        """Read ``r``'s console's state (the snapshot from ``pool`` when
        given, read after ``r`` began), send it and what was held back
        meanwhile, and end the resume."""
        conn, store, user = r.conn, self.store, r.conn.user
        out: list[dict[str, Any]] = []
        try:
            if user.role is Role.THERAPIST:
                out.append(await self.hub.snapshot(conn.profile, pool))
                hold = await store.hold_of(user.id)
                if conn.presence_seq == r.presence:
                    conn.busy = hold is not None
                if hold is not None and hold.kind == "claim":
                    req = await store.get(hold.id)
                    if req is not None and req.state is State.CLAIMED:
                        out.append(fx.claim_ok_frame(req))
            elif user.role is Role.CLIENT:
                req = await store.active_request_of(user.id)
                position = None if req is None else await store.position(req.id)
                if conn.told_seq == r.told:
                    conn.told(req.id if req is not None else None, position)
                if req is not None:
                    out.append({"type": "request.state", "request": req.public(position)})
                    offer = await self.offer_frame(req)
                    if offer is not None:
                        out.append(offer)
            session = await store.open_session_of(user.id)
            if session is not None:
                ice = await self.ice.ice_servers()
                out.append(fx.session_ready_frame(session, ice))
        finally:
            r.end(out)

    async def resync(self) -> None:
        """After the bus missed events: re-send every local console its state
        (as :meth:`resume`). The bus awaits this before it delivers again, so
        it is read in bulk: every console's resume begins (holding back what
        is delivered to it) before the waiting requests are read, once for
        all snapshots; then the rest of each console's state is read,
        :data:`RESYNC_AT_ONCE` consoles at a time. A console already resuming
        (one opening) resumes again after, reading afresh. The first failure
        stops the pass (each console then gets what was held back for it)
        and is raised as itself: the bus then subscribes again and resyncs
        anew."""
        begun: list[_Resume] = []
        later: list[Conn] = []
        for conn in self.hub.all():
            if conn.user.role is Role.OPERATOR:
                continue
            if conn.resuming is None:
                begun.append(_Resume.begin(conn))
            else:
                later.append(conn)
        todo, again = iter(begun), iter(later)
        try:
            therapists = any(r.conn.user.role is Role.THERAPIST for r in begun)
            pool = await self.hub.read_pool() if therapists else None

            async def worker() -> None:
                for r in todo:  # iterators shared: each console read once
                    await self._read_state(r, pool)
                for conn in again:  # each after the resume under way ends
                    await self.resume(conn)

            try:
                async with asyncio.TaskGroup() as tg:
                    for _ in range(min(RESYNC_AT_ONCE, len(begun) + len(later))):
                        tg.create_task(worker())
            except* Exception as group:
                raise group.exceptions[0] from None
        finally:
            for r in todo:  # never read (a failure): what was held back goes out
                r.end([])
