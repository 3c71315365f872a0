"""The durable store of scheduled care (PROTOCOL.md §8): availability and
bookings over :class:`core.db.Database`, with their money through
:class:`wallet.ledger.Ledger`'s holds.

What one call changes is one database transaction:

* :meth:`Bookings.create` writes every booking of a request (one, or a weekly
  series) and the hold of each session's price, or nothing. Capacity holds
  across servers however many book at once: on PostgreSQL the exclusion
  constraint on ``[start_at, block_end)`` per therapist (the loser's insert
  waits for the winner to commit, then fails: :class:`~core.errors.SlotTaken`),
  on SQLite the transaction holds the database's write lock from its start
  (``BEGIN IMMEDIATE``), so its check and its insert see the same calendar,
  with a trigger behind them (:mod:`schedule.tables`). The free intro is once
  per client and therapist by a partial unique index
  (:class:`~core.errors.IntroUsed`). Idempotent on ``(created_by,
  idempotency_key)``: a replay, even one racing the original, answers what the
  first call made.
* :meth:`Bookings.cancel` and :meth:`Bookings.mark_outcome` lock the booking's
  row, let :mod:`schedule.policy` decide the next state and its money, and
  apply both: the hold charged (``booking_charge`` or ``cancellation_fee``)
  and the rest released, or all of it released.

Locks are taken in one order everywhere: bookings' rows first, then the
ledger's (a transaction row, accounts by id, holds: :mod:`wallet.holds`), so
that two transactions never wait on each other in a circle (a booking being
cancelled while its slot is booked again waits, it does not deadlock).

No emails here: the caller queues them after the commit (notify's outbox is
idempotent by key). Instants are epoch seconds (floats) in and out.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from sqlalchemy import ColumnElement, and_, exists, or_, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import rfc3339
from core.db import Database
from core.errors import (
    Conflict,
    InsufficientFunds,
    IntroUsed,
    InvalidField,
    NotFound,
    SlotTaken,
)
from core.logs import get_logger
from core.validation import is_id
from schedule import policy as rules
from schedule.model import Availability, BookingState, BookingType, Policy, parse_availability
from schedule.policy import Money
from schedule.tables import (
    COUNTED_INTRO_STATES,
    EXCLUSION_NAME,
    IDEMPOTENCY_KEY_LEN,
    INTRO_ONCE_NAME,
    SQLITE_TRIGGER_NAME,
    availability,
    bookings,
)
from wallet.ledger import Ledger, TxnKind

__all__ = ["MAX_BOOKINGS_PER_CALL", "MAX_LISTED", "Booking", "Bookings", "Created"]

log = get_logger("dispatch.schedule", component="bookings")

#: The most bookings one create may make (a weekly series is 2..12).
MAX_BOOKINGS_PER_CALL: Final = 52
#: The most bookings one list answers (the ranges asked for are bounded too).
MAX_LISTED: Final = 2000

Role = Literal["client", "therapist", "operator"]
_ROLES: Final = ("client", "therapist", "operator")
_SCHEDULED: Final = str(BookingState.SCHEDULED)


@dataclass(frozen=True, slots=True)
class Booking:
    """One booking (PROTOCOL.md §8's B, plus what the store keeps about it)."""

    id: str
    therapist_id: str
    client_id: str
    type: BookingType
    start: float
    end: float
    #: ``end`` plus the buffer: the end of the therapist's time it keeps.
    block_end: float
    state: BookingState
    price_minor: int
    fee_minor: int
    series_id: str | None
    created_by: str
    created_by_role: str
    cancelled_by: str | None
    session_id: str | None
    policy: Policy
    created_at: float
    updated_at: float
    outcome_at: float | None
    reminded_at: float | None

    def to_wire(self) -> dict[str, Any]:
        """B as PROTOCOL.md §8 spells it (``start``, ``end``: RFC 3339 UTC)."""
        return {
            "id": self.id,
            "therapist_id": self.therapist_id,
            "client_id": self.client_id,
            "type": str(self.type),
            "start": rfc3339(self.start),
            "end": rfc3339(self.end),
            "state": str(self.state),
            "price_minor": self.price_minor,
            "fee_minor": self.fee_minor,
            "series_id": self.series_id,
            "created_by": self.created_by,
            "cancelled_by": self.cancelled_by,
            "session_id": self.session_id,
            "policy": self.policy.to_wire(),
        }


@dataclass(frozen=True, slots=True)
class Created:
    """What :meth:`Bookings.create` answers: the bookings, in start order, and
    whether they were made by an earlier call with the same idempotency key
    (``replayed``: nothing was written now)."""

    bookings: list[Booking]
    replayed: bool = False


# -- conversions -------------------------------------------------------------------------


def _dt(ts: float) -> dt.datetime:
    if not math.isfinite(ts):
        raise ValueError("instants must be finite epoch seconds")
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


def _ts(value: dt.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _new_id(prefix: str) -> str:
    """A server id that sorts by creation time within a process."""
    return f"{prefix}_{time.time_ns() // 1000:014x}{secrets.token_hex(5)}"


def _booking(row: Mapping[Any, Any]) -> Booking:
    return Booking(
        id=row["id"],
        therapist_id=row["therapist_id"],
        client_id=row["client_id"],
        type=BookingType(row["type"]),
        start=row["start_at"].timestamp(),
        end=row["end_at"].timestamp(),
        block_end=row["block_end"].timestamp(),
        state=BookingState(row["state"]),
        price_minor=int(row["price_minor"]),
        fee_minor=int(row["fee_minor"]),
        series_id=row["series_id"],
        created_by=row["created_by"],
        created_by_role=row["created_by_role"],
        cancelled_by=row["cancelled_by"],
        session_id=row["session_id"],
        policy=Policy.from_wire(json.loads(row["policy"])),
        created_at=row["created_at"].timestamp(),
        updated_at=row["updated_at"].timestamp(),
        outcome_at=_ts(row["outcome_at"]),
        reminded_at=_ts(row["reminded_at"]),
    )


def _whole(value: object) -> bool:
    """An ``int`` and not a ``bool``."""
    return type(value) is int


def _id(value: object, name: str) -> str:
    if not isinstance(value, str) or not is_id(value):
        raise InvalidField(f"{name} is not a valid id", field=name)
    return value


def _key(value: object) -> str | None:
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= IDEMPOTENCY_KEY_LEN
        or any(not ch.isprintable() for ch in value)
    ):
        raise InvalidField(
            f"the idempotency key must be 1..{IDEMPOTENCY_KEY_LEN} printable characters",
            field="idempotency_key",
        )
    return value


def _overlapping(therapist_id: str, blocks: Sequence[tuple[dt.datetime, dt.datetime]]) -> Any:
    """The therapist's scheduled bookings whose kept time overlaps one of
    ``blocks`` (half-open, as the exclusion constraint sees them)."""
    b = bookings.c
    return select(b.id).where(
        b.therapist_id == therapist_id,
        b.state == _SCHEDULED,
        or_(*(and_(b.start_at < end, start < b.block_end) for start, end in blocks)),
    )


def _intro_counts(client_id: str, therapist_id: str) -> ColumnElement[bool]:
    b = bookings.c
    return and_(
        b.client_id == client_id,
        b.therapist_id == therapist_id,
        b.type == str(BookingType.INTRO),
        b.state.in_(COUNTED_INTRO_STATES),
    )


def _violated(exc: sa_exc.IntegrityError) -> str:
    """Which of the bookings' guarantees an insert broke: ``slot``, ``intro``,
    ``key`` or ``""`` (something else: a bug, re-raised)."""
    text = str(exc.orig)
    sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
    if sqlstate == "23P01" or EXCLUSION_NAME in text or SQLITE_TRIGGER_NAME in text:
        return "slot"
    if INTRO_ONCE_NAME in text or "bookings.client_id, bookings.therapist_id" in text:
        return "intro"
    if "idempotency_key" in text:
        return "key"
    return ""


class Bookings:
    """Availability and bookings of one deployment, their money through
    ``ledger`` (module docstring)."""

    def __init__(self, db: Database, ledger: Ledger) -> None:
        self.db = db
        self.ledger = ledger

    # -- availability ----------------------------------------------------------------
    async def get_availability(self, therapist_id: str) -> Availability | None:
        """The therapist's availability, or ``None`` if it never set one."""
        stmt = select(availability).where(availability.c.therapist_id == therapist_id)
        async with self.db.reading() as conn:
            row = (await conn.execute(stmt)).mappings().one_or_none()
        if row is None:
            return None
        return parse_availability(
            {
                "timezone": row["timezone"],
                "weekly": json.loads(row["weekly"]),
                "overrides": json.loads(row["overrides"]),
            }
        )

    async def put_availability(self, therapist_id: str, av: Availability, now: float) -> None:
        """Replace the therapist's availability (bookings already made stay)."""
        therapist_id = _id(therapist_id, "therapist_id")
        wire = av.to_wire()
        values = {
            "timezone": av.timezone,
            "weekly": json.dumps(wire["weekly"], separators=(",", ":")),
            "overrides": json.dumps(wire["overrides"], separators=(",", ":")),
            "updated_at": _dt(now),
        }
        async with self.db.writing() as conn:
            row = {"therapist_id": therapist_id, **values}
            await conn.execute(self.db.insert_or_nothing(availability, row, ["therapist_id"]))
            await conn.execute(
                update(availability)
                .where(availability.c.therapist_id == therapist_id)
                .values(**values)
            )

    async def therapist_ids(self, limit: int) -> list[str]:
        """Therapists who have set an availability, by id, at most ``limit``."""
        stmt = (
            select(availability.c.therapist_id)
            .order_by(availability.c.therapist_id)
            .limit(max(0, limit))
        )
        async with self.db.reading() as conn:
            return list((await conn.execute(stmt)).scalars())

    # -- booking -----------------------------------------------------------------------
    async def create(
        self,
        *,
        therapist_id: str,
        client_id: str,
        type: BookingType | str,
        starts: Sequence[float],
        length_min: int,
        buffer_min: int,
        price_minor: int,
        policy: Policy,
        created_by: str,
        created_by_role: str,
        idempotency_key: str | None,
        now: float,
        series_id: str | None = None,
    ) -> Created:
        """Book ``starts`` (one booking each, ``length_min`` long, keeping
        ``buffer_min`` after) for the client with the therapist, all or none.

        One transaction: every booking row, and for a session a hold of
        ``price_minor`` for each in the client's wallet. Refused, writing
        nothing: :class:`SlotTaken` when any of them overlaps a scheduled
        booking of the therapist (buffers included) or another of them;
        :class:`IntroUsed` for an intro when the client's intro with this
        therapist is used; :class:`~core.errors.InsufficientFunds` when the
        balance less holds is below the total. The rules of *whether* a time
        may be booked (availability, notice, pause) are the caller's.

        Several starts make a series: ``series_id`` (made up if not given) on
        each. With ``idempotency_key``, a second call by ``created_by`` with the
        same key writes nothing and answers the first call's bookings
        (``replayed``), as they are now.
        """
        therapist_id = _id(therapist_id, "therapist_id")
        client_id = _id(client_id, "client_id")
        created_by = _id(created_by, "created_by")
        kind = BookingType(type)
        key = _key(idempotency_key)
        if created_by_role not in _ROLES:
            raise ValueError(f"unknown role {created_by_role!r}")
        if not 1 <= len(starts) <= MAX_BOOKINGS_PER_CALL:
            raise InvalidField(f"1..{MAX_BOOKINGS_PER_CALL} bookings at a time", field="start")
        if not _whole(length_min) or length_min <= 0:
            raise ValueError("length_min must be a positive int")
        if not _whole(buffer_min) or buffer_min < 0:
            raise ValueError("buffer_min must be an int >= 0")
        if not _whole(price_minor) or price_minor < 0:
            raise ValueError("price_minor must be an int >= 0")
        if kind is BookingType.INTRO and price_minor != 0:
            raise ValueError("an intro is free")
        ordered = sorted(starts)
        if len(set(ordered)) != len(ordered):
            raise InvalidField("the same start twice", field="start")
        if len(ordered) > 1 and series_id is None:
            series_id = _new_id("ser")
        if series_id is not None:
            series_id = _id(series_id, "series_id")
        at = _dt(now)
        rows: list[dict[str, Any]] = [
            {
                "id": _new_id("bkg"),
                "therapist_id": therapist_id,
                "client_id": client_id,
                "type": str(kind),
                "start_at": _dt(start),
                "end_at": _dt(start + length_min * 60),
                "block_end": _dt(start + (length_min + buffer_min) * 60),
                "state": _SCHEDULED,
                "price_minor": price_minor,
                "fee_minor": 0,
                "series_id": series_id,
                "created_by": created_by,
                "created_by_role": created_by_role,
                "cancelled_by": None,
                "session_id": None,
                "policy": json.dumps(policy.to_wire(), separators=(",", ":")),
                # On the first booking only: (created_by, key) is unique.
                "idempotency_key": key if i == 0 else None,
                "created_at": at,
                "updated_at": at,
                "outcome_at": None,
                "reminded_at": None,
            }
            for i, start in enumerate(ordered)
        ]
        try:
            async with self.db.writing() as conn:
                if key is not None:
                    first = await self._by_key(conn, created_by, key)
                    if first is not None:
                        return Created(first, replayed=True)
                # The guarantee on SQLite (the write lock is held); on
                # PostgreSQL a quick answer, the exclusion constraint the guarantee.
                blocks = [(r["start_at"], r["block_end"]) for r in rows]
                if (await conn.execute(_overlapping(therapist_id, blocks).limit(1))).first():
                    raise SlotTaken()
                if kind is BookingType.INTRO and await self._intro_used(
                    conn, client_id, therapist_id
                ):
                    raise IntroUsed()
                await conn.execute(bookings.insert(), rows)
                if price_minor > 0:
                    await self.ledger.hold_many_in(
                        conn, client_id, [(r["id"], price_minor) for r in rows], now
                    )
        except (sa_exc.IntegrityError, SlotTaken, IntroUsed, InsufficientFunds) as exc:
            # A twin with the same key may have committed first (PostgreSQL made
            # this insert wait for it, or this check saw its rows): its answer
            # is ours.
            if key is not None:
                async with self.db.reading() as conn:
                    first = await self._by_key(conn, created_by, key)
                if first is not None:
                    return Created(first, replayed=True)
            if not isinstance(exc, sa_exc.IntegrityError):
                raise
            broke = _violated(exc)
            if broke == "slot":
                raise SlotTaken() from None
            if broke == "intro":
                raise IntroUsed() from None
            raise
        made = [_booking(r) for r in rows]  # what was written is what is stored
        log.info(
            "booking.created",
            booking_id=made[0].id,
            series_id=series_id,
            count=len(made),
            user_id=client_id,
            therapist_id=therapist_id,
            type=str(kind),
        )
        return Created(made)

    async def replay(self, created_by: str, idempotency_key: str) -> list[Booking] | None:
        """What ``created_by``'s earlier create with this key made (as it is
        now), or ``None``: for the caller's early answer to a retry."""
        async with self.db.reading() as conn:
            return await self._by_key(conn, created_by, idempotency_key)

    async def cancel(
        self, booking_id: str, by_user_id: str, by_role: str, now: float, share_pct: int
    ) -> Booking:
        """Cancel a scheduled booking as ``by_role`` (``client``, ``therapist``
        or ``operator``: in which capacity ``by_user_id`` acts; whether it may
        is the caller's to check) and settle its hold
        (:func:`schedule.policy.cancel`): in time, or by the therapist or an
        operator, all of it goes back; late, the fee is charged
        (``cancellation_fee``). ``Conflict`` if it is no longer scheduled,
        ``NotFound`` if there is no such booking."""
        if by_role not in _ROLES:
            raise ValueError(f"unknown role {by_role!r}")
        by: Role = by_role  # type: ignore[assignment]
        async with self.db.writing() as conn:
            booking = await self._locked(conn, booking_id)
            state, money = rules.cancel(
                booking.state,
                by=by,
                start=booking.start,
                now=now,
                policy=booking.policy,
                price_minor=booking.price_minor,
                share_pct=share_pct,
            )
            await self._settle(conn, booking, money, TxnKind.CANCELLATION_FEE, now)
            after = await self._finish(
                conn, booking, state, money, now, cancelled_by=by_user_id, outcome=False
            )
        log.info(
            "booking.cancelled",
            booking_id=booking.id,
            state=str(state),
            by=by_role,
            user_id=by_user_id,
            fee_minor=money.charge_minor,
        )
        return after

    async def mark_outcome(
        self, booking_id: str, outcome: str, now: float, share_pct: int
    ) -> Booking:
        """Mark what happened (``occurred`` or ``no_show``) after the start and
        settle the hold (:func:`schedule.policy.outcome`): ``occurred`` charges
        the price (``booking_charge``), ``no_show`` the fee
        (``cancellation_fee``). ``TooEarly`` before the start, ``Conflict`` if
        it was already marked or cancelled, ``NotFound`` if there is no such
        booking."""
        if outcome not in ("occurred", "no_show"):
            raise InvalidField("outcome must be occurred or no_show", field="outcome")
        async with self.db.writing() as conn:
            booking = await self._locked(conn, booking_id)
            state, money = rules.outcome(
                booking.state,
                outcome,  # type: ignore[arg-type]
                start=booking.start,
                now=now,
                policy=booking.policy,
                price_minor=booking.price_minor,
                share_pct=share_pct,
            )
            kind = (
                TxnKind.BOOKING_CHARGE
                if state is BookingState.OCCURRED
                else TxnKind.CANCELLATION_FEE
            )
            await self._settle(conn, booking, money, kind, now)
            after = await self._finish(conn, booking, state, money, now, outcome=True)
        log.info(
            "booking.marked",
            booking_id=booking.id,
            state=str(state),
            charge_minor=money.charge_minor,
        )
        return after

    async def attach_session(self, booking_id: str, session_id: str) -> None:
        """Remember the booking's call (the first one attached stays)."""
        b = bookings.c
        stmt = (
            update(bookings)
            .where(b.id == booking_id, or_(b.session_id.is_(None), b.session_id == session_id))
            .values(session_id=session_id)
        )
        async with self.db.writing() as conn:
            await conn.execute(stmt)

    async def mark_reminded(self, booking_id: str, now: float) -> bool:
        """Claim the booking's reminder: ``True`` for the one call (across
        servers) that should send it, ``False`` if it was claimed already."""
        b = bookings.c
        stmt = (
            update(bookings)
            .where(b.id == booking_id, b.reminded_at.is_(None))
            .values(reminded_at=_dt(now))
        )
        async with self.db.writing() as conn:
            return (await conn.execute(stmt)).rowcount == 1

    # -- reads -------------------------------------------------------------------------
    async def get(self, booking_id: str) -> Booking | None:
        async with self.db.reading() as conn:
            row = (
                (await conn.execute(select(bookings).where(bookings.c.id == booking_id)))
                .mappings()
                .one_or_none()
            )
        return None if row is None else _booking(row)

    async def list_for(
        self, user_id: str, role: str, from_ts: float, to_ts: float
    ) -> list[Booking]:
        """The user's bookings (as the client, or as the therapist) that
        overlap ``[from_ts, to_ts)``, by start; an operator's are everyone's."""
        b = bookings.c
        if role == "client":
            mine: ColumnElement[bool] | None = b.client_id == user_id
        elif role == "therapist":
            mine = b.therapist_id == user_id
        elif role == "operator":
            mine = None
        else:
            raise ValueError(f"unknown role {role!r}")
        return await self._list(from_ts, to_ts, mine)

    async def list_all(self, from_ts: float, to_ts: float) -> list[Booking]:
        """Every booking that overlaps ``[from_ts, to_ts)``, by start."""
        return await self._list(from_ts, to_ts, None)

    async def unmarked(self, now: float) -> list[Booking]:
        """Bookings still ``scheduled`` 48 h or more after their end
        (:func:`schedule.policy.unmarked`), oldest first."""
        b = bookings.c
        stmt = (
            select(bookings)
            .where(b.state == _SCHEDULED, b.end_at <= _dt(now - rules.UNMARKED_AFTER_S))
            .order_by(b.start_at, b.id)
            .limit(MAX_LISTED)
        )
        return await self._rows(stmt)

    async def busy(
        self, therapist_id: str, from_ts: float, to_ts: float
    ) -> list[tuple[float, float]]:
        """``(start, end)`` of the therapist's scheduled bookings that may
        touch ``[from_ts, to_ts)`` (their buffers included), by start: what
        :func:`schedule.slots.open_slots` must keep clear."""
        b = bookings.c
        stmt = (
            select(b.start_at, b.end_at)
            .where(
                b.therapist_id == therapist_id,
                b.state == _SCHEDULED,
                b.start_at < _dt(to_ts),
                b.block_end > _dt(from_ts),
            )
            .order_by(b.start_at)
        )
        async with self.db.reading() as conn:
            rows = (await conn.execute(stmt)).all()
        return [(s.timestamp(), e.timestamp()) for s, e in rows]

    async def next_start(self, starts_from: float, starts_to: float) -> set[str]:
        """The therapists with a scheduled booking starting in
        ``[starts_from, starts_to]``: the quick-connect guard's source."""
        b = bookings.c
        stmt = (
            select(b.therapist_id)
            .where(
                b.state == _SCHEDULED,
                b.start_at >= _dt(starts_from),
                b.start_at <= _dt(starts_to),
            )
            .distinct()
        )
        async with self.db.reading() as conn:
            return set((await conn.execute(stmt)).scalars())

    async def intro_used(self, client_id: str, therapist_id: str) -> bool:
        """Whether the client's free intro with the therapist is used (one
        scheduled, taken place, late cancelled or missed)."""
        async with self.db.reading() as conn:
            return await self._intro_used(conn, client_id, therapist_id)

    async def ever_booked(self, therapist_id: str, client_id: str) -> bool:
        """Whether the client has or had any booking with the therapist, in
        any state (who may read the client's forms, PROTOCOL.md §10)."""
        b = bookings.c
        stmt = select(exists().where(b.therapist_id == therapist_id, b.client_id == client_id))
        async with self.db.reading() as conn:
            return bool((await conn.execute(stmt)).scalar())

    async def due_reminders(self, now: float, before_s: float) -> list[Booking]:
        """Scheduled bookings starting within ``before_s`` from ``now`` whose
        reminder has not been claimed (:meth:`mark_reminded`), by start."""
        b = bookings.c
        stmt = (
            select(bookings)
            .where(
                b.state == _SCHEDULED,
                b.reminded_at.is_(None),
                b.start_at > _dt(now),
                b.start_at <= _dt(now + before_s),
            )
            .order_by(b.start_at, b.id)
            .limit(MAX_LISTED)
        )
        return await self._rows(stmt)

    # -- internals ---------------------------------------------------------------------
    async def _rows(self, stmt: Any) -> list[Booking]:
        async with self.db.reading() as conn:
            return [_booking(r) for r in (await conn.execute(stmt)).mappings()]

    async def _list(
        self, from_ts: float, to_ts: float, mine: ColumnElement[bool] | None
    ) -> list[Booking]:
        b = bookings.c
        where = [b.start_at < _dt(to_ts), b.end_at > _dt(from_ts)]
        if mine is not None:
            where.append(mine)
        stmt = select(bookings).where(*where).order_by(b.start_at, b.id).limit(MAX_LISTED)
        return await self._rows(stmt)

    async def _by_key(
        self, conn: AsyncConnection, created_by: str, key: str
    ) -> list[Booking] | None:
        b = bookings.c
        row = (
            (
                await conn.execute(
                    select(bookings).where(b.created_by == created_by, b.idempotency_key == key)
                )
            )
            .mappings()
            .one_or_none()
        )
        if row is None:
            return None
        first = _booking(row)
        if first.series_id is None:
            return [first]
        stmt = (
            select(bookings)
            .where(b.series_id == first.series_id, b.created_by == created_by)
            .order_by(b.start_at, b.id)
        )
        return [_booking(r) for r in (await conn.execute(stmt)).mappings()]

    async def _intro_used(self, conn: AsyncConnection, client_id: str, therapist_id: str) -> bool:
        stmt = select(exists().where(_intro_counts(client_id, therapist_id)))
        return bool((await conn.execute(stmt)).scalar())

    async def _locked(self, conn: AsyncConnection, booking_id: str) -> Booking:
        stmt = select(bookings).where(bookings.c.id == booking_id).with_for_update()
        row = (await conn.execute(stmt)).mappings().one_or_none()
        if row is None:
            raise NotFound("no such booking")
        return _booking(row)

    async def _settle(
        self, conn: AsyncConnection, booking: Booking, money: Money, kind: TxnKind, now: float
    ) -> None:
        """Apply ``money`` to the booking's hold: charge it (``kind``) and
        release the rest, or release it all. An intro holds nothing."""
        if booking.price_minor == 0:
            return
        if money.hold_minor != booking.price_minor:
            raise AssertionError("the money of a step must cover the whole hold")
        await self.ledger.settle_hold_in(
            conn,
            booking.id,
            charge_minor=money.charge_minor,
            therapist_id=booking.therapist_id,
            therapist_minor=money.therapist_minor,
            kind=kind,
            now=now,
        )

    async def _finish(
        self,
        conn: AsyncConnection,
        booking: Booking,
        state: BookingState,
        money: Money,
        now: float,
        *,
        cancelled_by: str | None = None,
        outcome: bool,
    ) -> Booking:
        at = _dt(now)
        values: dict[str, Any] = {
            "state": str(state),
            "fee_minor": money.charge_minor,
            "updated_at": at,
        }
        if cancelled_by is not None:
            values["cancelled_by"] = cancelled_by
        if outcome:
            values["outcome_at"] = at
        changed = await conn.execute(
            update(bookings)
            .where(bookings.c.id == booking.id, bookings.c.state == _SCHEDULED)
            .values(**values)
        )
        if changed.rowcount != 1:  # cannot happen under the row lock
            raise Conflict("the booking changed meanwhile")
        return await self._locked(conn, booking.id)
