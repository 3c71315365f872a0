"""Session feedback over HTTP (PROTOCOL.md §10); the rules are
:mod:`care.feedback`'s.

* ``POST /v1/sessions/{id}/feedback`` (the session's client): body
  ``{"rating": 1..5, "comment"?: "..." (at most 2000 characters)}``; 201
  ``{"feedback": F}``. Once: again, 409 ``conflict``. Before the session
  ended, 422 ``too_early``; a session that never went live, 409
  ``conflict``; more than 7 days after its end, 409 ``too_late``.
* ``GET /v1/sessions/{id}/feedback`` (its client, an operator; an
  addition): 200 ``{"feedback": F | null}``, so the client's end screen
  knows whether it was given.
* ``GET /v1/therapists/{id}/feedback?limit=`` (that therapist, operators;
  anyone else 403): ``{"count", "average" (null when none, else 2
  decimals), "items": [F, ...]}``, newest first, at most ``limit`` (1..200,
  default 50) items; count and average are over all of it.

F is ``{"rating", "comment" (null: none), "created_at"}``, plus
``session_id``, ``therapist_id`` and ``client_id`` for the client itself
and operators; the therapist sees neither the session nor the client.
A session that is not the caller's is answered 404, as if it did not exist.
Comments are encrypted at rest and never logged.
"""

from __future__ import annotations

from typing import Final

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from care.feedback import FeedbackStore, parse_feedback
from core.errors import Forbidden, InvalidField, NotFound
from core.identity import Role
from core.logs import get_logger
from core.validation import parse_json_body, validate_id
from dispatch.context import AppContext
from dispatch.routes import ctx_of, signed_in
from signaling.records import SessionRecord

__all__ = ["ROUTES"]

log = get_logger(component="feedback")

_DEFAULT_LIMIT: Final = 50
_MAX_LIMIT: Final = 200


def _store(ctx: AppContext) -> FeedbackStore:
    store = ctx.feedback
    assert store is not None, "build_context sets the feedback store"
    return store


async def _own_session(request: HttpRequest, client_id: str | None) -> SessionRecord:
    """The path's session; 404 unless it exists and (``client_id`` given) is
    that client's."""
    sid = validate_id(request.path_params["session_id"], "session id")
    rec = await ctx_of(request).signaling.records.get_session(sid)
    if rec is None or (client_id is not None and rec.client_id != client_id):
        raise NotFound("no such session")
    return rec


async def give_feedback(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.CLIENT)
    rec = await _own_session(request, user.id)
    rating, comment = parse_feedback(parse_json_body(await request.body()))
    given = await _store(ctx).add(rec, rating, comment, ctx.clock())
    # The rating and whether there is a comment, never the comment.
    log.info(
        "feedback.given",
        session_id=rec.id,
        therapist_id=rec.therapist_id,
        rating=rating,
        has_comment=comment is not None,
    )
    return JSONResponse({"feedback": given.public(full=True)}, status_code=201)


async def session_feedback(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.CLIENT, Role.OPERATOR)
    rec = await _own_session(request, user.id if user.role is Role.CLIENT else None)
    given = await _store(ctx).get(rec.id)
    return JSONResponse({"feedback": None if given is None else given.public(full=True)})


def _limit(request: HttpRequest) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return _DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= _MAX_LIMIT:
        raise InvalidField(f"limit must be an integer from 1 to {_MAX_LIMIT}", field="limit")
    return int(raw)


async def therapist_feedback(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request)
    tid = validate_id(request.path_params["therapist_id"], "therapist id")
    operator = user.role is Role.OPERATOR
    if not operator and not (user.role is Role.THERAPIST and user.id == tid):
        raise Forbidden("only the therapist itself and operators see its feedback")
    summary = await _store(ctx).of_therapist(tid, limit=_limit(request))
    return JSONResponse(
        {
            "count": summary.count,
            "average": summary.average,
            "items": [f.public(full=operator) for f in summary.items],
        }
    )


ROUTES = [
    Route("/v1/sessions/{session_id}/feedback", give_feedback, methods=["POST"]),
    Route("/v1/sessions/{session_id}/feedback", session_feedback, methods=["GET"]),
    Route("/v1/therapists/{therapist_id}/feedback", therapist_feedback, methods=["GET"]),
]
