"""The call log over HTTP (PROTOCOL.md §5, "Records of past sessions").

A user sees only what is theirs: the session list is the caller's own; a
transcript is for the session's two participants and operators; notes are
for the session's therapist alone. A session that is not the caller's is
answered 404, as if it did not exist, so ids reveal nothing. Every read of
a transcript or of notes, by anyone, is written to the audit trail first
(PROTOCOL.md §10: the session's client its subject).

``GET /v1/notes/due`` (PROTOCOL.md §8; therapist: its own, operator: all,
``?therapist_id=`` to narrow): sessions that went live and ended in the last
30 days, quick or booked, with no note yet, the most overdue first, each
with ``due_at`` = its end + 24 h and ``overdue``; at most ``?limit=`` (1..200,
default 50).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from sqlalchemy import exists, select
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from care.audit import Record
from core.clock import rfc3339
from core.errors import InvalidField, NotFound
from core.identity import Role
from core.validation import parse_json_body, validate_id
from dispatch.privacy_routes import audited
from dispatch.routes import ctx_of, signed_in
from dispatch.validation import parse_note
from signaling.records import SessionRecord
from signaling.tables import notes as notes_table
from signaling.tables import sessions as sessions_table
from wallet.ledger import client_account, therapist_account

_DEFAULT_LIMIT = 50
_MAX_LIMIT = 200
#: A therapist's notes are due this long after a session's end (PROTOCOL.md §8).
NOTES_DUE_S: Final = 24 * 3600.0
#: How far back ``GET /v1/notes/due`` looks for sessions still without a note.
NOTES_DUE_LOOKBACK_S: Final = 30 * 86400.0


def _time(ts: float | None) -> str | None:
    return rfc3339(ts) if ts is not None else None


def _entry(rec: SessionRecord, viewer: str, amounts: dict[str, int]) -> dict[str, Any]:
    """S plus ``duration_s``, the other side's ``name`` and ``amount_minor``."""
    other = rec.therapist_name if viewer == rec.client_id else rec.client_name
    return {
        "amount_minor": _amount(rec, amounts),
        "id": rec.id,
        # As the live S: a booked call has no request, and names its booking.
        "request_id": None if rec.booking_id else rec.request_id,
        "booking_id": rec.booking_id,
        "client_id": rec.client_id,
        "therapist_id": rec.therapist_id,
        "state": rec.state,
        "ice_servers": [],
        "started_at": _time(rec.started_at),
        "ended_at": _time(rec.ended_at),
        "end_reason": rec.end_reason,
        "duration_s": rec.duration_s or 0,
        "name": other,
        "matched_at": _time(rec.matched_at),
    }


def _amount(rec: SessionRecord, amounts: dict[str, int]) -> int | None:
    """What the session cost the client, or earned the therapist: ``None``
    while it is open or its charge is still being written; ``0`` when it
    ended without going live (nothing to bill)."""
    if rec.id in amounts:
        return amounts[rec.id]
    if rec.state == "ended" and not rec.duration_s:
        return 0
    return None


def _limit(request: HttpRequest) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return _DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= _MAX_LIMIT:
        raise InvalidField(f"limit must be an integer from 1 to {_MAX_LIMIT}", field="limit")
    return int(raw)


async def list_sessions(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.CLIENT, Role.THERAPIST)
    limit = _limit(request)
    records = await ctx.signaling.records.sessions_of(user.id, limit=limit)
    account = client_account(user.id) if user.role is Role.CLIENT else therapist_account(user.id)
    amounts = await ctx.ledger.session_amounts(account, [r.id for r in records])
    return JSONResponse({"sessions": [_entry(r, user.id, amounts) for r in records]})


async def _record(request: HttpRequest) -> SessionRecord:
    sid = validate_id(request.path_params["session_id"], "session id")
    rec = await ctx_of(request).signaling.records.get_session(sid)
    if rec is None:
        raise NotFound("no such session")
    return rec


async def transcript(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request)
    rec = await _record(request)
    if user.role is not Role.OPERATOR and user.id not in (rec.client_id, rec.therapist_id):
        raise NotFound("no such session")
    # Every reader, the client too, is on the client's trail (PROTOCOL.md §10).
    await audited(ctx, user, Record.TRANSCRIPT, rec.client_id, rec.id)
    messages = await ctx.signaling.records.transcript(rec.id)
    return JSONResponse({"messages": [m.frame() for m in messages]})


async def notes(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.THERAPIST)
    rec = await _record(request)
    if user.id != rec.therapist_id:
        raise NotFound("no such session")
    await audited(ctx, user, Record.NOTES, rec.client_id, rec.id)
    saved = await ctx.signaling.records.notes(rec.id)
    return JSONResponse({"notes": [n.public() for n in saved]})


async def add_note(request: HttpRequest) -> Response:
    """**Extension**: a note added by the session's therapist, during the call
    or after it (the websocket's ``note.save`` needs the session open)."""
    ctx = ctx_of(request)
    user = signed_in(request, Role.THERAPIST)
    rec = await _record(request)
    if user.id != rec.therapist_id:
        raise NotFound("no such session")
    text = parse_note(parse_json_body(await request.body()))
    note = await ctx.signaling.records.add_note(rec.id, user.id, text, ctx.clock())
    return JSONResponse({"note": note.public()}, status_code=201)


async def notes_due(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.THERAPIST, Role.OPERATOR)
    limit = _limit(request)
    therapist_id: str | None = user.id
    if user.role is Role.OPERATOR:
        raw = request.query_params.get("therapist_id")
        therapist_id = None if raw is None else validate_id(raw, "therapist_id")
    now = ctx.clock()
    s = sessions_table.c
    noted = exists().where(notes_table.c.session_id == s.id)
    stmt = (
        select(s.id, s.client_id, s.therapist_id, s.booking_id, s.ended_at)
        .where(
            s.state == "ended",
            s.started_at.is_not(None),
            s.ended_at >= dt.datetime.fromtimestamp(now - NOTES_DUE_LOOKBACK_S, tz=dt.UTC),
            ~noted,
        )
        .order_by(s.ended_at, s.id)
        .limit(limit)
    )
    if therapist_id is not None:
        stmt = stmt.where(s.therapist_id == therapist_id)
    async with ctx.db.reading() as conn:
        rows = (await conn.execute(stmt)).mappings().all()
    due = []
    for row in rows:
        ended = row["ended_at"].timestamp()
        due.append(
            {
                "session_id": row["id"],
                "client_id": row["client_id"],
                "therapist_id": row["therapist_id"],
                "booking_id": row["booking_id"],
                "ended_at": rfc3339(ended),
                "due_at": rfc3339(ended + NOTES_DUE_S),
                "overdue": now > ended + NOTES_DUE_S,
            }
        )
    return JSONResponse({"notes_due": due})


ROUTES = [
    Route("/v1/sessions", list_sessions, methods=["GET"]),
    Route("/v1/sessions/{session_id}/transcript", transcript, methods=["GET"]),
    Route("/v1/sessions/{session_id}/notes", notes, methods=["GET"]),
    Route("/v1/sessions/{session_id}/notes", add_note, methods=["POST"]),
    Route("/v1/notes/due", notes_due, methods=["GET"]),
]
