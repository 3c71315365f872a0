"""Durable records of sessions, their chat and the therapist's notes
(PROTOCOL.md §5, "Records of past sessions"), over :class:`core.db.Database`.

Chat and note text is sealed by :class:`signaling.crypto.Cipher` before it
leaves the process and opened only on the way back; the database holds Fernet
tokens alone. Times are epoch floats in and out (timezone-aware UTC datetimes
in the database), rounded to the microsecond the database keeps, so what a
method returns equals what a later read gives.

Every write is idempotent, because a server may retry after a timeout and a
client may retry after a reconnect, possibly through another server:

* :meth:`Records.session_matched` and :meth:`Records.session_booked` insert
  once per session id;
* :meth:`Records.session_live` and :meth:`Records.session_ended`: the first wins;
* :meth:`Records.add_chat` stores once per ``(session_id, sender_id,
  client_msg_id)``, also when two servers store the same retry at once.

Errors: :class:`core.errors.NotFound` for a session that was never
recorded, :class:`core.errors.Unavailable` when the database is down,
:class:`signaling.crypto.DataKeyError` for data no configured key opens.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import ColumnElement, Insert, Table, func, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from core.clock import rfc3339
from core.db import Database
from core.errors import NotFound
from pool.model import Request, Session, SessionState
from signaling.crypto import Cipher
from signaling.rotation import rotate_column
from signaling.tables import chat_messages, notes, sessions

__all__ = ["ChatMessage", "Note", "Records", "SessionRecord"]

#: Rows re-encrypted per transaction by :meth:`Records.rotate_keys`.
ROTATE_BATCH: Final = 500


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One row of ``sessions``; times as epoch floats."""

    id: str
    request_id: str
    client_id: str
    therapist_id: str
    client_name: str | None
    therapist_name: str | None
    state: SessionState
    terms_version: str
    requested_at: float
    claimed_at: float
    matched_at: float
    started_at: float | None
    ended_at: float | None
    end_reason: str | None
    duration_s: int | None
    #: The booking of a booked call (PROTOCOL.md §8); None for quick connect.
    booking_id: str | None = None


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One stored chat message, its text decrypted."""

    id: str
    session_id: str
    sender_id: str
    client_msg_id: str
    text: str
    sent_at: float

    def frame(self) -> dict[str, Any]:
        """The ``chat.message`` frame of PROTOCOL.md §5."""
        return {
            "type": "chat.message",
            "session_id": self.session_id,
            "id": self.id,
            "from": self.sender_id,
            "text": self.text,
            "sent_at": rfc3339(self.sent_at),
            "client_msg_id": self.client_msg_id,
        }


@dataclass(frozen=True, slots=True)
class Note:
    """One stored note, its text decrypted."""

    id: str
    text: str
    saved_at: float

    def public(self) -> dict[str, Any]:
        """A note as ``GET /v1/sessions/{id}/notes`` shows it."""
        return {"text": self.text, "saved_at": rfc3339(self.saved_at)}


def _to_dt(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


def _opt_dt(ts: float | None) -> dt.datetime | None:
    return None if ts is None else _to_dt(ts)


def _to_ts(value: dt.datetime) -> float:
    return value.timestamp()


def _opt_ts(value: dt.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _exact(ts: float) -> float:
    """``ts`` as the database will give it back (microseconds)."""
    return _to_dt(ts).timestamp()


def _new_id(prefix: str) -> str:
    """A server id that sorts by creation time within a process
    (microseconds, then randomness)."""
    return f"{prefix}_{time.time_ns() // 1000:014x}{secrets.token_hex(5)}"


def _session(row: RowMapping) -> SessionRecord:
    return SessionRecord(
        id=row["id"],
        request_id=row["request_id"],
        client_id=row["client_id"],
        therapist_id=row["therapist_id"],
        client_name=row["client_name"],
        therapist_name=row["therapist_name"],
        state=SessionState(row["state"]),
        terms_version=row["terms_version"],
        requested_at=_to_ts(row["requested_at"]),
        claimed_at=_to_ts(row["claimed_at"]),
        matched_at=_to_ts(row["matched_at"]),
        started_at=_opt_ts(row["started_at"]),
        ended_at=_opt_ts(row["ended_at"]),
        end_reason=row["end_reason"],
        duration_s=row["duration_s"],
        booking_id=row["booking_id"],
    )


class Records:
    """Sessions, chat and notes in the database, text encrypted with ``cipher``."""

    def __init__(self, db: Database, cipher: Cipher) -> None:
        self.db = db
        self._cipher = cipher

    # -- sessions ------------------------------------------------------------
    async def session_matched(
        self,
        session: Session,
        request: Request,
        *,
        client_name: str | None,
        therapist_name: str | None,
        terms_version: str,
        now: float,
    ) -> None:
        """Record a session the moment its request is matched.

        Idempotent: a second call for the same session id changes nothing.
        ``requested_at`` is the request's ``created_at``, ``claimed_at`` its
        ``claimed_at`` (``now`` if it has none), ``matched_at`` is ``now``.
        """
        if request.id != session.request_id:
            raise ValueError("the session was not made from this request")
        values: dict[str, Any] = {
            "id": session.id,
            "request_id": session.request_id,
            "client_id": session.client_id,
            "therapist_id": session.therapist_id,
            "client_name": client_name,
            "therapist_name": therapist_name,
            "state": str(session.state),
            "terms_version": terms_version,
            "requested_at": _to_dt(request.created_at),
            "claimed_at": _to_dt(request.claimed_at if request.claimed_at is not None else now),
            "matched_at": _to_dt(now),
            "started_at": _opt_dt(session.started_at),
            "ended_at": _opt_dt(session.ended_at),
            "end_reason": session.end_reason,
        }
        async with self.db.write_one() as conn:
            await conn.execute(self._insert_or_nothing(sessions, values, ("id",)))

    async def session_booked(
        self,
        session: Session,
        *,
        client_name: str | None,
        therapist_name: str | None,
        terms_version: str = "",
        now: float,
    ) -> None:
        """Record a booked call (PROTOCOL.md §8) the moment the pool opened it
        (``session.booking_id`` set). Idempotent as :meth:`session_matched`:
        the first call for a session id records it. It has no request: its
        ``request_id`` is the booking id, and ``requested_at``, ``claimed_at``
        and ``matched_at`` are when the call was opened (``session.created_at``)."""
        if session.booking_id is None:
            raise ValueError("not a booked session")
        opened = _to_dt(session.created_at or now)
        values: dict[str, Any] = {
            "id": session.id,
            "request_id": session.request_id,
            "client_id": session.client_id,
            "therapist_id": session.therapist_id,
            "client_name": client_name,
            "therapist_name": therapist_name,
            "state": str(session.state),
            "terms_version": terms_version,
            "requested_at": opened,
            "claimed_at": opened,
            "matched_at": opened,
            "started_at": _opt_dt(session.started_at),
            "ended_at": _opt_dt(session.ended_at),
            "end_reason": session.end_reason,
            "booking_id": session.booking_id,
        }
        async with self.db.session() as s, s.begin():
            await s.execute(self._insert_or_nothing(sessions, values, ("id",)))

    async def session_live(self, session_id: str, at: float) -> bool:
        """Mark the session ``live`` from ``at`` (both sides joined). Only a
        ``ready`` session changes (True): repeating it, or a late call for an
        ended session, does nothing (False). ``NotFound`` if it was never
        recorded."""
        stmt = (
            update(sessions)
            .where(sessions.c.id == session_id, sessions.c.state == str(SessionState.READY))
            .values(state=str(SessionState.LIVE), started_at=_to_dt(at))
            .returning(sessions.c.id)
        )
        return await self._update_one(session_id, stmt)

    async def session_ended(
        self, session_id: str, ended_at: float, reason: str, duration_s: int
    ) -> bool:
        """Mark the session ``ended``. The first end wins: later calls change
        nothing (and return False). ``NotFound`` if it was never recorded."""
        stmt = (
            update(sessions)
            .where(sessions.c.id == session_id, sessions.c.state != str(SessionState.ENDED))
            .values(
                state=str(SessionState.ENDED),
                ended_at=_to_dt(ended_at),
                end_reason=reason,
                duration_s=duration_s,
            )
            .returning(sessions.c.id)
        )
        return await self._update_one(session_id, stmt)

    async def get_session(self, session_id: str) -> SessionRecord | None:
        """The session's record, or ``None``."""
        async with self.db.session() as s:
            row = (
                (await s.execute(select(sessions).where(sessions.c.id == session_id)))
                .mappings()
                .one_or_none()
            )
        return None if row is None else _session(row)

    async def sessions_of(self, user_id: str, *, limit: int | None = None) -> list[SessionRecord]:
        """The sessions ``user_id`` took part in, as client or therapist, newest
        (by ``matched_at``) first; at most ``limit`` of them."""
        stmt = (
            select(sessions)
            .where((sessions.c.client_id == user_id) | (sessions.c.therapist_id == user_id))
            .order_by(sessions.c.matched_at.desc(), sessions.c.id.desc())
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        async with self.db.session() as s:
            rows = (await s.execute(stmt)).mappings().all()
        return [_session(row) for row in rows]

    async def clients_known(self, therapist_id: str, client_ids: Collection[str]) -> set[str]:
        """Those of ``client_ids`` that have had a session with ``therapist_id``
        (matched: the client accepted it), for the pause on new clients."""
        if not client_ids:
            return set()
        stmt = (
            select(sessions.c.client_id)
            .where(sessions.c.therapist_id == therapist_id)
            .where(sessions.c.client_id.in_(sorted(set(client_ids))))
            .distinct()
        )
        async with self.db.session() as s:
            return set((await s.execute(stmt)).scalars().all())

    async def therapists_known_to(self, client_id: str, therapist_ids: Collection[str]) -> set[str]:
        """Those of ``therapist_ids`` that have had a session with ``client_id``:
        :meth:`clients_known` asked of many therapists in one query (the
        first offer of a request weighs every paused therapist at once)."""
        if not therapist_ids:
            return set()
        stmt = (
            select(sessions.c.therapist_id)
            .where(sessions.c.client_id == client_id)
            .where(sessions.c.therapist_id.in_(sorted(set(therapist_ids))))
            .distinct()
        )
        async with self.db.session() as s:
            return set((await s.execute(stmt)).scalars().all())

    # -- chat ----------------------------------------------------------------
    async def add_chat(
        self, session_id: str, sender_id: str, client_msg_id: str, text: str, now: float
    ) -> tuple[ChatMessage, bool]:
        """Store a chat message once per ``(session_id, sender_id, client_msg_id)``.

        Returns the stored message and ``True``, or, for a retry, the message
        stored first (its id, text and time) and ``False``. Two servers storing
        the same retry at once store one row: the loser of the race reads the
        winner's. ``NotFound`` if the session was never recorded.
        """
        msg_id = _new_id("msg")
        values: dict[str, Any] = {
            "id": msg_id,
            "session_id": session_id,
            "sender_id": sender_id,
            "client_msg_id": client_msg_id,
            "body": self._cipher.encrypt(text),
            "sent_at": _to_dt(now),
        }
        if self.db.dialect == "sqlite":
            # No identity columns in SQLite; its single writer makes max + 1
            # safe (the insert holds the write lock before it reads).
            values["seq"] = (
                select(func.coalesce(func.max(chat_messages.c.seq), 0) + 1)
                .select_from(chat_messages)
                .scalar_subquery()
            )
        key = ("session_id", "sender_id", "client_msg_id")
        stmt = self._insert_or_nothing(chat_messages, values, key).returning(chat_messages.c.id)
        try:
            async with self.db.session() as s, s.begin():
                if (await s.execute(stmt)).scalar_one_or_none() is None:
                    # A retry: the first row is committed (PostgreSQL waited
                    # for it before skipping), so this read sees it.
                    first = await self._chat_by_key(s, session_id, sender_id, client_msg_id)
                    return first, False
        except sa_exc.IntegrityError:
            await self._require_session(session_id)
            raise
        message = ChatMessage(msg_id, session_id, sender_id, client_msg_id, text, _exact(now))
        return message, True

    async def transcript(self, session_id: str) -> list[ChatMessage]:
        """The session's chat in the order it was stored (empty for an
        unknown session)."""
        stmt = (
            select(chat_messages)
            .where(chat_messages.c.session_id == session_id)
            .order_by(chat_messages.c.seq)
        )
        async with self.db.session() as s:
            rows = (await s.execute(stmt)).mappings().all()
        return [self._chat(row) for row in rows]

    # -- notes ---------------------------------------------------------------
    async def add_note(self, session_id: str, therapist_id: str, text: str, now: float) -> Note:
        """Store a note (each call adds one). ``NotFound`` if the session was
        never recorded. Whether ``therapist_id`` may write it is the caller's
        check."""
        note = Note(_new_id("note"), text, _exact(now))
        values = {
            "id": note.id,
            "session_id": session_id,
            "therapist_id": therapist_id,
            "body": self._cipher.encrypt(text),
            "saved_at": _to_dt(now),
        }
        try:
            async with self.db.session() as s, s.begin():
                await s.execute(notes.insert().values(values))
        except sa_exc.IntegrityError:
            await self._require_session(session_id)
            raise
        return note

    async def notes(self, session_id: str) -> list[Note]:
        """The session's notes, oldest first."""
        stmt = (
            select(notes.c.id, notes.c.body, notes.c.saved_at)
            .where(notes.c.session_id == session_id)
            .order_by(notes.c.saved_at, notes.c.id)
        )
        async with self.db.session() as s:
            rows = (await s.execute(stmt)).all()
        return [Note(r.id, self._cipher.decrypt(bytes(r.body)), _to_ts(r.saved_at)) for r in rows]

    # -- keys ----------------------------------------------------------------
    async def rotate_keys(self, *, batch: int = ROTATE_BATCH) -> int:
        """Re-encrypt every chat message and note under the cipher's primary
        key, ``batch`` rows per transaction; returns how many rows.

        Run it after putting the new key first in ``DISPATCH_DATA_KEY`` on
        every server; afterwards the old key can be dropped. It can be
        interrupted and run again. Raises :class:`DataKeyError` (having
        rotated the rows before) at a row that no key opens.
        """
        total = 0
        for table in (chat_messages, notes):
            total += await rotate_column(
                self.db, self._cipher, table, table.c.id, table.c.body, batch
            )
        return total

    # -- internals -----------------------------------------------------------
    def _insert_or_nothing(
        self, table: Table, values: Mapping[str, Any], target: tuple[str, ...]
    ) -> Insert:
        """``INSERT ... ON CONFLICT (target) DO NOTHING`` in the dialect at hand."""
        if self.db.dialect == "postgresql":
            return (
                pg_insert(table)
                .values(dict(values))
                .on_conflict_do_nothing(index_elements=list(target))
            )
        return (
            sqlite_insert(table)
            .values(dict(values))
            .on_conflict_do_nothing(index_elements=list(target))
        )

    async def _update_one(self, session_id: str, stmt: Any) -> bool:
        """Run a conditional update of one session; True when it changed it
        (one statement: atomic by itself, so no transaction around it)."""
        async with self.db.write_one() as conn:
            if (await conn.execute(stmt)).first() is None:
                await self._require_session(session_id, conn)
                return False
            return True

    async def _require_session(
        self, session_id: str, s: AsyncSession | AsyncConnection | None = None
    ) -> None:
        """Raise ``NotFound`` unless the session was recorded."""
        exists: ColumnElement[bool] = (
            select(sessions.c.id).where(sessions.c.id == session_id).exists()
        )
        if s is None:
            async with self.db.session() as own:
                found = (await own.execute(select(exists))).scalar()
        else:
            found = (await s.execute(select(exists))).scalar()
        if not found:
            raise NotFound("no such session", session_id=session_id)

    async def _chat_by_key(
        self, s: AsyncSession, session_id: str, sender_id: str, client_msg_id: str
    ) -> ChatMessage:
        stmt = select(chat_messages).where(
            chat_messages.c.session_id == session_id,
            chat_messages.c.sender_id == sender_id,
            chat_messages.c.client_msg_id == client_msg_id,
        )
        return self._chat((await s.execute(stmt)).mappings().one())

    def _chat(self, row: RowMapping) -> ChatMessage:
        return ChatMessage(
            id=row["id"],
            session_id=row["session_id"],
            sender_id=row["sender_id"],
            client_msg_id=row["client_msg_id"],
            text=self._cipher.decrypt(bytes(row["body"])),
            sent_at=_to_ts(row["sent_at"]),
        )
