"""HTTP calls about texts (PROTOCOL.md §7): Twilio's status callback and the
operator's list of the texts sent about a request.

``POST /v1/twilio/status`` comes from Twilio, not from a signed-in user: it is
believed only with a valid ``X-Twilio-Signature`` (Twilio's scheme: HMAC-SHA1
with the auth token over ``<DISPATCH_PUBLIC_URL>/v1/twilio/status`` and the
sorted form), checked with twilio-python's ``RequestValidator``; a wrong or
missing one is 403. The form is read with :func:`urllib.parse.parse_qsl`
(Twilio posts ``application/x-www-form-urlencoded``), at most 64 KiB. A status
is applied idempotently (:meth:`notify.outbox.Outbox.status`).
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import parse_qsl

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from core.clock import rfc3339
from core.errors import BadInput, Forbidden, InvalidField, NotFound
from core.identity import Role
from core.validation import BODY_LIMIT, validate_id
from dispatch.routes import ctx_of, signed_in
from notify.outbox import Message

STATUS_PATH: Final = "/v1/twilio/status"
#: Outbox states as the contract names a text's state (``sending`` is still
#: queued to the outside world).
_STATE: Final = {"sending": "queued"}


def _text(m: Message) -> dict[str, Any]:
    return {
        "id": m.id,
        "request_id": m.about_id,
        "therapist_id": m.recipient_id,
        "state": _STATE.get(m.state, m.state),
        "sid": m.provider_id,
        "created_at": rfc3339(m.created_at),
    }


async def twilio_status(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    s = ctx.settings
    if not s.texting or s.public_url is None or s.twilio_auth_token is None:
        raise NotFound("texting is not configured here")
    raw = await request.body()
    if len(raw) > BODY_LIMIT:
        raise BadInput(f"request body is over the limit of {BODY_LIMIT} bytes")
    try:
        form = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
    except (UnicodeDecodeError, ValueError):
        raise BadInput("the body must be a URL-encoded form") from None
    url = s.public_url.rstrip("/") + STATUS_PATH
    signature = request.headers.get("x-twilio-signature", "")
    if not signature or not RequestValidator(s.twilio_auth_token).validate(url, form, signature):
        raise Forbidden("the Twilio signature does not match")
    sid, status = form.get("MessageSid", ""), form.get("MessageStatus", "")
    if not sid or not status:
        raise InvalidField("MessageSid and MessageStatus are required", field="MessageSid")
    await ctx.outbox.status(sid, status, ctx.clock())
    return Response(status_code=204)


async def list_texts(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    signed_in(request, Role.OPERATOR)
    raw = request.query_params.get("request_id")
    if raw is None:
        raise InvalidField("request_id is required", field="request_id")
    request_id = validate_id(raw, "request_id")
    # A text dropped before it went out (its request was taken) was never a text.
    texts = [_text(m) for m in await ctx.outbox.about(request_id) if m.channel == "sms"]
    return JSONResponse({"texts": [t for t in texts if t["state"] != "dropped"]})


ROUTES = [
    Route(STATUS_PATH, twilio_status, methods=["POST"]),
    Route("/v1/texts", list_texts, methods=["GET"]),
]
