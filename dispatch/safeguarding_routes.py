"""Safeguarding alerts over HTTP (PROTOCOL.md §10); the store is
:mod:`care.safeguarding`.

* ``POST /v1/sessions/{id}/safeguarding`` (the session's therapist; any other
  therapist: 404, as if the session did not exist): ``{"concern"}`` (1..4000
  characters, not blank): 201 ``{"alert": A}``. Every operator connected to
  any server gets ``safeguarding.alert`` at once (through the bus), and the
  safeguarding address (``DISPATCH_SAFEGUARDING_EMAIL``) an email, once per
  alert; neither carries the concern.
* ``POST /v1/safeguarding/{id}/ack`` (an operator): 200 ``{"alert": A}`` with
  ``acked_by`` and ``acked_at``; acknowledged before, the first
  acknowledgement, unchanged. Every operator gets ``safeguarding.acked``.
* ``GET /v1/safeguarding?open=true|false`` (an operator): ``{"alerts": [A]}``,
  the open ones first, newest first, at most 200; never the concern.
* ``GET /v1/safeguarding/{id}`` (an operator): ``{"alert": A}`` with
  ``concern``, decrypted (logged with ids only; written to the audit
  trail, the client its subject, before it is answered).

The concern is never logged, nor is any body here.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from care.audit import Record
from care.safeguarding import CONCERN_MAX, Alert, Safeguarding, acked_frame, alert_email
from care.safeguarding import alert_frame as new_alert_frame
from core.errors import BadInput, DispatchError, InvalidField, NotFound
from core.identity import Role
from core.logs import get_logger
from core.validation import parse_json_body, validate_id
from dispatch.context import AppContext
from dispatch.privacy_routes import audited
from dispatch.routes import ctx_of, signed_in
from pool.effects import Effect

__all__ = ["ROUTES", "parse_concern"]

log = get_logger(component="safeguarding")


def _store(ctx: AppContext) -> Safeguarding:
    if ctx.safeguarding is None:  # pragma: no cover - build_context always sets it
        raise NotFound("safeguarding is not set up on this server")
    return ctx.safeguarding


def parse_concern(body: Any) -> str:
    """The body of ``POST /v1/sessions/{id}/safeguarding``: ``concern``,
    1..4000 characters, not blank, without NUL."""
    if not isinstance(body, dict):
        raise BadInput("request body must be a JSON object")
    value = body.get("concern")
    if value is None:
        raise InvalidField("concern is required", field="concern")
    if type(value) is not str or not 1 <= len(value) <= CONCERN_MAX or "\x00" in value:
        raise InvalidField(
            f"concern must be a string of 1..{CONCERN_MAX} characters without NUL",
            field="concern",
        )
    if not value.strip():
        raise InvalidField("concern must not be blank", field="concern")
    return value


async def _tell_operators(ctx: AppContext, frame: dict[str, Any]) -> None:
    """``frame`` to every operator connected to any server (the bus); the
    alert is stored whatever becomes of this."""
    try:
        await ctx.bus.publish([Effect("operators", frame=frame)])
    except DispatchError as exc:
        log.warning("safeguarding.not_broadcast", frame=frame.get("type"), code=exc.code)


async def _email(ctx: AppContext, alert: Alert) -> None:
    """The email to the safeguarding address, queued once per alert; none
    when emails are off or no address is set. A failure to queue is logged
    and never fails the alert."""
    public_url = ctx.settings.public_url
    if ctx.mail is None or ctx.settings.safeguarding_email is None or public_url is None:
        return
    try:
        async with ctx.db.writing() as conn:
            await ctx.outbox.queue(conn, [alert_email(alert, public_url)], ctx.clock())
    except DispatchError as exc:
        log.warning("safeguarding.email_not_queued", alert_id=alert.id, code=exc.code)


async def raise_concern(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.THERAPIST)
    sid = validate_id(request.path_params["session_id"], "session_id")
    concern = parse_concern(parse_json_body(await request.body()))
    rec = await ctx.signaling.records.get_session(sid)
    if rec is None or rec.therapist_id != user.id:
        raise NotFound("no such session", session_id=sid)
    alert = await _store(ctx).raise_alert(
        rec.id, rec.therapist_id, rec.client_id, concern, ctx.clock()
    )
    log.warning(
        "safeguarding.raised",
        alert_id=alert.id,
        session_id=alert.session_id,
        user_id=user.id,
    )
    await _tell_operators(ctx, new_alert_frame(alert))
    await _email(ctx, alert)
    return JSONResponse({"alert": alert.public()}, status_code=201)


async def ack_alert(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.OPERATOR)
    aid = validate_id(request.path_params["alert_id"], "alert_id")
    alert, changed = await _store(ctx).ack(aid, user.id, ctx.clock())
    if changed:
        log.info("safeguarding.acked", alert_id=alert.id, user_id=user.id)
        await _tell_operators(ctx, acked_frame(alert))
    return JSONResponse({"alert": alert.public()})


def _open_param(request: HttpRequest) -> bool | None:
    raw = request.query_params.get("open")
    if raw is None:
        return None
    if raw not in ("true", "false"):
        raise InvalidField("open must be true or false", field="open")
    return raw == "true"


async def list_alerts(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    signed_in(request, Role.OPERATOR)
    alerts = await _store(ctx).list(open_=_open_param(request))
    return JSONResponse({"alerts": [a.public() for a in alerts]})


async def get_alert(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.OPERATOR)
    aid = validate_id(request.path_params["alert_id"], "alert_id")
    alert = await _store(ctx).get(aid)
    await audited(ctx, user, Record.SAFEGUARDING, alert.client_id, alert.id)
    alert, concern = await _store(ctx).concern(aid)
    log.info("safeguarding.read", alert_id=alert.id, session_id=alert.session_id, user_id=user.id)
    return JSONResponse({"alert": {**alert.public(), "concern": concern}})


ROUTES = [
    Route("/v1/sessions/{session_id}/safeguarding", raise_concern, methods=["POST"]),
    Route("/v1/safeguarding", list_alerts, methods=["GET"]),
    Route("/v1/safeguarding/{alert_id}", get_alert, methods=["GET"]),
    Route("/v1/safeguarding/{alert_id}/ack", ack_alert, methods=["POST"]),
]
