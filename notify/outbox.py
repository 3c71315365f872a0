"""The durable outbox of texts and emails (the transactional outbox pattern).

A message is decided and queued in one database transaction (:meth:`Outbox.queue`
inside the caller's :meth:`~core.db.Database.writing` block): if the server
dies right after, the row is there, and a sender sends it. ``dedupe_key`` is
unique, so deciding the same message twice, on two servers at once, queues
it once.

Every server runs senders; a sender :meth:`~Outbox.take` s a batch of due rows
in one atomic step (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two servers
never take the same row and neither waits for the other; on SQLite the
write lock serialises the takers), marking them ``sending`` with a lease.
After sending it records the outcome: :meth:`~Outbox.sent` (with the
provider's id), :meth:`~Outbox.retry` (a network error or a 5xx: back to
``queued`` after :func:`retry_delay`), :meth:`~Outbox.failed` (a 4xx, or out
of attempts), :meth:`~Outbox.dropped` (no longer wanted: the request was
claimed meanwhile). A sender that dies holding rows gives them back when its
lease passes: another takes them and sends them once. (A sender that dies
after the provider accepted a message and before :meth:`~Outbox.sent` is
recorded leaves it to be sent again after the lease: the window is one
request's round trip, and no provider API here takes an idempotency key.)

Provider status callbacks (:meth:`~Outbox.status`) are applied by the
provider's id, idempotently, and never move a message backwards.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from core.db import Database
from notify.tables import outbox

#: The channels a message goes out on.
CHANNELS: Final = ("sms", "email")
#: Attempts before a message that keeps failing for passing reasons is given up.
MAX_ATTEMPTS: Final = 8
#: How long a taken row is the taker's before another sender may take it.
LEASE_S: Final = 60.0

#: Where a provider's status may move a message (never backwards).
_STATUS_RANK: Final = {"sending": 0, "sent": 1, "undelivered": 2, "failed": 2, "delivered": 3}


def retry_delay(attempts: int, base_s: float = 2.0, cap_s: float = 300.0) -> float:
    """Seconds to wait before attempt ``attempts + 1``: doubling from ``base_s``
    after the first attempt, at most ``cap_s``."""
    return float(min(cap_s, base_s * 2 ** max(0, attempts - 1)))


def _dt(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to queue. ``payload``: the template's values (never a phone
    number, an email address, notes, chat or form answers)."""

    channel: str
    dedupe_key: str
    recipient_id: str
    template: str
    about_id: str | None = None
    payload: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    channel: str
    dedupe_key: str
    recipient_id: str
    about_id: str | None
    template: str
    payload: dict[str, Any]
    state: str
    attempts: int
    provider_id: str | None
    created_at: float

    @classmethod
    def from_row(cls, row: RowMapping) -> Message:
        return cls(
            id=row["id"],
            channel=row["channel"],
            dedupe_key=row["dedupe_key"],
            recipient_id=row["recipient_id"],
            about_id=row["about_id"],
            template=row["template"],
            payload=json.loads(row["payload"]),
            state=row["state"],
            attempts=int(row["attempts"]),
            provider_id=row["provider_id"],
            created_at=row["created_at"].timestamp(),
        )


