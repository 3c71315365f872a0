"""Referral codes over HTTP (PROTOCOL.md §10); the rules are :mod:`care.referral`'s.

* ``GET /v1/me/referral`` (therapist): 200 ``{"code", "link"}``, its own code
  (made on the first ask) and the link to share: ``/r/<code>``, absolute when
  ``DISPATCH_PUBLIC_URL`` is set. That page keeps the code in the browser and
  sends the person to ``/talk``, which links it once signed in.
* ``POST /v1/me/referral`` (client): body ``{"code"}``; 200 ``{"therapist_id",
  "linked_at", "therapist_name"}`` (the name an addition, null when the
  therapist has no profile). Once: the same therapist's code again answers
  the first link; another therapist's code, 409 ``conflict``; a code nobody
  has, 404; a code of the wrong shape, 422 ``invalid_field``.

What a link gives: the referring therapist's head start on the client's
quick-connect requests (``DISPATCH_REFERRAL_HEAD_START_S``, see
:meth:`dispatch.service.Dispatcher.create_request`) and booking it while it
is not accepting new clients (:mod:`dispatch.booking_routes`). Codes are
never logged; ids are.
"""

from __future__ import annotations

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from care.referral import Referrals, parse_code
from core.identity import Role
from core.logs import get_logger
from core.validation import parse_json_body
from dispatch.context import AppContext
from dispatch.routes import ctx_of, signed_in

__all__ = ["ROUTES", "share_link"]

log = get_logger(component="referral")


def _referrals(ctx: AppContext) -> Referrals:
    referrals = ctx.referrals
    assert referrals is not None, "build_context sets the referrals"
    return referrals


def share_link(public_url: str | None, code: str) -> str:
    """The page a client opens to use ``code``."""
    path = f"/r/{code}"
    return f"{public_url.rstrip('/')}{path}" if public_url else path


async def my_code(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.THERAPIST)
    code = await _referrals(ctx).code_of(user.id, ctx.clock())
    return JSONResponse({"code": code, "link": share_link(ctx.settings.public_url, code)})


async def use_code(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.CLIENT)
    code = parse_code(parse_json_body(await request.body()))
    link = await _referrals(ctx).link(user.id, code, ctx.clock())
    profile = await ctx.store.get_profile(link.therapist_id)
    log.info("referral.linked", user_id=user.id, therapist_id=link.therapist_id)
    return JSONResponse(
        {**link.public(), "therapist_name": profile.name if profile is not None else None}
    )


ROUTES = [
    Route("/v1/me/referral", my_code, methods=["GET"]),
    Route("/v1/me/referral", use_code, methods=["POST"]),
]
