"""A client's own contact details (an extension of PROTOCOL.md §7/§8): the
email address its booking emails go to (confirmation, cancellation,
reminder; :mod:`dispatch.booking_mail`).

* ``GET /v1/me/contact`` (a client): ``{"email": "..." | null}``.
* ``PATCH /v1/me/contact`` (a client): ``{"email": "..." | null}`` sets or
  (null) removes it; 200 with the result. The address is checked as a
  therapist's is (:func:`dispatch.validation.parse_email`): 422
  ``invalid_field`` with ``field`` ``email``.

Any other role: 403. The address is stored by :mod:`notify.contacts`, shown
only to its client, and never logged (nor is any body here).
"""

from __future__ import annotations

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.identity import Role
from core.logs import get_logger
from core.validation import parse_json_body
from dispatch import validation
from dispatch.routes import ctx_of, signed_in

__all__ = ["ROUTES"]

log = get_logger(component="contact")


async def get_contact(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.CLIENT)
    return JSONResponse({"email": await ctx.client_contacts.email(user.id)})


async def patch_contact(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.CLIENT)
    email = validation.parse_client_contact(parse_json_body(await request.body()))
    stored = await ctx.client_contacts.set_email(user.id, email, ctx.clock())
    # Whether there is one, never what it is.
    log.info("client_contact.saved", user_id=user.id, address_set=stored is not None)
    return JSONResponse({"email": stored})


ROUTES = [
    Route("/v1/me/contact", get_contact, methods=["GET"]),
    Route("/v1/me/contact", patch_contact, methods=["PATCH"]),
]