class Outbox:
    def __init__(self, db: Database, lease_s: float = LEASE_S) -> None:
        self.db = db
        #: How long a taken row stays its taker's (a sender's timeout must be shorter).
        self.lease_s = lease_s

    async def queue(self, conn: AsyncConnection, messages: Sequence[NewMessage], now: float) -> int:
        """Queue ``messages`` inside the caller's transaction ``conn`` (the one
        that decided them); returns how many were new (a dedupe key queued
        before, by anyone, is left as it is)."""
        if not messages:
            return 0
        at = _dt(now)
        rows = [
            {
                "id": "msg_" + secrets.token_hex(12),
                "channel": m.channel,
                "dedupe_key": m.dedupe_key,
                "recipient_id": m.recipient_id,
                "about_id": m.about_id,
                "template": m.template,
                "payload": json.dumps(m.payload, sort_keys=True),
                "state": "queued",
                "attempts": 0,
                "next_attempt_at": at,
                "created_at": at,
                "updated_at": at,
            }
            for m in messages
        ]
        result = await conn.execute(self.db.insert_or_nothing(outbox, rows, ["dedupe_key"]))
        return max(result.rowcount, 0)

    async def take(
        self, channel: str, worker: str, now: float, limit: int = 20, lease_s: float | None = None
    ) -> list[Message]:
        """Up to ``limit`` due messages of ``channel``, now ``sending`` and this
        ``worker``'s until the lease passes; oldest due first. A row whose
        taker's lease has passed is due again."""
        at = _dt(now)
        due = (
            select(outbox.c.id)
            .where(
                outbox.c.channel == channel,
                or_(
                    and_(outbox.c.state == "queued", outbox.c.next_attempt_at <= at),
                    and_(outbox.c.state == "sending", outbox.c.lease_until <= at),
                ),
            )
            .order_by(outbox.c.next_attempt_at, outbox.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            update(outbox)
            .where(outbox.c.id.in_(due.scalar_subquery()))
            .values(
                state="sending",
                lease_until=_dt(now + (self.lease_s if lease_s is None else lease_s)),
                claimed_by=worker,
                attempts=outbox.c.attempts + 1,
                updated_at=at,
            )
            .returning(*outbox.c)
        )
        async with self.db.writing() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        taken = [Message.from_row(r) for r in rows]
        taken.sort(key=lambda m: (m.created_at, m.id))
        return taken

    async def sent(self, message_id: str, worker: str, provider_id: str | None, now: float) -> bool:
        """The provider took the message. False when the row is no longer this
        worker's (its lease passed and another took it)."""
        return await self._finish(message_id, worker, now, state="sent", provider_id=provider_id)

    async def failed(self, message_id: str, worker: str, error: str, now: float) -> bool:
        """Refused for good (a 4xx, or out of attempts)."""
        return await self._finish(message_id, worker, now, state="failed", error=error[:200])

    async def dropped(self, message_id: str, worker: str, reason: str, now: float) -> bool:
        """No longer wanted (e.g. the request was claimed before it went out)."""
        return await self._finish(message_id, worker, now, state="dropped", error=reason[:200])

    async def retry(self, message: Message, worker: str, error: str, now: float) -> bool:
        """A passing failure: queued again after :func:`retry_delay`, or failed
        for good after :data:`MAX_ATTEMPTS`."""
        if message.attempts >= MAX_ATTEMPTS:
            return await self.failed(message.id, worker, f"gave up: {error}", now)
        return await self._finish(
            message.id,
            worker,
            now,
            state="queued",
            error=error[:200],
            next_attempt_at=_dt(now + retry_delay(message.attempts)),
            lease_until=None,
            claimed_by=None,
        )

    async def status(self, provider_id: str, status: str, now: float) -> bool:
        """A provider's status callback for its message ``provider_id``: applied
        when it moves the message forward (``sent`` -> ``delivered``, say);
        a repeat, or an older status arriving late, changes nothing. False
        when no message has that id or the status is not one we track."""
        rank = _STATUS_RANK.get(status)
        if rank is None:
            return False
        behind = [s for s, r in _STATUS_RANK.items() if r < rank]
        stmt = (
            update(outbox)
            .where(outbox.c.provider_id == provider_id, outbox.c.state.in_(behind))
            .values(state=status, updated_at=_dt(now))
        )
        async with self.db.writing() as conn:
            moved = (await conn.execute(stmt)).rowcount
            if moved:
                return True
            known = await conn.execute(
                select(outbox.c.id).where(outbox.c.provider_id == provider_id)
            )
            return known.first() is not None

    async def about(self, about_id: str) -> list[Message]:
        """Every message about ``about_id`` (a request), oldest first."""
        stmt = (
            select(outbox)
            .where(outbox.c.about_id == about_id)
            .order_by(outbox.c.created_at, outbox.c.id)
        )
        async with self.db.reading() as conn:
            return [Message.from_row(r) for r in (await conn.execute(stmt)).mappings()]

    async def count(self, channel: str, states: Sequence[str], since: float) -> int:
        """Messages of ``channel`` now in one of ``states``, updated since ``since``."""
        stmt = select(func.count()).where(
            outbox.c.channel == channel,
            outbox.c.state.in_(list(states)),
            outbox.c.updated_at >= _dt(since),
        )
        async with self.db.reading() as conn:
            return int((await conn.execute(stmt)).scalar_one())

    async def counts(self) -> dict[tuple[str, str], int]:
        """How many messages each ``(channel, state)`` holds, for the metrics."""
        stmt = select(outbox.c.channel, outbox.c.state, func.count()).group_by(
            outbox.c.channel, outbox.c.state
        )
        async with self.db.reading() as conn:
            return {(ch, st): int(n) for ch, st, n in (await conn.execute(stmt))}

    async def oldest_due_age(self, now: float) -> float:
        """Seconds the oldest message still to send has waited (0 when none):
        the outbox's health, for a metric."""
        stmt = select(func.min(outbox.c.created_at)).where(
            outbox.c.state.in_(["queued", "sending"])
        )
        async with self.db.reading() as conn:
            oldest = (await conn.execute(stmt)).scalar_one_or_none()
        return 0.0 if oldest is None else max(0.0, now - oldest.timestamp())

    async def _finish(self, message_id: str, worker: str, now: float, **values: Any) -> bool:
        stmt = (
            update(outbox)
            .where(
                outbox.c.id == message_id,
                outbox.c.state == "sending",
                outbox.c.claimed_by == worker,
            )
            .values(updated_at=_dt(now), **values)
        )
        async with self.db.writing() as conn:
            return bool((await conn.execute(stmt)).rowcount)
