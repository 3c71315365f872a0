"""photos' table (SQLAlchemy Core) on the shared :data:`core.tables.metadata`.

* ``photos``: a therapist's photo as served (PROTOCOL.md §7), at most one per
  therapist: the re-encoded bytes (no metadata left, :mod:`photos.image`),
  their media type, and their digest, which names this version in the
  profile's ``photo_url`` and is the ``ETag``. A new upload replaces the row.
  Public once set: served to anyone who has the URL.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import Column, LargeBinary, String, Table

from core.tables import ID_LEN, UTCDateTime, metadata

photos: Final = Table(
    "photos",
    metadata,
    Column("therapist_id", String(ID_LEN), primary_key=True),
    Column("content_type", String(32), nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
