"""Per-minute billing of live sessions: funds warnings, running out, settling.

When a session goes ``live`` its funds plan is written on its durable record
(:func:`wallet.billing.funds_plan`: when the client's balance runs out, and
one minute before). Every server's billing tick then claims due work with a
conditional update, so each step happens once across all servers, whichever
armed it and even if that server died:

- ``funds_low_at`` passed and not yet sent: both sides get ``session.funds_low``;
- ``exhausted_at`` passed: the session ends with ``funds_exhausted`` (the pool's
  end is itself exactly-once);
- an ended session without its charge: the charge and the therapist's share are
  written (the ledger refuses a second charge for the same session).

The last step is a sweep, so a session ended by a server that died before
settling is settled by another.

A booked call (PROTOCOL.md §8, ``Session.booking_id`` set) is not billed per
minute: it gets no funds plan, hence no ``funds_low`` and no
``funds_exhausted``, and no session charge (its booking carries the money).
Settling it instead tells its booking that the call ended, through the
injected hook ``on_booked_end(booking_id, both_joined)`` (dispatch marks the
booking ``occurred`` when both joined): once across servers, claimed by a
conditional update of ``booking_settled``; a hook that fails gives the claim
back, so the sweep calls it again later (the hook must be idempotent).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import and_, or_, select, update

from core.bus import Bus
from core.logs import get_logger
from pool.effects import Effect
from pool.model import Session, SessionState
from pool.store import PoolStore
from signaling.tables import sessions
from wallet.accounts import client_account
from wallet.billing import final_charge, funds_plan
from wallet.ledger import Ledger

log = get_logger(component="billing")

#: How far back the settling sweep looks for ended sessions without a charge.
_SWEEP_WINDOW = dt.timedelta(days=2)


#: ``(booking id, both joined) -> None``: a booked call ended (see the module docstring).
BookedEnd = Callable[[str, bool], Awaitable[None]]


async def no_booked_end(booking_id: str, both_joined: bool) -> None:
    """The default hook: bookings are not wired in."""
    del booking_id, both_joined


def _dt(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


class Metering:
    def __init__(
        self,
        ledger: Ledger,
        store: PoolStore,
        bus: Bus[Effect],
        *,
        price_per_minute_minor: int,
        clock: Callable[[], float] = time.time,
        on_booked_end: BookedEnd = no_booked_end,
    ) -> None:
        self.ledger = ledger
        self.db = ledger.db
        self.store = store
        self.bus = bus
        self.price = price_per_minute_minor
        self.clock = clock
        self.on_booked_end = on_booked_end

    async def plan(self, session: Session) -> None:
        """Write the funds plan of a session that just went live (none for a
        booked call: it is not billed per minute)."""
        if session.started_at is not None and session.booking_id is None:
            await self._plan(session.id, session.client_id, session.started_at)

    async def replan(self, client_id: str) -> None:
        """After a top-up: the client's live sessions last as long as the
        new balance pays for (the charge is taken at the end, so the whole
        balance counts), and a warning already sent may be sent again later."""
        query = select(sessions.c.id, sessions.c.started_at).where(
            sessions.c.client_id == client_id,
            sessions.c.state == str(SessionState.LIVE),
            sessions.c.started_at.is_not(None),
            sessions.c.booking_id.is_(None),
        )
        async with self.db.session() as s:
            rows = (await s.execute(query)).all()
        for sid, started_at in rows:
            await self._plan(sid, client_id, started_at.timestamp())

    async def _plan(self, session_id: str, client_id: str, started_at: float) -> None:
        # What the client may spend: money held for bookings is not the session's.
        balance = await self.ledger.available(client_id)
        plan = funds_plan(started_at, balance, self.price)
        low = plan.funds_low_at
        values: dict[str, Any] = {
            "exhausted_at": _dt(plan.exhausted_at),
            "funds_low_at": _dt(low) if low is not None else None,
        }
        if low is None:
            values["funds_low_sent"] = True  # it runs out at once: nothing to warn of
        elif low > self.clock():
            values["funds_low_sent"] = False  # still ahead: owed (again, after a top-up)
        stmt = update(sessions).where(sessions.c.id == session_id).values(**values)
        async with self.db.session() as s, s.begin():
            await s.execute(stmt)
        log.info(
            "billing.planned",
            session_id=session_id,
            seconds=round(plan.exhausted_at - started_at),
        )

    async def warn_due(self) -> int:
        """Send ``session.funds_low`` for each due session, once; returns how many."""
        now = _dt(self.clock())
        pick = (
            update(sessions)
            .where(
                sessions.c.state == str(SessionState.LIVE),
                sessions.c.funds_low_at <= now,
                sessions.c.funds_low_sent.is_(False),
            )
            .values(funds_low_sent=True)
            .returning(
                sessions.c.id,
                sessions.c.client_id,
                sessions.c.therapist_id,
                sessions.c.exhausted_at,
            )
        )
        async with self.db.session() as s, s.begin():
            rows = (await s.execute(pick)).all()
        for sid, client_id, therapist_id, exhausted_at in rows:
            left = max(0, round((exhausted_at - now).total_seconds()))
            frame: dict[str, Any] = {
                "type": "session.funds_low",
                "session_id": sid,
                "seconds_left": left,
            }
            await self.bus.publish(
                [Effect("user", to=u, frame=frame) for u in (client_id, therapist_id)]
            )
            log.info("billing.funds_low", session_id=sid, seconds_left=left)
        return len(rows)

    async def exhausted_due(self) -> list[Session]:
        """End each live session whose money ran out; returns those this call ended."""
        now = self.clock()
        query = select(sessions.c.id, sessions.c.exhausted_at).where(
            sessions.c.state == str(SessionState.LIVE), sessions.c.exhausted_at <= _dt(now)
        )
        async with self.db.session() as s:
            due = (await s.execute(query)).all()
        ended: list[Session] = []
        for sid, exhausted_at in due:
            # It ends when the money ran out, however late the tick that saw it:
            # a whole number of minutes after it went live (the stored time lost
            # sub-microsecond precision, which would shave a second off).
            open_session = await self.store.get_session(sid)
            at = exhausted_at.timestamp()
            if open_session is not None and open_session.started_at is not None:
                minutes = round((at - open_session.started_at) / 60)
                at = open_session.started_at + minutes * 60
            session = await self.store.end_session(sid, "funds_exhausted", at)
            if session is not None:
                ended.append(session)
        return ended

    async def settle(self, session: Session) -> None:
        """Write the session's charge and the therapist's share (once); for a
        booked call, tell its booking instead (:meth:`settle_booked`)."""
        if session.ended_at is None:
            return
        if session.booking_id is not None:
            await self.settle_booked(session)
            return
        started, ended = session.started_at, session.ended_at
        # Decided under the lock of the client's row, from what it may spend
        # then (money held for bookings is not the session's): no read ahead
        # of the charge, and no balance that moves between the two.
        charge: int | Callable[[int], int] = (
            0
            if started is None
            else lambda spendable: final_charge(started, ended, spendable, self.price)
        )
        tx = await self.ledger.charge_session(
            session.id, session.client_id, session.therapist_id, charge, self.clock()
        )
        if tx is not None:
            paid = tx.entry_for(client_account(session.client_id))
            charged = 0 if paid is None else -paid.amount_minor
            log.info("billing.settled", session_id=session.id, charge_minor=charged)

    async def settle_booked(self, session: Session) -> bool:
        """Call ``on_booked_end(booking_id, both_joined)`` for an ended booked
        call, once across servers (True for the call that ran it). Both joined
        means the call went live (``started_at`` set). If the hook raises, the
        claim is given back (the sweep tries again) and the error goes on."""
        assert session.booking_id is not None
        claim = (
            update(sessions)
            .where(
                sessions.c.id == session.id,
                sessions.c.state == str(SessionState.ENDED),
                sessions.c.booking_settled.is_(False),
            )
            .values(booking_settled=True)
            .returning(sessions.c.id)
        )
        async with self.db.session() as s, s.begin():
            if (await s.execute(claim)).first() is None:
                return False
        both_joined = session.started_at is not None
        try:
            await self.on_booked_end(session.booking_id, both_joined)
        except BaseException:
            give_back = (
                update(sessions).where(sessions.c.id == session.id).values(booking_settled=False)
            )
            async with self.db.session() as s, s.begin():
                await s.execute(give_back)
            log.warning(
                "billing.booked_end_failed",
                session_id=session.id,
                booking_id=session.booking_id,
            )
            raise
        log.info(
            "billing.booked_ended",
            session_id=session.id,
            booking_id=session.booking_id,
            both_joined=both_joined,
        )
        return True

    async def open_session_ids(self, matched_before: float) -> list[str]:
        """Sessions the records still show open, matched before the given time
        (the caller checks each against the pool, which may have ended it while
        the database was failing)."""
        query = select(sessions.c.id).where(
            sessions.c.state.in_([str(SessionState.READY), str(SessionState.LIVE)]),
            sessions.c.matched_at < _dt(matched_before),
        )
        async with self.db.session() as s:
            return [row[0] for row in (await s.execute(query)).all()]

    async def sweep(self) -> int:
        """Settle ended sessions that have no charge yet (their server died
        between the end and the charge), and booked calls whose booking was not
        told of the end; returns how many were settled."""
        since = _dt(self.clock()) - _SWEEP_WINDOW
        charged = self.ledger.charged_session_ids()
        query = select(sessions).where(
            and_(
                sessions.c.state == str(SessionState.ENDED),
                sessions.c.ended_at >= since,
                or_(
                    and_(sessions.c.booking_id.is_(None), sessions.c.id.not_in(charged)),
                    and_(
                        sessions.c.booking_id.is_not(None),
                        sessions.c.booking_settled.is_(False),
                    ),
                ),
            )
        )
        async with self.db.session() as s:
            rows = (await s.execute(query)).mappings().all()
        for row in rows:
            await self.settle(
                Session(
                    id=row["id"],
                    request_id=row["request_id"],
                    client_id=row["client_id"],
                    therapist_id=row["therapist_id"],
                    state=SessionState.ENDED,
                    started_at=row["started_at"].timestamp() if row["started_at"] else None,
                    ended_at=row["ended_at"].timestamp(),
                    end_reason=row["end_reason"],
                    booking_id=row["booking_id"],
                )
            )
        return len(rows)
