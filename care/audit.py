"""The audit trail of reads of clinical records (PROTOCOL.md §10).

Every read of a session's notes or transcript, of a client's form answers,
of an export and every erasure is written here: who (id and role), which
record, about whom (the client: the trail's ``subject``), of what (a session
id or a form name), when. Never the record's content.

An entry is written before the record is answered, in its own transaction:
when the trail cannot be written the read fails (a read nobody can account
for is not answered).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from care.tables import audit_log
from core.clock import rfc3339
from core.db import Database
from core.identity import User

__all__ = ["LIST_MAX", "AuditEntry", "AuditTrail", "Record"]

#: The most entries one page of the trail answers.
LIST_MAX: Final = 500


class Record(StrEnum):
    """What was read (or done)."""

    NOTES = "notes"
    TRANSCRIPT = "transcript"
    FORMS = "forms"
    CONSENTS = "consents"
    EXPORT = "export"
    ERASE = "erase"
    SAFEGUARDING = "safeguarding"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    actor_id: str
    actor_role: str
    record: str
    subject_id: str
    about_id: str | None
    at: float

    @classmethod
    def from_row(cls, row: Any) -> AuditEntry:
        """An entry from an ``audit_log`` row (a mapping)."""
        return cls(
            id=row["id"],
            actor_id=row["actor_id"],
            actor_role=row["actor_role"],
            record=row["record"],
            subject_id=row["subject_id"],
            about_id=row["about_id"],
            at=row["at"].timestamp(),
        )

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "actor_id": self.actor_id,
            "actor_role": self.actor_role,
            "record": self.record,
            "subject_id": self.subject_id,
            "about_id": self.about_id,
            "at": rfc3339(self.at),
        }


class AuditTrail:
    """Writes and lists the trail."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _row(
        self, actor: User, record: Record, subject_id: str, about_id: str | None, now: float
    ) -> dict[str, Any]:
        return {
            "actor_id": actor.id,
            "actor_role": actor.role.value,
            "record": record.value,
            "subject_id": subject_id,
            "about_id": about_id,
            "at": dt.datetime.fromtimestamp(now, tz=dt.UTC),
        }

    async def record(
        self,
        actor: User,
        record: Record,
        subject_id: str,
        about_id: str | None,
        now: float,
        *,
        s: AsyncSession | None = None,
    ) -> None:
        """Write one entry: in the caller's transaction ``s`` when given (an
        erasure and its entry commit together), else in one of its own."""
        stmt = insert(audit_log).values(self._row(actor, record, subject_id, about_id, now))
        if s is not None:
            await s.execute(stmt)
            return
        async with self.db.session() as own, own.begin():
            await own.execute(stmt)

    async def of_subject(
        self, subject_id: str, *, after: int = 0, limit: int = LIST_MAX
    ) -> list[AuditEntry]:
        """``subject_id``'s trail, oldest first, entries after id ``after``."""
        t = audit_log.c
        stmt = (
            select(audit_log)
            .where(t.subject_id == subject_id, t.id > after)
            .order_by(t.id)
            .limit(limit)
        )
        async with self.db.reading() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [AuditEntry.from_row(row) for row in rows]
