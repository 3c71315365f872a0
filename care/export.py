"""The care records' part of ``GET /v1/me/export`` (PROTOCOL.md §10).

:class:`CareExport` reads, decrypted, what :mod:`care.tables` holds about one
user: a client's form answers (opened with its own data key), consents,
the feedback it gave, its referral link and the audit trail of who read
its records; a therapist's feedback received and its referral code; the
actions an operator took (its audit entries). The rest of an export
(sessions, chat, notes, bookings, ledger, contact details) is assembled by
the route from the other domains.

Never a therapist's notes in a client's part, never a safeguarding concern:
a concern is the therapist's word about the client, read by operators only.
Nothing here is logged.
"""

from __future__ import annotations

import json
from typing import Any, Final

from sqlalchemy import select

from care.audit import AuditEntry, AuditTrail
from care.datakeys import DataKeys
from care.tables import (
    audit_log,
    consents,
    feedback,
    form_answers,
    referral_codes,
    referrals,
)
from core.clock import rfc3339
from core.db import Database
from signaling.crypto import Cipher

__all__ = ["EXPORT_AUDIT_MAX", "CareExport"]

#: The most audit entries one export carries (the newest).
EXPORT_AUDIT_MAX: Final = 5000


class CareExport:
    """Reads care records for an export; ``cipher`` is the service's (it
    seals feedback comments), ``data_keys`` the clients' own."""

    def __init__(
        self, db: Database, cipher: Cipher, data_keys: DataKeys, audit: AuditTrail
    ) -> None:
        self.db = db
        self._cipher = cipher
        self._data_keys = data_keys
        self._audit = audit

    async def client(self, client_id: str) -> dict[str, Any]:
        """``forms``, ``consents``, ``feedback_given``, ``referral`` and
        ``audit`` (who read this client's records, when)."""
        return {
            "forms": await self._forms(client_id),
            "consents": await self._consents(client_id),
            "feedback_given": await self._feedback("client_id", client_id, full=True),
            "referral": await self._referral(client_id),
            "audit": [e.public() for e in await self._trail(client_id)],
        }

    async def therapist(self, therapist_id: str) -> dict[str, Any]:
        """``feedback_received`` (without who gave it, as the therapist reads
        it) and ``referral_code``."""
        stmt = select(referral_codes.c.code, referral_codes.c.created_at).where(
            referral_codes.c.therapist_id == therapist_id
        )
        async with self.db.reading() as conn:
            code = (await conn.execute(stmt)).first()
        return {
            "feedback_received": await self._feedback("therapist_id", therapist_id, full=False),
            "referral_code": None
            if code is None
            else {"code": code.code, "created_at": rfc3339(code.created_at.timestamp())},
        }

    async def operator(self, operator_id: str) -> dict[str, Any]:
        """``actions``: the operator's own audit entries, newest first."""
        t = audit_log.c
        stmt = (
            select(audit_log)
            .where(t.actor_id == operator_id)
            .order_by(t.id.desc())
            .limit(EXPORT_AUDIT_MAX)
        )
        async with self.db.reading() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return {"actions": [AuditEntry.from_row(row).public() for row in rows]}

    # -- pieces --------------------------------------------------------------------
    async def _forms(self, client_id: str) -> list[dict[str, Any]]:
        t = form_answers.c
        stmt = select(form_answers).where(t.client_id == client_id).order_by(t.form)
        async with self.db.reading() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        if not rows:
            return []
        cipher = await self._data_keys.cipher_for(client_id, create=False)
        out = []
        for row in rows:
            # No key: erased (crypto-shredded) while the rows were read.
            answers = None if cipher is None else json.loads(cipher.decrypt(bytes(row["answers"])))
            out.append(
                {
                    "name": row["form"],
                    "version": row["version"],
                    "updated_at": rfc3339(row["updated_at"].timestamp()),
                    "answers": answers,
                }
            )
        return out

    async def _consents(self, client_id: str) -> list[dict[str, Any]]:
        t = consents.c
        stmt = select(consents).where(t.client_id == client_id).order_by(t.given_at, t.id)
        async with self.db.reading() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [
            {
                "kind": row["kind"],
                "version": row["version"],
                "about_id": row["about_id"],
                "given_at": rfc3339(row["given_at"].timestamp()),
            }
            for row in rows
        ]

    async def _feedback(self, column: str, user_id: str, *, full: bool) -> list[dict[str, Any]]:
        t = feedback.c
        stmt = (
            select(feedback)
            .where(t[column] == user_id)
            .order_by(t.created_at.desc(), t.session_id.desc())
        )
        async with self.db.reading() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        items = []
        for row in rows:
            comment = row["comment"]
            item: dict[str, Any] = {
                "rating": row["rating"],
                "comment": None if comment is None else self._cipher.decrypt(bytes(comment)),
                "created_at": rfc3339(row["created_at"].timestamp()),
            }
            if full:
                item |= {"session_id": row["session_id"], "therapist_id": row["therapist_id"]}
            items.append(item)
        return items

    async def _referral(self, client_id: str) -> dict[str, Any] | None:
        stmt = select(referrals).where(referrals.c.client_id == client_id)
        async with self.db.reading() as conn:
            row = (await conn.execute(stmt)).mappings().one_or_none()
        if row is None:
            return None
        return {
            "therapist_id": row["therapist_id"],
            "linked_at": rfc3339(row["linked_at"].timestamp()),
        }

    async def _trail(self, subject_id: str) -> list[AuditEntry]:
        entries: list[AuditEntry] = []
        after = 0
        while len(entries) < EXPORT_AUDIT_MAX:
            page = await self._audit.of_subject(subject_id, after=after)
            if not page:
                break
            entries.extend(page)
            after = page[-1].id
        return entries[:EXPORT_AUDIT_MAX]
