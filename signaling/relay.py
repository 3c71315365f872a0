"""Inside a session: joining, the WebRTC signaling relay, chat, notes, ending.

The pool keeps each session's shared state (who joined, ready/live/ended,
frames held for a peer who has not joined yet) so that any server can serve
either participant; the durable records keep what must outlive the call
(the call log, chat and notes, encrypted). Frames reach the other participant
through the bus, wherever it is connected.

Every method checks that the caller is one of the session's two
participants before anything else: anyone else gets ``forbidden`` and learns
nothing about the session.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from core.bus import Bus
from core.clock import rfc3339
from core.errors import Forbidden, NotFound
from core.identity import Role
from core.logs import get_logger
from pool.effects import Effect
from pool.model import Session, SessionState
from pool.store import PoolStore
from signaling.metering import Metering
from signaling.records import Records

log = get_logger(component="signaling")

Origin = tuple[str, str | None]  # (conn_id, ref)
_OPEN = (SessionState.READY, SessionState.LIVE)


def ended_frame(session: Session) -> dict[str, Any]:
    return {
        "type": "session.ended",
        "session_id": session.id,
        "reason": session.end_reason,
        "duration_s": session.duration_s(),
    }


class Signaling:
    def __init__(
        self,
        store: PoolStore,
        bus: Bus[Effect],
        records: Records,
        metering: Metering,
        *,
        held_frames_max: int = 256,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.bus = bus
        self.records = records
        self.metering = metering
        self.held_frames_max = held_frames_max
        self.clock = clock

    async def participant(self, user_id: str, session_id: str) -> Session:
        """The session, if ``user_id`` is one of its two participants."""
        session = await self.store.get_session(session_id)
        if session is None or user_id not in (session.client_id, session.therapist_id):
            raise Forbidden("you are not a participant of this session")
        return session

    async def _send(self, to: str, frame: dict[str, Any], origin: Origin | None = None) -> None:
        conn, ref = origin if origin is not None else (None, None)
        await self.bus.publish([Effect("user", to=to, frame=frame, conn=conn, ref=ref)])

    # -- joining -----------------------------------------------------------------
    async def join(
        self,
        user_id: str,
        session_id: str,
        ref: str | None,
        answer: Callable[[list[dict[str, Any]]], None],
    ) -> None:
        """Mark the caller's console as in the call.

        ``answer`` gets, for the joining connection alone and in this order,
        the ``session.joined`` acknowledgement and every frame held for it;
        only then do the peer (``session.peer_joined``) and, when this join
        made the call live, both sides (``session.live``) hear of it.
        """
        await self.participant(user_id, session_id)
        now = self.clock()
        session, _, held = await self.store.join_session(session_id, user_id, now)
        peer, _ = session.peer_of(user_id)
        joined: dict[str, Any] = {
            "type": "session.joined",
            "session_id": session_id,
            "state": str(session.state),
            "peer_joined": peer in session.joined,
        }
        if ref is not None:
            joined["ref"] = ref
        answer([joined, *held])
        peer_joined = {"type": "session.peer_joined", "session_id": session_id, "user_id": user_id}
        await self._send(peer, peer_joined)
        # The pool makes a session live exactly once; the durable record's
        # conditional update is the gate for announcing it, so a join retried
        # after the database failed still announces (once) what the pool did.
        if session.state is SessionState.LIVE and session.started_at is not None:
            if not await self.records.session_live(session_id, session.started_at):
                log.info("session.joined", session_id=session_id, user_id=user_id, held=len(held))
                return
            await self.metering.plan(session)
            live = {
                "type": "session.live",
                "session_id": session_id,
                "started_at": rfc3339(session.started_at),
            }
            await self.bus.publish(
                [
                    Effect("user", to=u, frame=live)
                    for u in (session.client_id, session.therapist_id)
                ]
            )
            log.info("session.live", session_id=session_id)
        log.info("session.joined", session_id=session_id, user_id=user_id, held=len(held))

    # -- relay -------------------------------------------------------------------
    async def signal(self, user_id: str, session_id: str, data: dict[str, Any]) -> None:
        """Relay to the other participant alone, or hold it until it joins."""
        session = await self.participant(user_id, session_id)
        if session.state not in _OPEN:
            raise NotFound("the session has ended")
        frame = {"type": "rtc.signal", "session_id": session_id, "from": user_id, "data": data}
        if await self.store.pass_or_hold(session_id, user_id, frame, self.held_frames_max):
            await self._send(session.peer_of(user_id)[0], frame)

    # -- chat and notes ------------------------------------------------------------
    async def chat(
        self, user_id: str, session_id: str, text: str, client_msg_id: str, origin: Origin
    ) -> None:
        """Store, then show to both. A retried ``client_msg_id`` is stored once
        and answered to the retrying connection alone."""
        session = await self.participant(user_id, session_id)
        if session.state not in _OPEN:
            raise NotFound("the session has ended")
        message, created = await self.records.add_chat(
            session_id, user_id, client_msg_id, text, self.clock()
        )
        frame = message.frame()
        if not created:
            await self._send(user_id, frame, origin)
            return
        conn, ref = origin
        await self.bus.publish(
            [
                Effect("user", to=session.client_id, frame=frame, conn=conn, ref=ref),
                Effect("user", to=session.therapist_id, frame=frame, conn=conn, ref=ref),
            ]
        )
        log.info("chat.stored", session_id=session_id, user_id=user_id, message_id=message.id)

    async def note(
        self, user_id: str, role: Role, session_id: str, text: str, origin: Origin
    ) -> None:
        """A therapist's note: stored, acknowledged, never shown to the client."""
        session = await self.participant(user_id, session_id)
        if role is not Role.THERAPIST or user_id != session.therapist_id:
            raise Forbidden("only the session's therapist may save notes")
        note = await self.records.add_note(session_id, user_id, text, self.clock())
        ack = {
            "type": "note.saved",
            "session_id": session_id,
            "id": note.id,
            "saved_at": rfc3339(note.saved_at),
        }
        await self._send(user_id, ack, origin)
        log.info("note.saved", session_id=session_id, user_id=user_id)

    # -- ending ----------------------------------------------------------------------
    async def end(self, user_id: str, session_id: str, origin: Origin) -> None:
        # Who may end it, and why it ended, are checked in the ending step.
        ended = await self.store.end_session_by(session_id, user_id, self.clock())
        if ended is None:
            # Already over in the pool: finish it if its record missed the end
            # (the database failed the first time), else tell the asker alone.
            current = await self.store.get_session(session_id)
            if current is not None and current.state is SessionState.ENDED:
                await self.finish(current, origin, asker=user_id)
            return
        # The asker is named here too: between the pool's end and the record's,
        # another finisher (the repair loop of any server) may record it first
        # and tell both sides without this frame's ref; the asker must still
        # get its answer.
        await self.finish(ended, origin, asker=user_id)

    async def finish(
        self, ended: Session, origin: Origin | None = None, asker: str | None = None
    ) -> None:
        """Record, settle and announce a session the pool has ended.

        Safe to repeat: the record's conditional update says whether this call
        was the one that recorded the end; only that one tells both sides (an
        ``asker`` of a repeat still gets its answer). Settling is once by the
        ledger's own uniqueness, so a repeat also settles what a failure left.
        """
        first = await self.records.session_ended(
            ended.id, ended.ended_at or self.clock(), ended.end_reason or "", ended.duration_s()
        )
        await self.metering.settle(ended)
        frame = ended_frame(ended)
        conn, ref = origin if origin is not None else (None, None)
        if not first:
            if asker is not None:
                await self._send(asker, frame, origin)
            return
        await self.bus.publish(
            [
                Effect("user", to=ended.client_id, frame=frame, conn=conn, ref=ref),
                Effect("user", to=ended.therapist_id, frame=frame, conn=conn, ref=ref),
            ]
        )
        log.info(
            "session.ended",
            session_id=ended.id,
            reason=ended.end_reason,
            duration_s=ended.duration_s(),
        )
