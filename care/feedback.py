"""Clients' feedback on their sessions (PROTOCOL.md §10).

The rules (:func:`check_open`): only the session's client leaves feedback,
once, for a session that went live and has ended, within
:data:`WINDOW_S` (7 days) of its end. A ``rating`` is an integer 1..5, a
``comment`` optional text of at most :data:`COMMENT_MAX` characters
(:func:`parse_feedback`).

:class:`FeedbackStore` keeps it in ``feedback`` (:mod:`care.tables`), the
comment sealed by :class:`signaling.crypto.Cipher`: the database never holds
it in clear, and it is never logged.

Errors: :class:`core.errors.InvalidField` (422) for a bad field,
:class:`core.errors.TooEarly` (422 ``too_early``) before the session ended,
:class:`core.errors.Conflict` (409) for a session that never went live or
feedback given already, :class:`core.errors.TooLate` (409 ``too_late``)
after the window.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import func, select

from care.tables import feedback as feedback_table
from core.clock import rfc3339
from core.db import Database
from core.errors import BadInput, Conflict, InvalidField, TooEarly, TooLate
from signaling.crypto import Cipher
from signaling.records import SessionRecord
from signaling.rotation import rotate_column

__all__ = [
    "COMMENT_MAX",
    "WINDOW_S",
    "Feedback",
    "FeedbackStore",
    "Summary",
    "check_open",
    "parse_feedback",
]

#: Feedback is taken this long after a session's end.
WINDOW_S: Final = 7 * 86400.0
#: A comment's most characters.
COMMENT_MAX: Final = 2000
RATING_MIN: Final = 1
RATING_MAX: Final = 5
#: Rows re-encrypted per transaction by :meth:`FeedbackStore.rotate_keys`.
ROTATE_BATCH: Final = 500


@dataclass(frozen=True, slots=True)
class Feedback:
    """One client's feedback on one session, its comment decrypted."""

    session_id: str
    therapist_id: str
    client_id: str
    rating: int
    comment: str | None
    created_at: float

    def public(self, *, full: bool) -> dict[str, Any]:
        """As the API shows it: ``full`` (the client itself, operators) with
        the session's and client's ids; else (the therapist) without them."""
        item: dict[str, Any] = {
            "rating": self.rating,
            "comment": self.comment,
            "created_at": rfc3339(self.created_at),
        }
        if full:
            item |= {
                "session_id": self.session_id,
                "therapist_id": self.therapist_id,
                "client_id": self.client_id,
            }
        return item


@dataclass(frozen=True, slots=True)
class Summary:
    """A therapist's feedback: how many, their average rating (None when
    none, else 2 decimals), and the newest of them."""

    count: int
    average: float | None
    items: list[Feedback]


def parse_feedback(body: Any) -> tuple[int, str | None]:
    """The body of ``POST /v1/sessions/{id}/feedback``: ``rating`` an integer
    1..5 (required), ``comment`` a string of at most 2000 characters without
    NUL (optional; blank is none)."""
    if not isinstance(body, dict):
        raise BadInput("request body must be a JSON object")
    rating = body.get("rating")
    if rating is None:
        raise InvalidField("rating is required", field="rating")
    if type(rating) is not int or not RATING_MIN <= rating <= RATING_MAX:
        raise InvalidField(
            f"rating must be a whole number from {RATING_MIN} to {RATING_MAX}", field="rating"
        )
    comment = body.get("comment")
    if comment is None:
        return rating, None
    if type(comment) is not str or len(comment) > COMMENT_MAX or "\x00" in comment:
        raise InvalidField(
            f"comment must be a string of at most {COMMENT_MAX} characters without NUL",
            field="comment",
        )
    return rating, comment if comment.strip() else None


def check_open(rec: SessionRecord, now: float) -> None:
    """Raise unless feedback on ``rec`` may be given at ``now`` (whether the
    caller is its client is the caller's check; whether it was given already,
    the store's)."""
    if rec.ended_at is None:
        raise TooEarly("feedback can be given once the session has ended")
    if rec.started_at is None:
        raise Conflict("this session never started, so there is nothing to give feedback on")
    if now > rec.ended_at + WINDOW_S:
        raise TooLate("feedback can be given only within 7 days of the session's end")


def _to_dt(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


class FeedbackStore:
    """Feedback in the database, comments encrypted with ``cipher``."""

    def __init__(self, db: Database, cipher: Cipher) -> None:
        self.db = db
        self._cipher = cipher

    async def add(
        self, rec: SessionRecord, rating: int, comment: str | None, now: float
    ) -> Feedback:
        """Store the client's feedback on ``rec`` (checked by
        :func:`check_open` first). ``Conflict`` when there is some already,
        also when two arrive at once (the first wins)."""
        check_open(rec, now)
        created = _to_dt(now)
        values = {
            "session_id": rec.id,
            "therapist_id": rec.therapist_id,
            "client_id": rec.client_id,
            "rating": rating,
            "comment": None if comment is None else self._cipher.encrypt(comment),
            "created_at": created,
        }
        stmt = self.db.insert_or_nothing(feedback_table, values, ["session_id"]).returning(
            feedback_table.c.session_id
        )
        async with self.db.session() as s, s.begin():
            stored = (await s.execute(stmt)).first()
        if stored is None:
            raise Conflict("feedback on this session has been given already")
        return Feedback(
            rec.id, rec.therapist_id, rec.client_id, rating, comment, created.timestamp()
        )

    async def get(self, session_id: str) -> Feedback | None:
        """The feedback on a session, or None."""
        stmt = select(feedback_table).where(feedback_table.c.session_id == session_id)
        async with self.db.reading() as conn:
            row = (await conn.execute(stmt)).mappings().one_or_none()
        return None if row is None else self._feedback(row)

    async def of_therapist(self, therapist_id: str, *, limit: int) -> Summary:
        """``therapist_id``'s count and average over all its feedback, and
        the newest ``limit`` items."""
        t = feedback_table.c
        totals = select(func.count(), func.avg(t.rating)).where(t.therapist_id == therapist_id)
        items = (
            select(feedback_table)
            .where(t.therapist_id == therapist_id)
            .order_by(t.created_at.desc(), t.session_id.desc())
            .limit(limit)
        )
        async with self.db.reading() as conn:
            count, avg = (await conn.execute(totals)).one()
            rows = (await conn.execute(items)).mappings().all()
        average = None if not count or avg is None else round(float(avg), 2)
        return Summary(int(count), average, [self._feedback(row) for row in rows])

    async def rotate_keys(self, *, batch: int = ROTATE_BATCH) -> int:
        """Re-encrypt every comment under the cipher's primary key (as
        :meth:`signaling.records.Records.rotate_keys`, ``batch`` rows per
        transaction); returns how many. Raises
        :class:`signaling.crypto.DataKeyError` at a comment no key opens."""
        t = feedback_table.c
        return await rotate_column(
            self.db, self._cipher, feedback_table, t.session_id, t.comment, batch
        )

    def _feedback(self, row: Any) -> Feedback:
        comment = row["comment"]
        return Feedback(
            session_id=row["session_id"],
            therapist_id=row["therapist_id"],
            client_id=row["client_id"],
            rating=row["rating"],
            comment=None if comment is None else self._cipher.decrypt(bytes(comment)),
            created_at=row["created_at"].timestamp(),
        )
