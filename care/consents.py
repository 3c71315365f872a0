"""Consent records (PROTOCOL.md §10): every agreement a client gave, kept.

Two kinds, in ``consents`` (:mod:`care.tables`):

* ``consent``: the client agreed to the consent form at its ``version``
  (written with its answers, :meth:`care.forms.FormStore.put`); a form
  agreed again later adds a row, so the history stays.
* ``guardian``: a guardian agreed to a minor's quick-connect request
  (``guardian_consent: true`` with an ``age`` under 18); ``about_id`` is the
  request's id and ``version`` the consent form's version at the time.
  Written just before the request enters the pool, under the id it will
  have, so that no request exists without it; removed again when the pool
  makes no request under that id (:meth:`Consents.forget_unmade`: refused,
  or a replay answered the first request), so a request has one.

A record holds who, what, which version and when; no content to encrypt.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from care.tables import consents
from core.clock import rfc3339
from core.db import Database

__all__ = ["CONSENT", "GUARDIAN", "Consent", "Consents"]

#: The consent form's agreement.
CONSENT: Final = "consent"
#: A guardian's agreement to a minor's request.
GUARDIAN: Final = "guardian"
#: The most records one client's list answers.
LIST_MAX: Final = 500


@dataclass(frozen=True, slots=True)
class Consent:
    client_id: str
    kind: str
    version: int
    about_id: str | None
    given_at: float

    def public(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": self.version,
            "given_at": rfc3339(self.given_at),
            "about_id": self.about_id,
        }


def _to_dt(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


class Consents:
    """The consent records in the database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def give(
        self,
        client_id: str,
        kind: str,
        version: int,
        about_id: str | None,
        now: float,
        *,
        s: AsyncSession | None = None,
    ) -> None:
        """Record one agreement: in the caller's transaction ``s`` when given
        (the answers and their agreement commit together), else its own."""
        stmt = insert(consents).values(
            client_id=client_id,
            kind=kind,
            version=version,
            about_id=about_id,
            given_at=_to_dt(now),
        )
        if s is not None:
            await s.execute(stmt)
            return
        async with self.db.session() as own, own.begin():
            await own.execute(stmt)

    async def forget_unmade(self, client_id: str, kind: str, about_ids: list[str]) -> None:
        """Remove the records of ``kind`` written about ``about_ids`` that
        were never made (a request the pool refused, or a replay that
        answered the first request): a consent about nothing."""
        if not about_ids:
            return
        t = consents.c
        stmt = delete(consents).where(
            t.client_id == client_id, t.kind == kind, t.about_id.in_(about_ids)
        )
        async with self.db.write_one() as conn:
            await conn.execute(stmt)

    async def of_client(self, client_id: str, *, limit: int = LIST_MAX) -> list[Consent]:
        """The client's records, oldest first."""
        t = consents.c
        stmt = (
            select(consents).where(t.client_id == client_id).order_by(t.given_at, t.id).limit(limit)
        )
        async with self.db.reading() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [
            Consent(
                client_id=row["client_id"],
                kind=row["kind"],
                version=int(row["version"]),
                about_id=row["about_id"],
                given_at=row["given_at"].timestamp(),
            )
            for row in rows
        ]
