"""Therapists' photos in the durable store: one row each (:mod:`photos.tables`).

Kept in the database, next to the rest of what must outlive a restart, rather
than on a server's disk: every server answers ``GET /v1/therapists/{id}/photo``
from the same place, and a photo is at most a few hundred kilobytes after
:func:`photos.image.process`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from core.db import Database
from photos.image import Photo
from photos.tables import photos


class Photos:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def put(self, therapist_id: str, photo: Photo, now: float) -> None:
        """Store ``photo`` as the therapist's, replacing any other.

        One statement (``INSERT ... ON CONFLICT DO UPDATE``), so two uploads at
        once leave one of them whole, never an error: a delete then an insert
        would fail the second on PostgreSQL, whose insert meets the first's row."""
        values = {
            "therapist_id": therapist_id,
            "content_type": photo.content_type,
            "data": photo.data,
            "digest": photo.digest,
            "updated_at": dt.datetime.fromtimestamp(now, tz=dt.UTC),
        }
        async with self.db.writing() as conn:
            await conn.execute(self._upsert(values))

    async def get(self, therapist_id: str) -> Photo | None:
        """The therapist's photo, or ``None`` when it has none."""
        stmt = select(photos.c.data, photos.c.content_type, photos.c.digest).where(
            photos.c.therapist_id == therapist_id
        )
        async with self.db.reading() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            return None
        return Photo(data=bytes(row.data), content_type=row.content_type, digest=row.digest)

    def _upsert(self, values: dict[str, Any]) -> Insert:
        changes = {k: v for k, v in values.items() if k != "therapist_id"}
        if self.db.dialect == "postgresql":
            pg = pg_insert(photos).values(values)
            return pg.on_conflict_do_update(index_elements=["therapist_id"], set_=changes)
        lite = sqlite_insert(photos).values(values)
        return lite.on_conflict_do_update(index_elements=["therapist_id"], set_=changes)
