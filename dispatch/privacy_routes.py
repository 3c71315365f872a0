"""Audit, export and erasure over HTTP (PROTOCOL.md §10); the stores are
:mod:`care.audit`, :mod:`care.export` and :mod:`care.erasure`.

* ``GET /v1/audit?subject=<id>[&after=<entry id>][&limit=1..500]`` (an
  operator; anyone else 403): ``{"entries": [E, ...], "next": <entry id> |
  null}``, oldest first; ``next`` is the ``after`` of the next page (null:
  no more). E is ``{"id", "actor_id", "actor_role", "record", "subject_id",
  "about_id", "at"}``.
* ``GET /v1/me/export`` (any signed-in user): everything held about the
  caller, decrypted, as one JSON document, ``Content-Disposition:
  attachment; filename="dispatch-export-<id>.json"``; written to the audit
  trail (``export``, the caller its subject) before it is answered. A
  client's holds its sessions with their chat, its waiting request, its
  bookings, ledger, forms, consents, feedback, referral link and who read
  its records; never a therapist's notes nor a safeguarding concern. A
  therapist's holds its profile and contact settings, its sessions with its
  notes (each session's notes read this way is audited for its client),
  availability, bookings, ledger, withdrawals, feedback received and
  referral code. An operator's: its actions in the audit trail.
* ``POST /v1/users/{id}/erase`` (an operator): erases a client
  (:mod:`care.erasure`): 200 ``{"user_id", "erased": {counts}, "erased_at",
  "erased_by"}``. Idempotent: again, 200 with the first erasure's time and
  operator (whatever the id gained since is erased too and counted). An id
  that is a therapist's or an operator's: 422 ``invalid_field``. A client in
  an open call: 409 ``conflict`` (erase after the call). A waiting request is
  cancelled first. An id the service never saw: 200, every count 0.

:func:`audited` writes one audit entry before a record is answered; the call
log (transcripts, notes) and safeguarding reads use it. Nothing here logs
content: ids only.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import exists, or_, select
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from care.audit import LIST_MAX, AuditTrail, Record
from care.erasure import Erasures
from care.export import CareExport
from care.tables import audit_log
from core.clock import rfc3339
from core.errors import Conflict, InvalidField, NotFound
from core.identity import Role, User
from core.logs import get_logger
from core.validation import validate_id
from dispatch.context import AppContext
from dispatch.routes import ctx_of, signed_in
from notify.tables import contacts as contacts_table
from pool.model import State
from schedule.tables import availability as availability_table
from signaling.records import SessionRecord
from signaling.tables import sessions as sessions_table

__all__ = ["ROUTES", "audited"]

log = get_logger(component="privacy")

#: Bookings of an export: from the epoch to this (2100-01-01), i.e. all.
_ALL_TIME_END: Final = 4102444800.0


def _audit(ctx: AppContext) -> AuditTrail:
    if ctx.audit is None:  # pragma: no cover - build_context always sets it
        raise NotFound("the audit trail is not set up on this server")
    return ctx.audit


def _erasures(ctx: AppContext) -> Erasures:
    if ctx.erasures is None:  # pragma: no cover - build_context always sets it
        raise NotFound("erasure is not set up on this server")
    return ctx.erasures


def _export(ctx: AppContext) -> CareExport:
    if ctx.care_export is None:  # pragma: no cover - build_context always sets it
        raise NotFound("export is not set up on this server")
    return ctx.care_export


async def audited(
    ctx: AppContext, user: User, record: Record, subject_id: str, about_id: str | None
) -> None:
    """Write ``user``'s read of ``record`` about ``subject_id`` to the trail;
    raises (and so refuses the read) when it cannot be written."""
    await _audit(ctx).record(user, record, subject_id, about_id, ctx.clock())


def _time(ts: float | None) -> str | None:
    return None if ts is None else rfc3339(ts)


# -- the audit trail -------------------------------------------------------------------


def _int_param(request: HttpRequest, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise InvalidField(f"{name} must be an integer from {lo} to {hi}", field=name)
    return int(raw)


async def get_audit(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    signed_in(request, Role.OPERATOR)
    raw = request.query_params.get("subject")
    if raw is None:
        raise InvalidField("subject is required", field="subject")
    try:
        subject = validate_id(raw, "subject")
    except InvalidField as exc:
        raise InvalidField(exc.message, field="subject") from None
    after = _int_param(request, "after", 0, 0, 2**62)
    limit = _int_param(request, "limit", LIST_MAX, 1, LIST_MAX)
    entries = await _audit(ctx).of_subject(subject, after=after, limit=limit)
    nxt = entries[-1].id if len(entries) == limit else None
    return JSONResponse({"entries": [e.public() for e in entries], "next": nxt})


# -- export ----------------------------------------------------------------------------


def _session(rec: SessionRecord, viewer: Role) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": rec.id,
        "request_id": None if rec.booking_id else rec.request_id,
        "booking_id": rec.booking_id,
        "client_id": rec.client_id,
        "therapist_id": rec.therapist_id,
        "state": rec.state,
        "requested_at": _time(rec.requested_at),
        "matched_at": _time(rec.matched_at),
        "started_at": _time(rec.started_at),
        "ended_at": _time(rec.ended_at),
        "end_reason": rec.end_reason,
        "duration_s": rec.duration_s or 0,
    }
    if viewer is Role.CLIENT:
        item |= {"client_name": rec.client_name, "therapist_name": rec.therapist_name}
    else:
        item["therapist_name"] = rec.therapist_name
    return item


async def _bookings_of(ctx: AppContext, user: User) -> list[dict[str, Any]]:
    found = await ctx.bookings.list_for(user.id, user.role.value, 0.0, _ALL_TIME_END)
    return [b.to_wire() for b in found]


async def _client_export(ctx: AppContext, user: User) -> dict[str, Any]:
    records = ctx.signaling.records
    sessions = []
    for rec in await records.sessions_of(user.id):
        if rec.client_id != user.id:
            continue
        item = _session(rec, Role.CLIENT)
        item["chat"] = [
            {"id": m.id, "from": m.sender_id, "text": m.text, "sent_at": rfc3339(m.sent_at)}
            for m in await records.transcript(rec.id)
        ]
        sessions.append(item)
    req = await ctx.store.active_request_of(user.id)
    return {
        "user": {
            "id": user.id,
            "role": user.role.value,
            "name": user.name,
            "email": await ctx.client_contacts.email(user.id),
        },
        "request": None if req is None else req.public(),
        "sessions": sessions,
        "bookings": await _bookings_of(ctx, user),
        "ledger": await ctx.ledger.transactions(user.id, user.role),
        **await _export(ctx).client(user.id),
    }


async def _therapist_export(ctx: AppContext, user: User) -> dict[str, Any]:
    records = ctx.signaling.records
    sessions = []
    for rec in await records.sessions_of(user.id):
        if rec.therapist_id != user.id:
            continue
        item = _session(rec, Role.THERAPIST)
        notes = await records.notes(rec.id)
        if notes:
            # Its own notes, but about a client: the client's trail shows it.
            await audited(ctx, user, Record.NOTES, rec.client_id, rec.id)
        item["notes"] = [n.public() for n in notes]
        sessions.append(item)
    profile = await ctx.store.get_profile(user.id)
    availability = await ctx.bookings.get_availability(user.id)
    withdrawals = await ctx.ledger.withdrawals(therapist_id=user.id)
    return {
        "user": {"id": user.id, "role": user.role.value, "name": user.name},
        "profile": None if profile is None else profile.public(),
        "contact": (await ctx.contacts.get(user.id)).private(),
        "sessions": sessions,
        "availability": None if availability is None else availability.to_wire(),
        "bookings": await _bookings_of(ctx, user),
        "ledger": await ctx.ledger.transactions(user.id, user.role),
        "withdrawals": [w.public() for w in withdrawals],
        **await _export(ctx).therapist(user.id),
    }


async def _operator_export(ctx: AppContext, user: User) -> dict[str, Any]:
    return {
        "user": {"id": user.id, "role": user.role.value, "name": user.name},
        **await _export(ctx).operator(user.id),
    }


async def get_export(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request)
    now = ctx.clock()
    await audited(ctx, user, Record.EXPORT, user.id, None)
    if user.role is Role.CLIENT:
        body = await _client_export(ctx, user)
    elif user.role is Role.THERAPIST:
        body = await _therapist_export(ctx, user)
    else:
        body = await _operator_export(ctx, user)
    log.info("export.made", user_id=user.id, role=user.role.value)
    document = {"format": "dispatch-export", "version": 1, "exported_at": rfc3339(now), **body}
    return JSONResponse(
        document,
        headers={
            "Content-Disposition": f'attachment; filename="dispatch-export-{user.id}.json"',
            "Cache-Control": "no-store",
        },
    )


# -- erasure ---------------------------------------------------------------------------


async def _not_a_client(ctx: AppContext, user_id: str) -> bool:
    """Whether ``user_id`` is known as a therapist or an operator: a profile,
    contact details, hours, a session as its therapist, an audit entry as
    one."""
    if await ctx.store.get_profile(user_id) is not None:
        return True
    staff = select(
        or_(
            exists().where(sessions_table.c.therapist_id == user_id),
            exists().where(contacts_table.c.therapist_id == user_id),
            exists().where(availability_table.c.therapist_id == user_id),
            exists().where(
                audit_log.c.actor_id == user_id,
                audit_log.c.actor_role != Role.CLIENT.value,
            ),
        )
    )
    async with ctx.db.reading() as conn:
        return bool((await conn.execute(staff)).scalar())


async def erase_user(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.OPERATOR)
    uid = validate_id(request.path_params["user_id"], "user id")
    if await _not_a_client(ctx, uid):
        raise InvalidField(
            "only a client can be erased; this id is a therapist's or an operator's", field="id"
        )
    if await ctx.store.open_session_of(uid) is not None:
        raise Conflict("the client is in a call; erase it once the call has ended")
    cancelled = False
    req = await ctx.store.active_request_of(uid)
    if req is not None and req.state in (State.WAITING, State.CLAIMED):
        # Its request notes live in the pool: cancel it, as the client would.
        await ctx.dispatcher.cancel(User(uid, Role.CLIENT), req.id)
        cancelled = True
    erasure = await _erasures(ctx).erase(user, uid, ctx.clock(), request_cancelled=cancelled)
    return JSONResponse(erasure.public())


ROUTES = [
    Route("/v1/audit", get_audit, methods=["GET"]),
    Route("/v1/me/export", get_export, methods=["GET"]),
    Route("/v1/users/{user_id}/erase", erase_user, methods=["POST"]),
]
