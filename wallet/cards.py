"""Paying in with a card (PROTOCOL.md §9): Stripe Checkout, and the ``--dev``
test payments that stand in for it.

:class:`Payments` is the service the app calls: it opens a checkout (a Stripe
Checkout Session, or a test checkout ``chk_...`` whose page is the server's
own), reads Stripe's webhooks and credits a paid checkout through
:meth:`wallet.checkouts.Checkouts.credit_checkout`, the one crediting step
both ways of paying share (one transaction, once per checkout id).

Stripe is spoken through its official library (``stripe``): a
:class:`stripe.StripeClient` on its aiohttp client (:class:`stripe.AIOHTTPClient`:
aiohttp is already the Twilio client's; the library's httpx client posts its
form in a way httpx deprecates), its API base overridable so that tests point
it at a loopback stand-in; webhooks are checked with
:meth:`stripe.WebhookSignature.verify_header` (``t=...,v1=`` HMAC-SHA256 of
``"<t>.<body>"`` with the endpoint's secret, 5 minutes' tolerance on the
server's clock). What an event means is decided by :func:`classify`, pure.

Nothing here logs a secret, a card's details or an email address: only ids,
amounts and Stripe's error codes.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import stripe
from stripe.params.checkout import SessionCreateParams

from core.errors import BadInput, InvalidField, NotFound, PaymentsOff, Unavailable
from core.logs import get_logger
from core.validation import is_id
from wallet.accounts import MAX_AMOUNT_MINOR, REFERENCE_MAX, _new_id
from wallet.checkouts import Checkout, CheckoutState, Credit, Method
from wallet.ledger import Ledger

__all__ = [
    "WEBHOOK_TOLERANCE_S",
    "Expired",
    "Ignored",
    "Mode",
    "Paid",
    "Payments",
    "Started",
    "StripeKeys",
    "classify",
    "return_urls",
    "session_params",
]

log = get_logger("dispatch.wallet", component="cards")

#: How old a webhook's signed timestamp may be (Stripe's default, 5 minutes).
WEBHOOK_TOLERANCE_S: Final = 300
#: What the line item is called on Stripe's page and the card statement.
ITEM_NAME: Final = "Wallet top-up"
#: Stripe fills this in with the session's id when it sends the payer back.
_SESSION_ID_TEMPLATE: Final = "{CHECKOUT_SESSION_ID}"


class Mode(StrEnum):
    """How clients pay in (``Settings.payments``)."""

    CARD = "card"
    TEST = "test"
    OFF = "off"


@dataclass(frozen=True)
class StripeKeys:
    """A Stripe account as the service uses it. Both secrets stay out of reprs."""

    secret_key: str = field(repr=False)
    webhook_secret: str = field(repr=False)
    api_url: str = stripe.DEFAULT_API_BASE


@dataclass(frozen=True, slots=True)
class Started:
    """A checkout just opened, and where to send the payer."""

    checkout: Checkout
    url: str


# -- the meaning of an event (pure) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Paid:
    """``checkout.session.completed``, paid: credit ``amount_minor`` to ``client_id``."""

    event_id: str
    checkout_id: str
    client_id: str
    amount_minor: int


@dataclass(frozen=True, slots=True)
class Expired:
    """``checkout.session.expired``: the session can no longer be paid."""

    event_id: str
    checkout_id: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """Any other event, or one that cannot be applied; answered 200 all the same
    (Stripe would only send it again)."""

    event_id: str
    type: str
    reason: str


_SESSION_ID_RE: Final = re.compile(rf"cs_[A-Za-z0-9_]{{1,{REFERENCE_MAX - 3}}}")


def _session_id(value: object) -> str | None:
    """A Checkout Session id (``cs_...``, at most a ledger reference long), or None."""
    if isinstance(value, str) and _SESSION_ID_RE.fullmatch(value):
        return value
    return None


def _web_url(url: str) -> bool:
    """Where a browser may be sent: an http(s) URL (never ``javascript:``)."""
    parts = urlsplit(url)
    return parts.scheme in ("https", "http") and bool(parts.netloc)


def classify(event: Mapping[str, Any], currency: str) -> Paid | Expired | Ignored:
    """What a verified Stripe event asks of a ledger in ``currency``.

    ``checkout.session.completed`` with ``payment_status`` ``paid`` is
    :class:`Paid`: ``amount_total`` (minor units) to ``client_reference_id``
    (or, without it, ``metadata.client_id``), whether or not this server
    recorded the session: Stripe is the source of truth. Top-up limits do not
    apply to money already taken. A session in another currency, without a
    valid client id or amount, or not in ``payment`` mode cannot be credited:
    :class:`Ignored` with the reason. ``checkout.session.expired`` is
    :class:`Expired`; everything else :class:`Ignored`.
    """
    event_id = str(event.get("id", ""))
    kind = str(event.get("type", ""))
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if kind not in ("checkout.session.completed", "checkout.session.expired"):
        return Ignored(event_id, kind, "not an event of checkouts")
    if not isinstance(obj, Mapping):
        return Ignored(event_id, kind, "no checkout session in the event")
    checkout_id = _session_id(obj.get("id"))
    if checkout_id is None:
        return Ignored(event_id, kind, "not a checkout session id")
    if kind == "checkout.session.expired":
        return Expired(event_id, checkout_id)
    if obj.get("payment_status") != "paid":
        return Ignored(event_id, kind, "not paid (yet)")
    if obj.get("mode", "payment") != "payment":
        return Ignored(event_id, kind, "not a one-off payment")
    metadata = obj.get("metadata")
    client_id = obj.get("client_reference_id") or (
        metadata.get("client_id") if isinstance(metadata, Mapping) else None
    )
    if not is_id(client_id):
        return Ignored(event_id, kind, "no valid client_reference_id")
    amount = obj.get("amount_total")
    if type(amount) is not int or not 0 < amount <= MAX_AMOUNT_MINOR:
        return Ignored(event_id, kind, "no valid amount_total")
    paid_in = obj.get("currency")
    if not isinstance(paid_in, str) or paid_in.upper() != currency:
        return Ignored(event_id, kind, f"paid in another currency than {currency}")
    assert isinstance(client_id, str)
    return Paid(event_id, checkout_id, client_id, amount)


def return_urls(base_url: str, checkout_id: str = _SESSION_ID_TEMPLATE) -> tuple[str, str]:
    """``(success_url, cancel_url)``: back to ``/talk`` at ``base_url``. The
    success URL names the checkout (Stripe fills in its template)."""
    base = base_url.rstrip("/")
    return (
        f"{base}/talk?topup=done&checkout_id={checkout_id}",
        f"{base}/talk?topup=cancelled",
    )


def session_params(
    client_id: str, amount_minor: int, currency: str, base_url: str
) -> SessionCreateParams:
    """The Checkout Session to create for a top-up: one line item of
    ``amount_minor`` in ``currency``, paid once by card, tied to the client.

    Cards only (Apple Pay and Google Pay are cards to Stripe): a card payment
    is settled when the session completes (``payment_status`` ``paid``),
    whereas a delayed method (a bank debit) completes unpaid and settles
    days later in an event this service does not take."""
    success_url, cancel_url = return_urls(base_url)
    return {
        "mode": "payment",
        "allowed_payment_method_types": ["card"],
        "line_items": [
            {
                "price_data": {
                    "currency": currency.lower(),
                    "unit_amount": amount_minor,
                    "product_data": {"name": ITEM_NAME},
                },
                "quantity": 1,
            }
        ],
        "client_reference_id": client_id,
        "metadata": {"client_id": client_id},
        "success_url": success_url,
        "cancel_url": cancel_url,
    }


# -- the service ----------------------------------------------------------------------


class Payments:
    """Paying in for one deployment: ``mode`` ``card`` needs ``keys``; the
    top-up limits are ``min_minor``..``max_minor``; a call to Stripe gives up
    after about ``timeout_s`` (one retry, with the library's idempotency key)."""

    def __init__(
        self,
        ledger: Ledger,
        mode: Mode | str,
        *,
        keys: StripeKeys | None = None,
        min_minor: int = 500,
        max_minor: int = 50000,
        timeout_s: float = 10.0,
    ) -> None:
        self.ledger = ledger
        self.mode = Mode(mode)
        if self.mode is Mode.CARD and keys is None:
            raise ValueError("card payments need the Stripe keys")
        if not 0 < min_minor <= max_minor <= MAX_AMOUNT_MINOR:
            raise ValueError(f"bad top-up limits {min_minor}..{max_minor}")
        self.keys = keys
        self.min_minor = min_minor
        self.max_minor = max_minor
        self.timeout_s = timeout_s
        self._http: stripe.AIOHTTPClient | None = None
        self._client: stripe.StripeClient | None = None

    # -- opening a checkout ------------------------------------------------------------
    def check_amount(self, value: object) -> int:
        """A top-up's ``amount_minor``: a whole number within the limits, else
        ``InvalidField``."""
        if type(value) is not int or not self.min_minor <= value <= self.max_minor:
            raise InvalidField(
                f"amount_minor must be a whole number of minor units from "
                f"{self.min_minor} to {self.max_minor}",
                field="amount_minor",
                min_minor=self.min_minor,
                max_minor=self.max_minor,
            )
        return value

    async def start(self, client_id: str, amount: object, base_url: str, now: float) -> Started:
        """Open a checkout of ``amount`` for the client; the payer comes back
        to ``base_url``'s ``/talk``. ``PaymentsOff`` when paying in is off,
        ``InvalidField`` outside the limits, ``Unavailable`` when Stripe does
        not answer or refuses (the reason is logged, never shown)."""
        if self.mode is Mode.OFF:
            raise PaymentsOff()
        amount_minor = self.check_amount(amount)
        if self.mode is Mode.TEST:
            checkout = await self.ledger.open_checkout(
                _new_id("chk"), client_id, amount_minor, Method.TEST, now
            )
            log.info("checkout.opened", checkout_id=checkout.id, user_id=client_id, method="test")
            return Started(checkout, f"{base_url.rstrip('/')}/dev/checkout/{checkout.id}")
        params = session_params(client_id, amount_minor, self.ledger.currency, base_url)
        session = await self._create_session(params, client_id)
        checkout_id, url = _session_id(session.id), session.url
        if checkout_id is None or not isinstance(url, str) or not _web_url(url):
            log.error("checkout.stripe_answer_unusable", user_id=client_id)
            raise Unavailable("the payment provider gave an unusable answer; try again")
        checkout = await self.ledger.open_checkout(
            checkout_id, client_id, amount_minor, Method.CARD, now
        )
        log.info("checkout.opened", checkout_id=checkout_id, user_id=client_id, method="card")
        return Started(checkout, url)

    async def _create_session(
        self, params: SessionCreateParams, client_id: str
    ) -> stripe.checkout.Session:
        client = self._stripe()
        try:
            # The library's own timeout is per attempt; this bounds the retry too.
            async with asyncio.timeout(self.timeout_s * 2.5):
                session = await client.v1.checkout.sessions.create_async(params)
        except TimeoutError:
            log.warning("checkout.stripe_timeout", user_id=client_id)
            raise Unavailable("the payment provider did not answer in time; try again") from None
        except stripe.StripeError as exc:
            log.warning(
                "checkout.stripe_failed",
                user_id=client_id,
                error=type(exc).__name__,
                http_status=exc.http_status,
                stripe_code=exc.code,
                stripe_request_id=exc.request_id,
            )
            raise Unavailable("the payment provider refused or failed; try again") from None
        return session

    def _stripe(self) -> stripe.StripeClient:
        if self._client is None:
            assert self.keys is not None
            # Its session opens at the first request: inside the running loop.
            self._http = stripe.AIOHTTPClient(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
            self._client = stripe.StripeClient(
                self.keys.secret_key,
                base_addresses={"api": self.keys.api_url.rstrip("/")},
                http_client=self._http,
                max_network_retries=1,
            )
        return self._client

    # -- webhooks ------------------------------------------------------------------------
    def read_event(self, payload: bytes, signature: str | None) -> dict[str, Any]:
        """The event of a webhook whose ``Stripe-Signature`` checks out;
        ``BadInput`` (400) for a wrong, missing or stale signature or a body
        that is not a Stripe event. ``NotFound`` when Stripe is not set up."""
        if self.mode is not Mode.CARD or self.keys is None:
            raise NotFound("Stripe is not set up here")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput("the body is not UTF-8") from None
        try:
            stripe.WebhookSignature.verify_header(
                text, signature, self.keys.webhook_secret, WEBHOOK_TOLERANCE_S
            )
        except stripe.SignatureVerificationError:
            raise BadInput("the Stripe-Signature does not match, or is too old") from None
        try:
            event = json.loads(text)
        except ValueError:
            raise BadInput("the body is not JSON") from None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise BadInput("the body is not a Stripe event")
        return event

    async def webhook(self, payload: bytes, signature: str | None, now: float) -> Credit | None:
        """Apply a webhook: credit a paid checkout (once, whatever Stripe
        retries), mark an expired one, ignore the rest. The credit, when one
        was made or replayed; ``None`` otherwise. Errors as :meth:`read_event`."""
        event = self.read_event(payload, signature)
        meaning = classify(event, self.ledger.currency)
        match meaning:
            case Paid():
                return await self.ledger.credit_checkout(
                    meaning.checkout_id, meaning.client_id, meaning.amount_minor, Method.CARD, now
                )
            case Expired():
                await self.ledger.expire_checkout(meaning.checkout_id, now)
                log.info("checkout.expired", checkout_id=meaning.checkout_id)
            case Ignored():
                log.info(
                    "stripe.event_ignored",
                    event_id=meaning.event_id,
                    event_type=meaning.type,
                    reason=meaning.reason,
                )
        return None

    # -- a client's checkouts, and the --dev test page ---------------------------------
    async def checkout_of(self, checkout_id: str, client_id: str) -> Checkout:
        """The client's own checkout; ``NotFound`` for anyone else's, or none."""
        if not isinstance(checkout_id, str) or not 0 < len(checkout_id) <= REFERENCE_MAX:
            raise NotFound("no such checkout")
        checkout = await self.ledger.checkout(checkout_id)
        if checkout.client_id != client_id:
            raise NotFound("no such checkout")
        return checkout

    async def pay_test(self, checkout_id: str, client_id: str, now: float) -> Credit:
        """The test page's "Pay": credit the client's own test checkout through
        the same step as a paid webhook. A second "Pay" credits nothing
        (``replayed``). ``NotFound`` outside test mode, for a card checkout,
        anyone else's or none."""
        if self.mode is not Mode.TEST:
            raise NotFound("test payments exist only with --dev and no Stripe")
        checkout = await self.checkout_of(checkout_id, client_id)
        if checkout.method is not Method.TEST or checkout.state is CheckoutState.EXPIRED:
            raise NotFound("no such test checkout")
        return await self.ledger.credit_checkout(
            checkout.id, checkout.client_id, checkout.amount_minor, Method.TEST, now
        )

    async def aclose(self) -> None:
        if self._http is not None:
            # Typed everywhere in the library but here.
            await self._http.close_async()  # type: ignore[no-untyped-call]
        self._http = self._client = None
