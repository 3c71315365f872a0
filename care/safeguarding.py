"""Safeguarding alerts (PROTOCOL.md §10): a therapist raises a concern about
one of its sessions; every operator is told at once and one acknowledges it.

:class:`Safeguarding` keeps the alerts in ``safeguarding_alerts``
(:mod:`care.tables`): the concern's text sealed by
:class:`signaling.crypto.Cipher` (the database never holds it in clear), the
ids of the session, its therapist and its client, when it was raised, and who
acknowledged it and when (the first acknowledgement wins: a second changes
nothing and answers the first).

The frames (:func:`alert_frame`, :func:`acked_frame`) and the email
(:func:`alert_email`) carry ids and times only, never the concern: it is
read only by an operator who opens the alert (``GET /v1/safeguarding/{id}``).

Errors: :class:`core.errors.NotFound` for an unknown alert,
:class:`core.errors.Unavailable` when the database is down,
:class:`signaling.crypto.DataKeyError` for a concern no configured key opens.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import case, select, update
from sqlalchemy.engine import RowMapping

from care.tables import safeguarding_alerts as alerts
from core.clock import rfc3339
from core.db import Database
from core.errors import NotFound
from notify.outbox import NewMessage
from signaling.crypto import Cipher
from signaling.rotation import rotate_column

__all__ = [
    "ALERT_TEMPLATE",
    "CONCERN_MAX",
    "LIST_MAX",
    "SAFEGUARDING_RECIPIENT",
    "Alert",
    "Safeguarding",
    "acked_frame",
    "alert_email",
    "alert_frame",
]

#: The longest concern, in characters.
CONCERN_MAX: Final = 4000
#: The most alerts one list answers.
LIST_MAX: Final = 200
#: The email's template (notify/templates/safeguarding_alert.*).
ALERT_TEMPLATE: Final = "safeguarding_alert"
#: The outbox row's recipient: not a user, the safeguarding address of the
#: settings (looked up when the email is sent).
SAFEGUARDING_RECIPIENT: Final = "safeguarding"
#: Rows re-encrypted per transaction by :meth:`Safeguarding.rotate_keys`.
ROTATE_BATCH: Final = 500


def _to_dt(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


def _opt(value: dt.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _time(ts: float | None) -> str | None:
    return None if ts is None else rfc3339(ts)


def new_alert_id() -> str:
    """``sg_`` and a time-ordered unique part."""
    return f"sg_{time.time_ns() // 1000:014x}{secrets.token_hex(5)}"


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert, without its concern; times as epoch floats."""

    id: str
    session_id: str
    therapist_id: str
    client_id: str
    raised_at: float
    acked_by: str | None = None
    acked_at: float | None = None

    @property
    def open(self) -> bool:
        return self.acked_at is None

    def public(self) -> dict[str, Any]:
        """The alert as operators and its therapist read it (no concern)."""
        return {
            "id": self.id,
            "session_id": self.session_id,
            "therapist_id": self.therapist_id,
            "client_id": self.client_id,
            "raised_at": rfc3339(self.raised_at),
            "acked_by": self.acked_by,
            "acked_at": _time(self.acked_at),
        }


def alert_frame(alert: Alert) -> dict[str, Any]:
    """``safeguarding.alert``, to every operator."""
    return {
        "type": "safeguarding.alert",
        "id": alert.id,
        "session_id": alert.session_id,
        "therapist_id": alert.therapist_id,
        "client_id": alert.client_id,
        "raised_at": rfc3339(alert.raised_at),
    }


def acked_frame(alert: Alert) -> dict[str, Any]:
    """``safeguarding.acked``, to every operator."""
    return {
        "type": "safeguarding.acked",
        "id": alert.id,
        "acked_by": alert.acked_by,
        "acked_at": _time(alert.acked_at),
    }


def alert_email(alert: Alert, public_url: str) -> NewMessage:
    """The email to the safeguarding address: once per alert (its dedupe key
    names the alert), ids and the time only, and a link to the operators'
    page. Never the concern."""
    return NewMessage(
        channel="email",
        dedupe_key=f"email:{ALERT_TEMPLATE}:{alert.id}",
        recipient_id=SAFEGUARDING_RECIPIENT,
        template=ALERT_TEMPLATE,
        about_id=alert.id,
        payload={
            "alert_id": alert.id,
            "session_id": alert.session_id,
            "therapist_id": alert.therapist_id,
            "raised_at": rfc3339(alert.raised_at),
            "ops_url": public_url.rstrip("/") + "/ops",
        },
    )


