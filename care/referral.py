"""Referral codes: a therapist's own clients, attached to it (PROTOCOL.md §10).

Each therapist has one code (:func:`new_code`: :data:`CODE_LENGTH` characters
of :data:`ALPHABET`, uppercase letters and digits without the look-alikes
``0 O 1 I L``), made on its first ask and never changed; a client who uses it
is linked to that therapist once, for good (the same code again changes
nothing, another code is a conflict). What a link does lives elsewhere: the
pool gives the referring therapist a head start on the client's quick-connect
requests (:func:`pool.rules.head_start_holder`) and the client may book it
while it is not accepting new clients (``dispatch.booking_routes``).

:class:`Referrals` keeps codes in ``referral_codes`` and links in
``referrals`` (:mod:`care.tables`). Codes are not secret (they are meant to be
shared) but are not logged either: logs carry ids alone.

Errors: :class:`core.errors.InvalidField` (422) for a code of the wrong
shape, :class:`core.errors.NotFound` (404) for a code nobody has,
:class:`core.errors.Conflict` (409) for a client linked to another therapist.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from care.tables import referral_codes, referrals
from core.clock import rfc3339
from core.db import Database
from core.errors import BadInput, Conflict, InvalidField, NotFound

__all__ = [
    "ALPHABET",
    "CODE_LENGTH",
    "Link",
    "Referrals",
    "new_code",
    "parse_code",
]

#: The characters of a code: no 0/O, 1/I/L, so it survives being read aloud.
ALPHABET: Final = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH: Final = 8
#: New codes tried before giving up (a clash is about one in 10^11 per try).
_TRIES: Final = 5
CODE_RULE: Final = f"code must be {CODE_LENGTH} letters and digits (no 0, O, 1, I or L)"


def new_code() -> str:
    """A fresh random code."""
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def parse_code(body: Any) -> str:
    """The ``code`` of ``POST /v1/me/referral``'s body, uppercased (a code
    typed in lowercase, or with spaces around it, is still the code)."""
    if not isinstance(body, dict):
        raise BadInput("request body must be a JSON object")
    code = body.get("code")
    if not isinstance(code, str):
        raise InvalidField(CODE_RULE, field="code")
    code = code.strip().upper()
    if len(code) != CODE_LENGTH or any(ch not in ALPHABET for ch in code):
        raise InvalidField(CODE_RULE, field="code")
    return code


@dataclass(frozen=True, slots=True)
class Link:
    """A client linked to the therapist whose code it used."""

    client_id: str
    therapist_id: str
    linked_at: float

    def public(self) -> dict[str, Any]:
        return {"therapist_id": self.therapist_id, "linked_at": rfc3339(self.linked_at)}


def _to_dt(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


class Referrals:
    """Codes and links in the database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def code_of(self, therapist_id: str, now: float) -> str:
        """The therapist's code, made now if it has none. Two first asks at
        once (two servers) get the same code: the first insert wins, the
        other reads it."""
        t = referral_codes.c
        read = select(t.code).where(t.therapist_id == therapist_id)
        async with self.db.reading() as conn:
            code = (await conn.execute(read)).scalar_one_or_none()
        if code is not None:
            return str(code)
        for _ in range(_TRIES):
            values = {"therapist_id": therapist_id, "code": new_code(), "created_at": _to_dt(now)}
            stmt = self.db.insert_or_nothing(referral_codes, values, ["therapist_id"])
            try:
                async with self.db.session() as s, s.begin():
                    await s.execute(stmt)
                    code = (await s.execute(read)).scalar_one_or_none()
            except sa_exc.IntegrityError:
                continue  # the new code is another therapist's: draw again
            if code is not None:
                return str(code)
        raise Conflict("no free referral code was found; try again")

    async def therapist_of_code(self, code: str) -> str | None:
        t = referral_codes.c
        async with self.db.reading() as conn:
            tid = (
                await conn.execute(select(t.therapist_id).where(t.code == code))
            ).scalar_one_or_none()
        return None if tid is None else str(tid)

    async def link(self, client_id: str, code: str, now: float) -> Link:
        """Link the client to the code's therapist, once. The same
        therapist's code again answers the first link unchanged; another
        therapist's raises Conflict; a code nobody has, NotFound."""
        tid = await self.therapist_of_code(code)
        if tid is None:
            raise NotFound("no therapist has this referral code")
        values = {"client_id": client_id, "therapist_id": tid, "linked_at": _to_dt(now)}
        stmt = self.db.insert_or_nothing(referrals, values, ["client_id"])
        async with self.db.session() as s, s.begin():
            await s.execute(stmt)
        link = await self.link_of(client_id)
        assert link is not None  # inserted now, or there before
        if link.therapist_id != tid:
            raise Conflict(
                "you are linked with another therapist already", therapist_id=link.therapist_id
            )
        return link

    async def link_of(self, client_id: str) -> Link | None:
        """The client's link, if it has one."""
        t = referrals.c
        stmt = select(t.therapist_id, t.linked_at).where(t.client_id == client_id)
        async with self.db.reading() as conn:
            row = (await conn.execute(stmt)).one_or_none()
        if row is None:
            return None
        return Link(client_id, str(row.therapist_id), row.linked_at.timestamp())

    async def therapist_of(self, client_id: str) -> str | None:
        """The therapist whose code the client used, if any: the referrer
        the dispatcher gives a head start."""
        link = await self.link_of(client_id)
        return None if link is None else link.therapist_id

    async def refers(self, therapist_id: str, client_id: str) -> bool:
        """Whether the client came to the service with this therapist's code."""
        return await self.therapist_of(client_id) == therapist_id
