"""The connections this process holds, and local fan-out of bus effects.

A frame goes onto a connection's socket in the sender's own step when the
socket takes it at once (:class:`Conn`); behind a write that has to wait,
frames queue per connection, so a broadcast never waits on a slow console:
when that queue is full the connection is closed (1013, try again later) and
the console reconnects and gets a fresh snapshot. A broadcast frame is encoded once per codec
(:class:`core.wire.Encoded`), not once per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Coroutine
from dataclasses import dataclass, field
from typing import Any

from core.errors import DispatchError
from core.identity import Role, User
from core.logs import get_logger
from core.wire import Codec, Encoded
from dispatch.guard import GuardedIds
from dispatch.metrics import Metrics
from pool import rules
from pool.effects import Effect
from pool.model import Request, State, TherapistProfile
from pool.store import PoolStore

log = get_logger(component="hub")

CLOSE_SLOW_CONSUMER = 1013
#: How long a process remembers that a request left the queue (seconds): far
#: longer than two publishes can cross on the bus.
LEFT_MEMORY_S = 60.0
#: How long the queue's moves are gathered before the waiting clients' new
#: places are read (seconds): one read for every departure in the window.
POSITIONS_WINDOW_S = 0.025

Closer = Callable[[int, str], Coroutine[None, None, None]]
#: Writes one encoded frame on the socket.
Sender = Callable[[str | bytes], Coroutine[Any, Any, None]]
#: Writes one frame's bytes (text: a text message) at once if the socket
#: takes them without waiting; False, writing nothing, if not
#: (:data:`dispatch.wsproto.SEND_NOW`).
SendNow = Callable[[bytes, bool], bool]
#: ``(therapist id, client ids) -> those clients it has had sessions with``.
KnownClients = Callable[[str, list[str]], Awaitable[set[str]]]
#: Which of some therapists have had sessions with a client (the other way
#: round: one query for every pausing console a new request reaches).
KnownTherapists = Callable[[str, list[str]], Awaitable[set[str]]]


class Held:
    """The place, among frames held back for a console, of what one read
    will send (:meth:`Conn.hold_back`)."""

    __slots__ = ("frames",)

    def __init__(self) -> None:
        self.frames: list[Encoded] = []


@dataclass(frozen=True, slots=True)
class PoolRead:
    """What a ``pool.snapshot`` is made from (:meth:`Hub.read_pool`): the
    waiting requests in queue order and the therapists the guard keeps off
    quick connect now. Each request's public form is made once per read,
    shared by every snapshot made from it."""

    waiting: list[Request]
    guarded: set[str]
    publics: dict[str, dict[str, Any]] = field(default_factory=dict)

    def public(self, place: int, req: Request) -> dict[str, Any]:
        """``req.public(place)``, made once per read."""
        made = self.publics.get(req.id)
        if made is None:
            made = self.publics[req.id] = req.public(place)
        return made


@dataclass(eq=False)
class Conn:
    """One authenticated connection of this process.

    A frame is written to the socket the moment it is sent, in the sender's
    own step, when nothing is queued ahead of it and the socket takes it
    without waiting (the common case: the kernel's buffer has room). Only
    when a write has to wait (the socket's buffer is full) does the
    connection start a drain task, which finishes that write and then the
    frames queued behind it, in order, and ends. So an idle connection holds
    no writer task and no queue, and a broadcast costs no task switch per
    connection; a slow console still only ever fills its own queue, and is
    closed (1013) when ``queue_size`` frames wait.

    ``sender`` writes one encoded frame (the websocket's ``send_text`` or
    ``send_bytes``); without one (tests), frames stay in :attr:`pending`.
    ``send_now``, when the server offers it, writes a frame past the ASGI
    ``send`` chain if the socket takes it at once (:mod:`dispatch.wsproto`);
    if not, the frame goes through ``sender`` as above.
    """

    id: str
    user: User
    codec: Codec
    queue_size: int
    closer: Closer
    sender: Sender | None = None
    send_now: SendNow | None = None
    profile: TherapistProfile | None = None
    available: bool = False
    busy: bool = False
    #: The client's active request and the last position sent for it
    #: (set together by :meth:`told`).
    request_id: str | None = None
    last_position: int | None = None
    #: Bumped by every :meth:`told`: a positions read that began before it
    #: is stale for this connection (:meth:`Hub.refresh_positions`).
    told_seq: int = 0
    #: Bumped whenever a delivered frame changes ``available`` / ``busy``
    #: (:meth:`Hub._to_user`): a hold read before it is stale for this
    #: console (:meth:`dispatch.context.AppContext.resume`).
    presence_seq: int = 0
    #: While something is being read to be sent to this console (its state
    #: on a resume, a snapshot), what is delivered to it meanwhile waits here,
    #: each read holding its place with a :class:`Held` slot, and all goes
    #: out in order when the last read ends (None: nothing is being read).
    held_back: list[Encoded | Held] | None = None
    #: How many reads are holding back (slots not yet released).
    holding: int = 0
    #: Set while a resume reads this console's state; a second one waits
    #: for it to end, then reads afresh (the state each writes back here,
    #: ``busy`` and the client's request, is the newer read's).
    resuming: asyncio.Event | None = None
    #: Frames waiting behind a write that had to wait (None: none ever did).
    pending: deque[str | bytes] | None = None
    #: The task finishing a write that had to wait, then the pending frames.
    drain: asyncio.Task[None] | None = None
    closing: bool = False
    #: A write failed: the peer is gone (the reader notices and cleans up).
    dead: bool = False

    def send(self, frame: Encoded) -> bool:
        """Write or queue a frame; never waits. False (and the connection is
        being closed) when the console is too slow to keep up. While the
        console is resuming, the frame waits until its state has gone out
        (:meth:`hold_back`)."""
        if self.closing:
            return False
        if self.held_back is not None:
            self.held_back.append(frame)
            return True
        if self.drain is None and self.sender is not None:
            if self.dead:
                return True
            codec = self.codec
            if self.send_now is None or not self.send_now(frame.payload(codec), not codec.binary):
                self._write_now(self.sender, frame.for_codec(codec))
            return True
        data = frame.for_codec(self.codec)
        if self.pending is None:
            self.pending = deque()
        if len(self.pending) >= self.queue_size:
            self.closing = True
            log.warning("ws.slow_consumer", conn_id=self.id, user_id=self.user.id)
            asyncio.get_running_loop().create_task(
                self.closer(CLOSE_SLOW_CONSUMER, "send queue full")
            )
            return False
        self.pending.append(data)
        return True

    def send_frame(self, frame: dict[str, Any]) -> bool:
        return self.send(Encoded(frame))

    def hold_back(self) -> Held:
        """From now, what is sent waits, behind a slot for what is being
        read (:meth:`release` fills it). Reads may overlap (a snapshot during
        a resume): each has its own slot, where its read began."""
        if self.held_back is None:
            self.held_back = []
        slot = Held()
        self.held_back.append(slot)
        self.holding += 1
        return slot

    def release(self, slot: Held, read: list[Encoded]) -> None:
        """Put ``read`` (what was read while holding back) in its slot; when
        no read holds back any longer, send everything in the order it came.
        A frame delivered during a read is newer than what was read, so it
        goes after it; one delivered before the read began goes before."""
        slot.frames = read
        self.holding -= 1
        if self.holding:
            return
        waited, self.held_back = self.held_back or [], None
        for item in waited:
            if isinstance(item, Held):
                for frame in item.frames:
                    self.send(frame)
            else:
                self.send(item)

    def told(self, request_id: str | None, position: int | None) -> None:
        """Record the client's active request and the place it was last told."""
        self.request_id = request_id
        self.last_position = position
        self.told_seq += 1

    def _write_now(self, sender: Sender, data: str | bytes) -> None:
        """Run the write in the caller's step; hand it to a drain task only
        if it has to wait."""
        write = sender(data)
        try:
            waits_on = write.send(None)
        except StopIteration:
            return
        except Exception:  # the peer is gone; the reader will notice
            self.dead = True
            return
        self.drain = asyncio.get_running_loop().create_task(
            self._drain(sender, write, waits_on), name=f"ws-drain-{self.id}"
        )

    async def _drain(self, sender: Sender, write: Coroutine[Any, Any, None], waits_on: Any) -> None:
        try:
            await _finish(write, waits_on)
            while self.pending:
                await sender(self.pending.popleft())
        except Exception:  # the peer is gone; the reader will notice
            self.dead = True
        finally:
            self.drain = None

    async def flush(self, wait_s: float) -> None:
        """Wait up to ``wait_s`` seconds for what is queued to go out, then
        stop writing (0: at once, e.g. for a slow consumer)."""
        drain = self.drain
        if drain is None:
            return
        if wait_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(drain), timeout=wait_s)
        if not drain.done():
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await drain


async def _finish(write: Coroutine[Any, Any, None], waits_on: Any) -> None:
    """Run ``write``, which was started by hand and suspended on ``waits_on``
    (what its first ``send(None)`` yielded: a future, or None for a bare
    yield), to its end inside the current task."""
    while True:
        try:
            if waits_on is None:
                await asyncio.sleep(0)
            else:
                # What a Task does with a future its coroutine yields: take
                # the "blocking" mark (else awaiting it again raises).
                waits_on._asyncio_future_blocking = False
                await waits_on
        except BaseException as exc:  # the future failed, or we were cancelled
            try:
                waits_on = write.throw(exc)
            except StopIteration:
                return
            continue
        try:
            waits_on = write.send(None)
        except StopIteration:
            return


class Hub:
    def __init__(
        self,
        store: PoolStore,
        metrics: Metrics,
        known: KnownClients | None = None,
        guarded: GuardedIds | None = None,
        clock: Callable[[], float] = time.time,
        known_to: KnownTherapists | None = None,
        positions_window_s: float = POSITIONS_WINDOW_S,
    ) -> None:
        self._store = store
        self._metrics = metrics
        #: Which of some clients a therapist has had sessions with (a
        #: snapshot), and which of some therapists a client has had sessions
        #: with (a new request): asked only for therapists paused for new
        #: clients (None: every client is known).
        self._known = known
        self._known_to = known_to
        #: The therapists near a booked session (:mod:`dispatch.guard`): they
        #: get no request.new and an empty snapshot (None: nobody is guarded).
        self._guarded = guarded
        self._clock = clock
        self._by_user: dict[str, set[Conn]] = {}
        self._by_id: dict[str, Conn] = {}
        self.operators: set[Conn] = set()
        self.therapists: set[Conn] = set()
        #: Request id -> when its referral head start ends, for the requests
        #: whose offer this process held back from its consoles
        #: (:meth:`head_starts_ended` offers them then).
        self._head_starts: dict[str, float] = {}
        #: Request id -> when (monotonic) this process saw it leave the queue,
        #: for LEFT_MEMORY_S, oldest first: a creation announced after it (the
        #: two steps' publishes crossed on the bus) is not offered.
        self._left: dict[str, float] = {}
        #: The queue moved since the last positions read began.
        self._positions_due = False
        #: The task that gathers moves and reads the new places (None: idle).
        self._positions: asyncio.Task[None] | None = None
        self._positions_window_s = positions_window_s

    # -- registry ----------------------------------------------------------
    def add(self, conn: Conn) -> None:
        self._by_id[conn.id] = conn
        self._by_user.setdefault(conn.user.id, set()).add(conn)
        if conn.user.role is Role.THERAPIST:
            self.therapists.add(conn)
        elif conn.user.role is Role.OPERATOR:
            self.operators.add(conn)
        self._metrics.connections.labels(role=str(conn.user.role)).inc()

    def remove(self, conn: Conn) -> None:
        if self._by_id.pop(conn.id, None) is None:
            return
        conns = self._by_user.get(conn.user.id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._by_user[conn.user.id]
        self.therapists.discard(conn)
        self.operators.discard(conn)
        self._metrics.connections.labels(role=str(conn.user.role)).dec()

    def conns_of(self, user_id: str) -> set[Conn]:
        return self._by_user.get(user_id, set())

    def all(self) -> list[Conn]:
        return list(self._by_id.values())

    # -- delivery ----------------------------------------------------------
    async def deliver(self, effects: list[Effect]) -> None:
        """Send each effect to the local connections it concerns."""
        # A creation's message carries the new request's place (its "new"
        # effect): the creating client's request.state uses it too.
        placed = {
            e.request.id: e.position
            for e in effects
            if e.kind == "new" and e.request is not None and e.position is not None
        }
        for effect in effects:
            if effect.kind == "new" and effect.request is not None:
                await self._broadcast_new(effect.request, position=effect.position)
            elif effect.kind == "widened" and effect.request is not None:
                already = [str(t) for t in effect.frame.get("already") or ()]
                await self._broadcast_new(effect.request, skip=already)
            elif effect.kind == "gone" and effect.request is not None:
                self._broadcast_gone(effect.request, effect.reason or "claimed")
            elif effect.kind == "client_state" and effect.request is not None:
                await self._client_state(effect, placed.get(effect.request.id))
            elif effect.kind == "user" and effect.to is not None:
                await self._to_user(effect)
            elif effect.kind == "positions":
                self._queue_moved()
            elif effect.kind == "profile" and effect.to is not None:
                await self._reload_profile(effect.to)
            elif effect.kind == "operators":
                self.broadcast_operators(effect.frame)

    def _offered_consoles(self, request: Request) -> Collection[Conn]:
        """The local therapist consoles ``request`` may reach: those of the
        therapists it is offered to when offered to a few at a time (O(K),
        from the by-user map), else every therapist console."""
        if request.offered is None:
            return self.therapists
        return [
            c
            for tid in sorted(request.offered)
            for c in self.conns_of(tid)
            if c.user.role is Role.THERAPIST
        ]

    async def _broadcast_new(
        self, request: Request, skip: Collection[str] = (), position: int | None = None
    ) -> None:
        """``request.new`` to each local console that may be offered it now;
        ``skip``: therapists that had it already (the head start's holder,
        those offered before a widening). ``position``: its place in the
        queue, known for a request just created (the creating step read it);
        otherwise it is read here, which also finds a request that left the
        queue meanwhile."""
        if position is not None and request.id in self._left:
            # Created, then claimed or cancelled, and the second step's
            # publish overtook the first's: announcing it now would show a
            # request nobody can take.
            return
        holder = rules.head_start_holder(request, self._clock())
        if holder is not None and request.head_start_until is not None:
            self._head_starts[request.id] = request.head_start_until
        else:
            self._head_starts.pop(request.id, None)
        targets = [
            c
            for c in self._offered_consoles(request)
            if rules.gets_offers(c.available, c.busy)
            and c.profile is not None
            and rules.may_see(c.profile, request)
            and (holder is None or c.user.id == holder)
            and c.user.id not in skip
        ]
        if not targets:
            return
        guarded = await self.guarded_now()
        if guarded:
            targets = [c for c in targets if c.user.id not in guarded]
            if not targets:
                return
        # Only therapists pausing new clients are asked about this one: one
        # read for all of them, however many consoles they have.
        pausing = sorted(
            {c.user.id for c in targets if c.profile and not c.profile.accepting_new_clients}
        )
        if pausing:
            known = (
                set(pausing)
                if self._known_to is None
                else await self._known_to(request.client_id, pausing)
            )
            targets = [
                c
                for c in targets
                if c.profile is None or not rules.paused_for(c.profile, c.user.id in known)
            ]
            if not targets:
                return
        if position is None:
            position = await self._store.position(request.id)
            if position is None:  # claimed or gone meanwhile: nothing to announce
                return
        frame = Encoded({"type": "request.new", "request": request.public(position)})
        for conn in targets:
            conn.send(frame)
        self._metrics.frames_out.labels(type="request.new").inc(len(targets))

    def _broadcast_gone(self, request: Request, reason: str) -> None:
        self._head_starts.pop(request.id, None)
        self._note_left(request.id)
        frame = Encoded({"type": "request.gone", "request_id": request.id, "reason": reason})
        n = 0
        for conn in self._offered_consoles(request):
            if conn.profile is not None and rules.may_take(conn.profile, request):
                conn.send(frame)
                n += 1
        self._metrics.frames_out.labels(type="request.gone").inc(n)

    def _note_left(self, request_id: str) -> None:
        """Remember for LEFT_MEMORY_S that ``request_id`` left the queue
        (amortised O(1): the oldest entries are dropped as new ones come)."""
        now = time.monotonic()
        left = self._left
        left.pop(request_id, None)
        left[request_id] = now
        for rid, at in list(itertools.islice(left.items(), 8)):
            if now - at < LEFT_MEMORY_S:
                break
            del left[rid]

    async def _client_state(self, effect: Effect, placed: int | None = None) -> None:
        """``request.state`` to the client's local connections; ``placed``:
        the request's place as its creating step read it (else, waiting, its
        place is read here; so too for one this server saw leave the queue)."""
        assert effect.request is not None
        conns = self.conns_of(effect.request.client_id)
        if not conns:
            return
        req = effect.request
        position = None
        if req.state is State.WAITING:
            if placed is not None and req.id not in self._left:
                position = placed
            else:
                position = await self._store.position(req.id)
        public = req.public(position)
        plain = Encoded({"type": "request.state", "request": public})
        active = req.id if req.state in (State.WAITING, State.CLAIMED) else None
        for conn in conns:
            conn.told(active, position)
            if effect.ref is not None and conn.id == effect.conn:
                conn.send_frame({"type": "request.state", "request": public, "ref": effect.ref})
            else:
                conn.send(plain)
        self._metrics.frames_out.labels(type="request.state").inc(len(conns))

    async def _to_user(self, effect: Effect) -> None:
        assert effect.to is not None
        ftype = effect.frame.get("type")
        plain = Encoded(effect.frame)
        conns = list(self.conns_of(effect.to))
        freed: list[Conn] = []
        for conn in conns:
            if conn.user.role is Role.THERAPIST:
                # The pool's rule: which frames hold or free a therapist.
                presence, back = rules.presence_after(
                    rules.Presence(conn.available, conn.busy), effect.frame
                )
                if (presence.available, presence.busy) != (conn.available, conn.busy):
                    conn.available, conn.busy = presence.available, presence.busy
                    conn.presence_seq += 1
                if back:
                    freed.append(conn)
            if effect.ref is not None and conn.id == effect.conn:
                conn.send_frame({**effect.frame, "ref": effect.ref})
            else:
                conn.send(plain)
        if freed:
            # While busy or away the console got no request.new: the pool as it is now.
            await self.send_snapshot(freed)
        if conns and ftype is not None:
            self._metrics.frames_out.labels(type=str(ftype)).inc(len(conns))

    async def send_snapshot(self, conns: list[Conn]) -> None:
        """Send ``pool.snapshot`` to these consoles, each its therapist's,
        all from one read of the pool (:meth:`read_pool`).

        A console replaces its list with a snapshot, and the snapshot is read
        before it is sent: a ``request.new`` or ``request.gone`` delivered to
        the console while the read was under way (from another task: a bus
        delivery while a console opens, a guard's resnapshot) may be newer
        than what was read, and sent first the snapshot would undo it (a
        request just announced dropped from the list, one just gone put
        back). So what is delivered meanwhile is held back and goes out
        after the snapshot (:meth:`Conn.hold_back`)."""
        if not conns:
            return
        slots = [conn.hold_back() for conn in conns]
        made: dict[str, list[Encoded]] = {}
        try:
            pool = await self.read_pool()
            for conn in conns:
                if conn.user.id not in made:
                    made[conn.user.id] = [Encoded(await self.snapshot(conn.profile, pool))]
        finally:
            for conn, slot in zip(conns, slots, strict=True):
                conn.release(slot, made.get(conn.user.id, []))

    async def snapshot(
        self, profile: TherapistProfile | None, pool: PoolRead | None = None
    ) -> dict[str, Any]:
        """``pool.snapshot``: every waiting request this therapist may take
        (none while it is guarded near a booked session); from ``pool`` when
        given (one read for many consoles), else read here."""
        requests: list[dict[str, Any]] = []
        if profile is None:
            return {"type": "pool.snapshot", "requests": requests}
        if pool is None:
            guarded = await self.guarded_now()
            if profile.id not in guarded:
                pool = PoolRead(await self._store.waiting(), guarded)
        if pool is not None and profile.id not in pool.guarded:
            now = self._clock()
            seen: list[tuple[int, Request]] = []
            for i, req in enumerate(pool.waiting, start=1):
                if not rules.may_see(profile, req) or not rules.offered_to(req, profile.id):
                    continue
                if rules.eligible_during_head_start(req, profile.id, now):
                    seen.append((i, req))
                elif req.head_start_until is not None:
                    # Held back for its referring therapist: offered at the end.
                    self._head_starts[req.id] = req.head_start_until
            paused = await self._paused(profile, [req.client_id for _, req in seen])
            requests = [pool.public(i, req) for i, req in seen if req.client_id not in paused]
        return {"type": "pool.snapshot", "requests": requests}

    async def head_starts_ended(self) -> int:
        """Offer each request whose referral head start has ended to the
        local consoles it was held back from (PROTOCOL.md §10): every server
        does this for its own consoles, from the request's
        ``head_start_until``, so it holds across servers without a shared
        timer. A request no longer waiting is dropped. Returns how many
        requests were offered."""
        now = self._clock()
        due = sorted(rid for rid, at in self._head_starts.items() if at <= now)
        offered = 0
        for rid in due:
            req = await self._store.get(rid)
            self._head_starts.pop(rid, None)
            if req is None or req.state is not State.WAITING:
                continue
            await self._broadcast_new(req, skip=[req.referred_to] if req.referred_to else [])
            offered += 1
        return offered

    async def read_pool(self) -> PoolRead:
        """What every snapshot reads: the waiting requests in order and the
        guarded therapists."""
        return PoolRead(await self._store.waiting(), await self.guarded_now())

    async def guarded_now(self) -> set[str]:
        """The therapists the guard near a booked session keeps off quick
        connect now (:func:`pool.rules.guarded`)."""
        return set() if self._guarded is None else await self._guarded(self._clock())

    async def resnapshot(self, therapist_ids: set[str]) -> None:
        """Send each local console of these therapists that gets offers the
        pool as it now is for it: their guard started or ended (one read of
        the pool for all of them)."""
        await self.send_snapshot(
            [
                conn
                for conn in self.therapists
                if conn.user.id in therapist_ids
                and rules.Presence(conn.available, conn.busy).gets_offers
            ]
        )

    async def _paused(self, profile: TherapistProfile, client_ids: list[str]) -> set[str]:
        """Those of ``client_ids`` whose requests the therapist's pause on new
        clients keeps away from it (the pool's rule, :func:`pool.rules.paused_for`)."""
        if profile.accepting_new_clients or not client_ids:
            return set()
        known = (
            set(client_ids) if self._known is None else await self._known(profile.id, client_ids)
        )
        return {cid for cid in client_ids if rules.paused_for(profile, cid in known)}

    def _queue_moved(self) -> None:
        """The queue moved (a request left it): the waiting clients' new
        places are read once the window has gathered what else moves with
        it, off the bus's delivery path (which goes on meanwhile)."""
        self._positions_due = True
        if self._positions is None:
            self._positions = asyncio.get_running_loop().create_task(
                self._gather_moves(), name="hub-positions"
            )

    async def _gather_moves(self) -> None:
        try:
            while self._positions_due:
                await asyncio.sleep(self._positions_window_s)
                self._positions_due = False
                try:
                    await self.refresh_positions()
                except DispatchError as exc:  # the next move reads again; a resync resends all
                    log.warning("positions.unread", code=exc.code)
                except Exception:  # a bug: said, and the next move tries again
                    log.exception("positions.failed")
        finally:
            self._positions = None

    async def positions_settled(self) -> None:
        """Wait until no moves are waiting to be read (tests; shutdown
        cancels the task instead, :meth:`close_all`)."""
        while (task := self._positions) is not None:
            await asyncio.shield(task)

    async def refresh_positions(self) -> None:
        """Send ``request.state`` to each local waiting client whose place moved.

        Only connections last told a place are asked about: one told none
        holds a claimed request (no place to move), or one that has left the
        queue; a request that comes back to waiting does so with its own
        request.state (a ``client_state`` effect, which reads its place). So
        a server whose clients' requests are all claimed reads nothing.

        A connection told anything while the read was under way (its
        request claimed, cancelled, back with a place of its own) keeps
        that: the read began before it and is stale for it."""
        conns = [
            (c, c.told_seq)
            for c in self._by_id.values()
            if c.request_id is not None and c.last_position is not None
        ]
        if not conns:
            return
        # The place each request was last told at (None when its consoles
        # disagree: then it is sent whatever it is).
        last: dict[str, int | None] = {}
        for conn, _ in conns:
            assert conn.request_id is not None
            told = last.setdefault(conn.request_id, conn.last_position)
            if told != conn.last_position:
                last[conn.request_id] = None
        moved = await self._store.moved(last)
        for conn, seq in conns:
            if conn.told_seq != seq or conn.request_id is None:
                continue
            hit = moved.get(conn.request_id)
            if hit is None or hit[0] == conn.last_position:
                continue
            pos, req = hit
            conn.told(req.id, pos)
            conn.send_frame({"type": "request.state", "request": req.public(pos)})

    async def _reload_profile(self, therapist_id: str) -> None:
        conns = [c for c in self.conns_of(therapist_id) if c.user.role is Role.THERAPIST]
        if not conns:
            return
        profile = await self._store.get_profile(therapist_id)
        for conn in conns:
            conn.profile = profile

    def broadcast_operators(self, frame: dict[str, Any]) -> None:
        encoded = Encoded(frame)
        for conn in self.operators:
            conn.send(encoded)

    async def close_all(self, code: int, reason: str) -> None:
        if self._positions is not None:
            self._positions.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._positions
        for conn in self.all():
            with contextlib.suppress(Exception):
                await conn.closer(code, reason)