def _alert(row: RowMapping) -> Alert:
    return Alert(
        id=row["id"],
        session_id=row["session_id"],
        therapist_id=row["therapist_id"],
        client_id=row["client_id"],
        raised_at=row["raised_at"].timestamp(),
        acked_by=row["acked_by"],
        acked_at=_opt(row["acked_at"]),
    )


_PUBLIC_COLUMNS: Final = (
    alerts.c.id,
    alerts.c.session_id,
    alerts.c.therapist_id,
    alerts.c.client_id,
    alerts.c.raised_at,
    alerts.c.acked_by,
    alerts.c.acked_at,
)


class Safeguarding:
    """The alerts in the database, concerns sealed with ``cipher``."""

    def __init__(self, db: Database, cipher: Cipher) -> None:
        self.db = db
        self._cipher = cipher

    async def raise_alert(
        self, session_id: str, therapist_id: str, client_id: str, concern: str, now: float
    ) -> Alert:
        """Store a new alert (each call raises one). Whether ``therapist_id``
        may raise it about the session is the caller's check."""
        at = _to_dt(now)
        alert = Alert(new_alert_id(), session_id, therapist_id, client_id, at.timestamp())
        async with self.db.session() as s, s.begin():
            await s.execute(
                alerts.insert().values(
                    id=alert.id,
                    session_id=session_id,
                    therapist_id=therapist_id,
                    client_id=client_id,
                    concern=self._cipher.encrypt(concern),
                    raised_at=at,
                )
            )
        return alert

    async def get(self, alert_id: str) -> Alert:
        """The alert (``NotFound`` if there is none)."""
        async with self.db.session() as s:
            row = (
                (await s.execute(select(*_PUBLIC_COLUMNS).where(alerts.c.id == alert_id)))
                .mappings()
                .one_or_none()
            )
        if row is None:
            raise NotFound("no such safeguarding alert", alert_id=alert_id)
        return _alert(row)

    async def concern(self, alert_id: str) -> tuple[Alert, str]:
        """The alert and its concern, decrypted (``NotFound`` if there is none)."""
        async with self.db.session() as s:
            row = (
                (await s.execute(select(alerts).where(alerts.c.id == alert_id)))
                .mappings()
                .one_or_none()
            )
        if row is None:
            raise NotFound("no such safeguarding alert", alert_id=alert_id)
        return _alert(row), self._cipher.decrypt(bytes(row["concern"]))

    async def ack(self, alert_id: str, operator_id: str, now: float) -> tuple[Alert, bool]:
        """Acknowledge the alert as ``operator_id`` at ``now``: the alert and
        True; already acknowledged, it as it was (the first wins) and False.
        ``NotFound`` if there is none."""
        stmt = (
            update(alerts)
            .where(alerts.c.id == alert_id, alerts.c.acked_at.is_(None))
            .values(acked_by=operator_id, acked_at=_to_dt(now))
            .returning(alerts.c.id)
        )
        async with self.db.session() as s, s.begin():
            changed = (await s.execute(stmt)).first() is not None
        return await self.get(alert_id), changed

    async def list(self, *, open_: bool | None = None, limit: int = LIST_MAX) -> list[Alert]:
        """Alerts, the open ones first, newest first within each; ``open_``:
        only the open ones (True) or only the acknowledged ones (False)."""
        stmt = select(*_PUBLIC_COLUMNS)
        if open_ is True:
            stmt = stmt.where(alerts.c.acked_at.is_(None))
        elif open_ is False:
            stmt = stmt.where(alerts.c.acked_at.is_not(None))
        stmt = stmt.order_by(
            case((alerts.c.acked_at.is_(None), 0), else_=1),
            alerts.c.raised_at.desc(),
            alerts.c.id.desc(),
        ).limit(limit)
        async with self.db.session() as s:
            rows = (await s.execute(stmt)).mappings().all()
        return [_alert(row) for row in rows]

    async def rotate_keys(self, *, batch: int = ROTATE_BATCH) -> int:
        """Re-encrypt every concern under the cipher's primary key (as
        :meth:`signaling.records.Records.rotate_keys`); returns how many."""
        return await rotate_column(
            self.db, self._cipher, alerts, alerts.c.id, alerts.c.concern, batch
        )
