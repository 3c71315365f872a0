"""Erasing a client (PROTOCOL.md §10, ``POST /v1/users/{id}/erase``).

What goes, in one database transaction (:meth:`Erasures.erase`):

* every chat message of the client's sessions, both sides' (they are about
  the client), and every therapist's note on them;
* its form answers, and its data key (:meth:`care.datakeys.DataKeys.destroy`):
  any copy of those answers left anywhere (a backup, a replica, a free page)
  no longer opens: crypto-shredding;
* its name on its sessions (``sessions.client_name``), its email
  (``client_contacts``), its link to a referring therapist (``referrals``);
* the comments of the feedback it gave (the rating stays: a number, no text).

What stays, keyed by the client's id alone: ledger entries, holds,
checkouts and bookings (money records must stay), the sessions' rows
(times, states, the therapist), consent records (kind, version, when: the
record that consent was given), the audit trail, and safeguarding alerts
with their concerns (a safeguarding record is kept for the safety of the
person and others; it is sealed by the service key and read by operators
only, each read audited).

The same transaction writes the ``erasures`` row (who, when, the counts)
and the audit entry (:attr:`care.audit.Record.ERASE`). Erasing again is
safe: whatever the id gained since is erased too, its counts are added to
the first row, and the answer is that row (the first ``erased_at`` and
``erased_by``).

SQLite: the erasing connection runs ``PRAGMA secure_delete = ON``, so the
pages the deleted rows lived on are overwritten with zeros, and the WAL is
checkpointed and truncated after the commit (old page images in it go).
PostgreSQL keeps dead row versions until ``VACUUM`` (docs/operations.md).

Whether the id is a client (not a therapist, not an operator), and the
live pool (a waiting request), are the caller's business.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from care.audit import AuditTrail, Record
from care.datakeys import DataKeys
from care.tables import consents, erasures, feedback, form_answers, referrals, safeguarding_alerts
from core.clock import rfc3339
from core.db import Database
from core.identity import User
from core.logs import get_logger
from notify.tables import client_contacts
from signaling.tables import chat_messages, notes, sessions

__all__ = ["COUNTS", "Erasure", "Erasures"]

log = get_logger(component="erasure")

#: The keys of an erasure's summary, in the order the answer shows them:
#: numbers of rows (or True/False for the one-per-client things).
COUNTS: Final = (
    "chat_messages",
    "notes",
    "form_answers",
    "data_key",
    "names",
    "feedback_comments",
    "contact",
    "referral",
    "request_cancelled",
    "consents_kept",
    "safeguarding_kept",
)


@dataclass(frozen=True, slots=True)
class Erasure:
    """One erased client: by whom, when (the first time), and what."""

    user_id: str
    erased_by: str
    erased_at: float
    summary: dict[str, int | bool]

    def public(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "erased": dict(self.summary),
            "erased_at": rfc3339(self.erased_at),
            "erased_by": self.erased_by,
        }


def _merge(first: Mapping[str, Any], more: Mapping[str, Any]) -> dict[str, int | bool]:
    """The counts of two erasures of one id added up (a flag: either)."""
    out: dict[str, int | bool] = {}
    for key in COUNTS:
        a, b = first.get(key, 0), more.get(key, 0)
        if isinstance(a, bool) or isinstance(b, bool):
            out[key] = bool(a) or bool(b)
        elif key.endswith("_kept"):
            out[key] = int(b)  # what is kept now, not a sum
        else:
            out[key] = int(a) + int(b)
    return out


def _count(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


class Erasures:
    """Erases clients in ``db``; ``data_keys`` and ``audit`` are the app's."""

    def __init__(self, db: Database, data_keys: DataKeys, audit: AuditTrail) -> None:
        self.db = db
        self._data_keys = data_keys
        self._audit = audit

    async def erase(
        self, actor: User, client_id: str, now: float, *, request_cancelled: bool = False
    ) -> Erasure:
        """Erase ``client_id``'s care data as ``actor`` (an operator) at
        ``now``; ``request_cancelled``: the caller cancelled its waiting
        request (counted in the summary). Returns the erasure as recorded."""
        async with self.db.session() as s:
            conn = await s.connection()
            if self.db.dialect == "sqlite":
                # Deleted cells and freed pages are zeroed on this connection
                # (a pooled connection keeps it on: harmless, and safer); the
                # write lock is taken before anything is read.
                await conn.exec_driver_sql("PRAGMA secure_delete = ON")
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                done = await self._erase_rows(s, client_id)
                done["request_cancelled"] = request_cancelled
                erasure = await self._record(s, actor, client_id, done, now)
                await self._audit.record(actor, Record.ERASE, client_id, None, now, s=s)
                await s.commit()
            except BaseException:
                await s.rollback()
                raise
        if self.db.dialect == "sqlite":
            await self._truncate_wal()
        log.warning(
            "client.erased",
            user_id=client_id,
            erased_by=actor.id,
            **{k: v for k, v in done.items() if not k.endswith("_kept")},
        )
        return erasure

    async def _erase_rows(self, s: AsyncSession, client_id: str) -> dict[str, int | bool]:
        theirs = select(sessions.c.id).where(sessions.c.client_id == client_id).scalar_subquery()
        chat = await s.execute(delete(chat_messages).where(chat_messages.c.session_id.in_(theirs)))
        noted = await s.execute(delete(notes).where(notes.c.session_id.in_(theirs)))
        named = await s.execute(
            update(sessions)
            .where(sessions.c.client_id == client_id, sessions.c.client_name.is_not(None))
            .values(client_name=None)
        )
        answers = await s.execute(delete(form_answers).where(form_answers.c.client_id == client_id))
        key = await self._data_keys.destroy(s, client_id)
        comments = await s.execute(
            update(feedback)
            .where(feedback.c.client_id == client_id, feedback.c.comment.is_not(None))
            .values(comment=None)
        )
        contact = await s.execute(
            delete(client_contacts).where(client_contacts.c.client_id == client_id)
        )
        referral = await s.execute(delete(referrals).where(referrals.c.client_id == client_id))
        kept_consents = await s.scalar(
            select(func.count()).select_from(consents).where(consents.c.client_id == client_id)
        )
        kept_alerts = await s.scalar(
            select(func.count())
            .select_from(safeguarding_alerts)
            .where(safeguarding_alerts.c.client_id == client_id)
        )
        return {
            "chat_messages": _count(chat),
            "notes": _count(noted),
            "form_answers": _count(answers),
            "data_key": key,
            "names": _count(named),
            "feedback_comments": _count(comments),
            "contact": _count(contact) > 0,
            "referral": _count(referral) > 0,
            "consents_kept": int(kept_consents or 0),
            "safeguarding_kept": int(kept_alerts or 0),
        }

    async def _record(
        self,
        s: AsyncSession,
        actor: User,
        client_id: str,
        done: dict[str, int | bool],
        now: float,
    ) -> Erasure:
        """Write the ``erasures`` row (the first) or add ``done`` to it."""
        at = dt.datetime.fromtimestamp(now, tz=dt.UTC)
        values = {
            "user_id": client_id,
            "erased_by": actor.id,
            "erased_at": at,
            "summary": json.dumps(_merge({}, done)),
        }
        first = (
            await s.execute(
                self.db.insert_or_nothing(erasures, values, ["user_id"]).returning(
                    erasures.c.user_id
                )
            )
        ).first() is not None
        row = (
            (await s.execute(select(erasures).where(erasures.c.user_id == client_id)))
            .mappings()
            .one()
        )
        summary: dict[str, int | bool] = json.loads(row["summary"])
        if not first:
            # Erased before: add this time's counts to the first row.
            summary = _merge(summary, done)
            await s.execute(
                update(erasures)
                .where(erasures.c.user_id == client_id)
                .values(summary=json.dumps(summary))
            )
        return Erasure(client_id, row["erased_by"], row["erased_at"].timestamp(), summary)

    async def _truncate_wal(self) -> None:
        """Copy the WAL into the file and cut it to nothing, so the page images
        it held from before the erasure are gone too. Best effort: a reader
        of another process holding an old snapshot makes it a partial
        checkpoint (the next one reuses the WAL from its start)."""
        async with self.db.reading() as conn:
            row: Any = (await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")).first()
        if row is not None and row[0]:
            log.warning("erasure.wal_busy", log_frames=row[1], checkpointed=row[2])
