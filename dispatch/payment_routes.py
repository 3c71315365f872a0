"""HTTP calls of paying in (PROTOCOL.md §9); the domain is :mod:`wallet.cards`.

* ``POST /v1/wallet/checkout`` (client): body ``amount_minor`` (within
  ``DISPATCH_TOPUP_MIN_MINOR``..``DISPATCH_TOPUP_MAX_MINOR``, else 422
  ``invalid_field``); 201 ``{"checkout_id", "url"}``; 503 ``payments_off``
  when paying in is off.
* ``GET /v1/wallet/checkout/{id}`` (that client; an addition to the
  protocol): ``{"checkout_id", "amount_minor", "currency", "state"}``, so the
  page the payer comes back to can say the money arrived; 404 for anyone
  else's.
* ``POST /v1/stripe/webhook`` (Stripe, no token): checked by its
  ``Stripe-Signature``; 400 when wrong or unreadable, 200 otherwise (a paid
  checkout is credited once, whatever Stripe retries).
* ``GET /dev/checkout/{id}`` and ``POST /dev/checkout/{id}/pay`` (test mode
  only: ``--dev`` without Stripe; 404 otherwise): the server's own test
  payment page, and its "Pay" (the client's token), which credits through the
  same step as a webhook and answers where to go next.

The payer comes back to ``DISPATCH_PUBLIC_URL``, or else to the address this
request came in on.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.errors import BadInput, NotFound, PaymentsOff, TooLarge
from core.identity import Role
from core.logs import get_logger
from core.validation import parse_json_body
from dispatch.context import AppContext
from dispatch.pages import html_page
from dispatch.routes import ctx_of, signed_in
from dispatch.settings import Settings, env_name
from wallet.cards import Mode, Payments, StripeKeys, return_urls
from wallet.checkouts import Credit
from wallet.ledger import Ledger

__all__ = ["ROUTES", "payments_of"]

log = get_logger(component="payments")

WEBHOOK_PATH: Final = "/v1/stripe/webhook"
#: Stripe's checkout events are a few KiB; anything far larger is not one.
WEBHOOK_BODY_LIMIT: Final = 256 * 1024


def payments_of(settings: Settings, ledger: Ledger) -> Payments:
    """The deployment's way of paying in, from its settings (said once in the log)."""
    mode = Mode(settings.payments)
    keys = None
    if mode is Mode.CARD:
        assert settings.stripe_secret_key and settings.stripe_webhook_secret
        keys = StripeKeys(
            settings.stripe_secret_key, settings.stripe_webhook_secret, settings.stripe_api_url
        )
    elif mode is Mode.TEST:
        log.warning("payments.test", hint="--dev without Stripe: top-ups move no money")
    else:
        log.info(
            "payments.off",
            hint=f"set {env_name('stripe_secret_key')} and "
            f"{env_name('stripe_webhook_secret')} to take card top-ups",
        )
    return Payments(
        ledger,
        mode,
        keys=keys,
        min_minor=settings.topup_min_minor,
        max_minor=settings.topup_max_minor,
    )


def _base_url(ctx: AppContext, request: HttpRequest) -> str:
    return (ctx.settings.public_url or str(request.base_url)).rstrip("/")


async def _after_credit(ctx: AppContext, credit: Credit | None) -> None:
    if credit is not None and not credit.replayed:
        # A top-up during a call moves its end: the money now lasts longer.
        await ctx.metering.replan(credit.checkout.client_id)


async def post_checkout(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.CLIENT)
    if ctx.payments.mode is Mode.OFF:
        raise PaymentsOff()
    body = parse_json_body(await request.body())
    if not isinstance(body, dict):
        raise BadInput("request body must be a JSON object")
    started = await ctx.payments.start(
        user.id, body.get("amount_minor"), _base_url(ctx, request), ctx.clock()
    )
    return JSONResponse({"checkout_id": started.checkout.id, "url": started.url}, status_code=201)


async def get_checkout(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.CLIENT)
    checkout = await ctx.payments.checkout_of(request.path_params["checkout_id"], user.id)
    return JSONResponse(checkout.public())


async def stripe_webhook(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    payload = await _read_capped(request, WEBHOOK_BODY_LIMIT)
    credit = await ctx.payments.webhook(
        payload, request.headers.get("stripe-signature"), ctx.clock()
    )
    await _after_credit(ctx, credit)
    return JSONResponse({"received": True})


def _test_mode(ctx: AppContext) -> None:
    if ctx.payments.mode is not Mode.TEST:
        raise NotFound("not found")


async def dev_checkout_page(request: HttpRequest) -> Response:
    """The test payment page; it reads its checkout with the client's token."""
    _test_mode(ctx_of(request))
    return html_page("checkout.html")


async def dev_checkout_pay(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    _test_mode(ctx)
    user = signed_in(request, Role.CLIENT)
    credit = await ctx.payments.pay_test(request.path_params["checkout_id"], user.id, ctx.clock())
    await _after_credit(ctx, credit)
    success_url, _ = return_urls(_base_url(ctx, request), credit.checkout.id)
    body: dict[str, Any] = {**credit.checkout.public(), "url": success_url}
    headers = {"Idempotent-Replayed": "true"} if credit.replayed else None
    return JSONResponse(body, headers=headers)


async def _read_capped(request: HttpRequest, limit: int) -> bytes:
    """The body, or :class:`TooLarge` as soon as it is known to pass ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the body may be at most {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"the body may be at most {limit} bytes")
    return bytes(body)


ROUTES: Final = [
    Route("/v1/wallet/checkout", post_checkout, methods=["POST"]),
    Route("/v1/wallet/checkout/{checkout_id}", get_checkout, methods=["GET"]),
    Route(WEBHOOK_PATH, stripe_webhook, methods=["POST"]),
    Route("/dev/checkout/{checkout_id}", dev_checkout_page, methods=["GET"]),
    Route("/dev/checkout/{checkout_id}/pay", dev_checkout_pay, methods=["POST"]),
]
