"""Everything one server process holds, wired together, and its background loops.

Loops (each survives its dependency being down and logs why):

- timers: every ``timer_tick_s`` fire due deadlines and graces (the store makes
  each fire exactly once across servers), ending sessions whose participant
  stayed away past the grace (``peer_lost``);
- stats: every ``stats_interval_s`` read the pool's numbers, push ``pool.stats``
  to local operators and set the gauges;
- heartbeat: every ``heartbeat_s`` mark this server alive, and reap servers
  silent for ``server_dead_after_s`` so their users' graces start;
- billing: every ``billing_tick_s`` warn sessions a minute before their money
  runs out and end those where it has (:mod:`signaling.metering`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from core.bus import Bus
from core.db import Database
from core.errors import BadInput, DispatchError
from core.identity import Role, User
from core.logs import get_logger
from dispatch import frames
from dispatch.hub import Conn, Hub
from dispatch.metrics import Metrics
from dispatch.ratelimit import KeyedLimiter
from dispatch.service import Dispatcher
from dispatch.settings import Settings
from pool import effects as fx
from pool.effects import Effect
from pool.model import Request, Session, SessionState, State
from pool.store import PoolStore
from signaling.ice import IceProvider
from signaling.metering import Metering
from signaling.relay import Signaling
from wallet.ledger import Ledger

log = get_logger(component="context")


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
    metering: Metering
    clock: Callable[[], float] = time.time
    #: HTTP calls per user (settings ``http_rate_per_s``, ``http_rate_burst``).
    http_limiter: KeyedLimiter = field(default_factory=lambda: KeyedLimiter(10.0, 30))
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _beats: int = 0
    _stopping: bool = False
    _billing_turns: int = 0

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
        s = self.settings
        self.tasks = [
            asyncio.create_task(self._every(s.timer_tick_s, self._tick), name="timers"),
            asyncio.create_task(self._every(s.stats_interval_s, self._stats), name="stats"),
            asyncio.create_task(self._every(s.heartbeat_s, self._heartbeat), name="heartbeat"),
            asyncio.create_task(self._every(s.billing_tick_s, self._billing), name="billing"),
        ]
        log.info("server.started", server_id=s.server_id)

    async def stop(self) -> None:
        self._stopping = True
        for task in self.tasks:
            task.cancel()
        # A cancel can be swallowed by a Redis call in flight (redis-py retries);
        # the stop flag ends the loop at its next turn, and the wait is bounded
        # so shutdown never hangs on it.
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=2.0)
        self.tasks = []
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
        offer, either its open session."""
        store, user = self.store, conn.user
        if user.role is Role.THERAPIST:
            conn.send_frame(await self.hub.snapshot(conn.profile))
            hold = await store.hold_of(user.id)
            conn.busy = hold is not None
            if hold is not None and hold.kind == "claim":
                req = await store.get(hold.id)
                if req is not None and req.state is State.CLAIMED:
                    conn.send_frame(fx.claim_ok_frame(req))
        elif user.role is Role.CLIENT:
            req = await store.active_request_of(user.id)
            conn.request_id = req.id if req is not None else None
            if req is not None:
                position = await store.position(req.id)
                conn.last_position = position
                conn.send_frame({"type": "request.state", "request": req.public(position)})
                offer = await self.offer_frame(req)
                if offer is not None:
                    conn.send_frame(offer)
        session = await store.open_session_of(user.id)
        if session is not None:
            ice = await self.ice.ice_servers()
            conn.send_frame(fx.session_ready_frame(session, ice))

    async def resync(self) -> None:
        """After the bus missed events: re-send every local console its state."""
        for conn in self.hub.all():
            if conn.user.role is not Role.OPERATOR:
                await self.resume(conn)

    async def _every(self, interval: float, step: Callable[[], Awaitable[None]]) -> None:
        failing = False
        while not self._stopping:
            try:
                await step()
                if failing:
                    log.info("loop.recovered", loop=step.__name__)
                failing = False
            except asyncio.CancelledError:
                raise
            except DispatchError as exc:
                if not failing:
                    log.warning("loop.failing", loop=step.__name__, code=exc.code)
                failing = True
            except Exception:
                log.exception("loop.crashed", loop=step.__name__)
                failing = True
            await asyncio.sleep(interval)

    async def _tick(self) -> None:
        while True:
            fired = await self.store.fire_due(self.clock())
            for item in fired:
                # One failed announcement must not drop the rest of the batch;
                # the repair turn of the billing loop finishes a lost session.
                try:
                    if isinstance(item, Session):
                        await self.signaling.finish(item)  # a participant lost past the grace
                    else:
                        await self.dispatcher.fired(item)
                except DispatchError as exc:
                    log.warning("timer.announce_failed", code=exc.code)
            if not fired:
                return

    async def _billing(self) -> None:
        """Funds warnings and exhaustion, each once across servers; every
        tenth turn, settle what a dead server left unsettled."""
        await self.metering.warn_due()
        for ended in await self.metering.exhausted_due():
            await self.signaling.finish(ended)
        self._billing_turns += 1
        if self._billing_turns % 10 == 0:
            await self._repair()

    async def _repair(self) -> None:
        """Finish what a failure left half done: sessions the pool ended while
        the database could not record it, and ended sessions left unsettled."""
        for sid in await self.metering.open_session_ids(self.clock()):
            session = await self.store.get_session(sid)
            if session is not None and session.state is SessionState.ENDED:
                await self.signaling.finish(session)
        await self.metering.sweep()

    async def _stats(self) -> None:
        stats = await self.store.stats(self.clock())
        self.metrics.set_pool(stats)
        if self.hub.operators:
            self.hub.broadcast_operators({"type": "pool.stats", **stats.public()})

    async def _heartbeat(self) -> None:
        now = self.clock()
        known = await self.store.heartbeat(self.settings.server_id, now)
        if not known and self._beats > 0:
            # Taken for dead (a long stall, or a partition from Redis): the
            # other servers dropped our connections, so register them again
            # and give every console the state as it now is.
            log.warning("server.was_reaped", server_id=self.settings.server_id)
            for conn in self.hub.all():
                u = conn.user
                await self.store.connect(u.id, u.role, conn.id, self.settings.server_id, now)
                if conn.available:
                    await self.store.set_available(u.id, True)
            await self.resync()
        self._beats += 1
        reaped = await self.store.reap_servers(now, self.settings.server_dead_after_s)
        for server_id in reaped:
            log.warning("server.reaped", server_id=server_id)
