"""The background loops of one server process (each survives its dependency
being down, and logs when it starts and stops failing):

- timers: every ``timer_tick_s`` fire due deadlines and graces (the store makes
  each fire exactly once across servers), ending sessions whose participant
  stayed away past the grace (``peer_lost``);
- stats: every ``stats_interval_s`` read the pool's numbers, push ``pool.stats``
  to local operators, set the gauges, and offer the stats history a sample
  once per bucket (:mod:`pool.live`; the store keeps one per bucket);
- heartbeat: every ``heartbeat_s`` mark this server alive, and reap servers
  silent for ``server_dead_after_s`` so their users' graces start;
- billing: every ``billing_tick_s`` warn sessions a minute before their money
  runs out and end those where it has (:mod:`signaling.metering`); every tenth
  turn, repair what a failure left half done;
- texts (when texting is on): every second decide who gets a text about the
  requests waiting (:mod:`notify.rounds`), then send what the outbox holds
  (:class:`notify.sms.SmsWorker`);
- emails (when emails are on): every second send what the outbox holds
  (:class:`notify.email.EmailWorker`);
- guard (when bookings are wired in): every :data:`dispatch.guard.GUARD_TTL_S`
  ask which therapists a booked session keeps off quick connect
  (:class:`dispatch.guard.Guard`), and send each local console whose guard
  started or ended a fresh ``pool.snapshot`` (empty while guarded);
- head starts: every ``timer_tick_s`` offer each request whose referral head
  start ended to this server's consoles it was held back from
  (:meth:`dispatch.hub.Hub.head_starts_ended`, PROTOCOL.md §10): each server
  does it for its own consoles, from the time stored on the request;
- offers (when ``DISPATCH_OFFER_FANOUT`` is set): every ``timer_tick_s``
  widen each request offered to a few whose ``DISPATCH_OFFER_WIDEN_S`` has
  passed (:meth:`dispatch.service.Dispatcher.widen_offers`): the pool stores
  each widening once across servers, from the time stored on the request;
- reminders (when emails or texts are on): every :data:`REMINDER_TICK_S`
  queue the reminder of each booking starting within 24 h
  (:mod:`dispatch.booking_mail`), then mark it reminded. Queueing first and
  the outbox's dedupe key make it once across servers, whatever dies when.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from core.errors import DispatchError
from core.logs import get_logger
from dispatch import booking_mail
from pool.live import bucket_of, sample_of
from pool.model import Session, SessionState

if TYPE_CHECKING:
    from dispatch.context import AppContext

log = get_logger(component="loops")

#: How often the outbox senders look for work (and texts are decided).
NOTIFY_TICK_S: Final = 1.0
#: Rows a sender takes at once; it takes again at once while batches come full.
NOTIFY_BATCH: Final = 20
#: How often each server looks for bookings to remind (24 h ahead: a minute late is fine).
REMINDER_TICK_S: Final = 30.0


class Loops:
    """The loops of ``ctx``'s process: :meth:`start` them, :meth:`stop` them."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._beats = 0
        self._billing_turns = 0
        #: The stats-history bucket this process last offered a sample for.
        self._sampled_bucket: int | None = None

    def start(self) -> None:
        s = self.ctx.settings
        self.tasks = [
            asyncio.create_task(self._every(s.timer_tick_s, self._tick), name="timers"),
            asyncio.create_task(self._every(s.stats_interval_s, self._stats), name="stats"),
            asyncio.create_task(self._every(s.heartbeat_s, self._heartbeat), name="heartbeat"),
            asyncio.create_task(self._every(s.billing_tick_s, self._billing), name="billing"),
            # Always on, even with no head start here: another server's may
            # have given one (a setting that differs between servers).
            asyncio.create_task(self._every(s.timer_tick_s, self._head_starts), name="head_starts"),
        ]
        if s.offer_fanout > 0:
            self.tasks.append(
                asyncio.create_task(self._every(s.timer_tick_s, self._offers), name="offers")
            )
        if self.ctx.sms is not None:
            self.tasks.append(
                asyncio.create_task(self._every(NOTIFY_TICK_S, self._texts), name="texts")
            )
        if self.ctx.mail is not None:
            self.tasks.append(
                asyncio.create_task(self._every(NOTIFY_TICK_S, self._emails), name="emails")
            )
        if self.ctx.mail is not None or self.ctx.sms is not None:
            self.tasks.append(
                asyncio.create_task(self._every(REMINDER_TICK_S, self._reminders), name="reminders")
            )
        if self.ctx.guard.enabled:
            self.tasks.append(
                asyncio.create_task(self._every(self.ctx.guard.ttl_s, self._guard), name="guard")
            )

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
            fired = await self.ctx.store.fire_due(self.ctx.clock())
            for item in fired:
                # One failed announcement must not drop the rest of the batch;
                # the repair turn of the billing loop finishes a lost session.
                try:
                    if isinstance(item, Session):
                        await self.ctx.signaling.finish(item)  # a participant lost past the grace
                    else:
                        await self.ctx.dispatcher.fired(item)
                except DispatchError as exc:
                    log.warning("timer.announce_failed", code=exc.code)
            if not fired:
                return

    async def _head_starts(self) -> None:
        offered = await self.ctx.hub.head_starts_ended()
        if offered:
            log.info("head_start.ended", requests=offered)

    async def _offers(self) -> None:
        widened = await self.ctx.dispatcher.widen_offers()
        if widened:
            log.info("offer.widen_tick", requests=widened)

    async def _billing(self) -> None:
        """Funds warnings and exhaustion, each once across servers; every
        tenth turn, settle what a dead server left unsettled."""
        await self.ctx.metering.warn_due()
        for ended in await self.ctx.metering.exhausted_due():
            await self.ctx.signaling.finish(ended)
        self._billing_turns += 1
        if self._billing_turns % 10 == 0:
            await self._repair()

    async def _repair(self) -> None:
        """Finish what a failure left half done: sessions the pool ended while
        the database could not record it, and ended sessions left unsettled."""
        for sid in await self.ctx.metering.open_session_ids(self.ctx.clock()):
            session = await self.ctx.store.get_session(sid)
            if session is not None and session.state is SessionState.ENDED:
                await self.ctx.signaling.finish(session)
        await self.ctx.metering.sweep()

    async def _texts(self) -> None:
        """Decide texts, then send due ones until a batch comes back short."""
        assert self.ctx.texts is not None and self.ctx.sms is not None
        await self.ctx.texts.run(self.ctx.clock())
        while await self.ctx.sms.run_once(self.ctx.clock(), NOTIFY_BATCH) == NOTIFY_BATCH:
            if self._stopping:
                return

    async def _emails(self) -> None:
        assert self.ctx.mail is not None
        while await self.ctx.mail.run_once(self.ctx.clock(), NOTIFY_BATCH) == NOTIFY_BATCH:
            if self._stopping:
                return

    async def _reminders(self) -> None:
        """Queue the reminders due (PROTOCOL.md §8), then mark each booking
        reminded: a server that dies between the two leaves it due, and the
        next one's queueing is a no-op (the outbox's dedupe key)."""
        bookings = self.ctx.bookings
        now = self.ctx.clock()
        for booking in await bookings.due_reminders(now, booking_mail.REMINDER_BEFORE_S):
            await booking_mail.remind(self.ctx, booking)
            await bookings.mark_reminded(booking.id, now)
            if self._stopping:
                return

    async def _guard(self) -> None:
        """Refresh the guard; re-snapshot local consoles whose guard flipped."""
        started, ended = await self.ctx.guard.refresh(self.ctx.clock())
        if started or ended:
            log.info("guard.changed", started=sorted(started), ended=sorted(ended))
            await self.ctx.hub.resnapshot(started | ended)

    async def _stats(self) -> None:
        now = self.ctx.clock()
        stats = await self.ctx.store.stats(now)
        self.ctx.metrics.set_pool(stats)
        try:  # the database down must not silence the pool's numbers
            outbox = self.ctx.outbox
            self.ctx.metrics.set_outbox(await outbox.counts(), await outbox.oldest_due_age(now))
        except DispatchError as exc:
            log.warning("stats.outbox_unavailable", code=exc.code)
        if self.ctx.hub.operators:
            body = await self.ctx.stats_body(now, stats)
            self.ctx.hub.broadcast_operators({"type": "pool.stats", **body})
        bucket = bucket_of(now)
        if bucket != self._sampled_bucket:
            # Every server offers each bucket's sample; the store keeps one.
            await self.ctx.store.record_sample(bucket, sample_of(stats, now))
            self._sampled_bucket = bucket

    async def _heartbeat(self) -> None:
        now = self.ctx.clock()
        known = await self.ctx.store.heartbeat(self.ctx.settings.server_id, now)
        if not known and self._beats > 0:
            # Taken for dead (a long stall, or a partition from Redis): the
            # other servers dropped our connections, so register them again
            # and give every console the state as it now is.
            log.warning("server.was_reaped", server_id=self.ctx.settings.server_id)
            server_id = self.ctx.settings.server_id
            for conn in self.ctx.hub.all():
                u = conn.user
                await self.ctx.store.connect(u.id, u.role, conn.id, server_id, now)
                if conn.available:
                    await self.ctx.store.set_available(u.id, True)
            await self.ctx.resync()
        self._beats += 1
        reaped = await self.ctx.store.reap_servers(now, self.ctx.settings.server_dead_after_s)
        for server_id in reaped:
            log.warning("server.reaped", server_id=server_id)
