"""Paying in (PROTOCOL.md §9) through the whole app: Stripe Checkout against a
loopback stand-in (a real HTTP server on 127.0.0.1 that answers
``POST /v1/checkout/sessions`` as Stripe does), webhooks signed with Stripe's
real scheme (``t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">``, computed here,
not by the library under test), the ``--dev`` test page, the limits and the
off switch; crediting once across retries, concurrency and two servers on one
database (SQLite and PostgreSQL).

The app runs in the test's own event loop (httpx's ASGI transport, the
lifespan entered by hand) so that the stand-in, served in that loop too, can
answer it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import io
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import pytest_asyncio
from cryptography.fernet import Fernet
from integration.harness import serve_asgi
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from test_pages import _module_imports, _refs, _resolve, _static_file

from core import logs
from core.errors import Conflict
from core.identity import mint
from dispatch.app import create_app
from dispatch.settings import load_settings
from wallet.cards import Expired, Ignored, Paid, classify
from wallet.checkouts import Method

SECRET = "payments-test-secret-" + "z" * 40
SK = "sk_test_" + "k" * 24
WHSEC = "whsec_" + "w" * 32
PUBLIC = "https://care.example.com"
EMAIL = "payer@example.com"
PAGE_BANNER = "TEST PAYMENT — no money moves, no card is charged"


def _h(role: str, sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(SECRET, role, sub)}"}


C1, C2 = _h("client", "c1"), _h("client", "c2")
OPERATOR = _h("operator", "op")


# -- Stripe's side -------------------------------------------------------------------


@dataclass
class StripeStandIn:
    """Stripe's Checkout Sessions API, as far as creating one goes."""

    received: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    async def create_session(self, request: Request) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {SK}":
            error = {"type": "invalid_request_error", "message": "Invalid API Key provided"}
            return JSONResponse({"error": error}, status_code=401)
        # stripe-python posts application/x-www-form-urlencoded, nested keys
        # spelled line_items[0][price_data][currency].
        form = dict(parse_qsl((await request.body()).decode()))
        self.received.append(form)
        session_id = "cs_test_" + secrets.token_hex(16)
        return JSONResponse(
            {
                "id": session_id,
                "object": "checkout.session",
                "amount_total": int(form["line_items[0][price_data][unit_amount]"]),
                "currency": form["line_items[0][price_data][currency]"],
                "client_reference_id": form["client_reference_id"],
                "mode": form["mode"],
                "payment_status": "unpaid",
                "status": "open",
                "url": f"https://checkout.stripe.test/c/pay/{session_id}",
            }
        )


@pytest_asyncio.fixture
async def stripe_api() -> AsyncIterator[StripeStandIn]:
    stand_in = StripeStandIn()
    app = Starlette(
        routes=[Route("/v1/checkout/sessions", stand_in.create_session, methods=["POST"])]
    )
    async with serve_asgi(app) as url:
        stand_in.url = url
        yield stand_in


def sign(payload: bytes, secret: str = WHSEC, at: float | None = None) -> str:
    """A ``Stripe-Signature`` header, computed as Stripe documents it."""
    t = int(time.time() if at is None else at)
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def event(
    kind: str = "checkout.session.completed",
    session_id: str | None = None,
    client_id: str | None = "c1",
    amount: object = 2500,
    *,
    payment_status: str = "paid",
    currency: str = "gbp",
) -> bytes:
    """A Stripe event about a Checkout Session, as Stripe sends it (trimmed)."""
    session: dict[str, Any] = {
        "id": session_id or "cs_test_" + secrets.token_hex(16),
        "object": "checkout.session",
        "amount_total": amount,
        "currency": currency,
        "client_reference_id": client_id,
        "customer_details": {"email": EMAIL, "name": "A Payer"},
        "metadata": {"client_id": client_id} if client_id else {},
        "mode": "payment",
        "payment_status": payment_status,
        "status": "complete",
    }
    body = {
        "id": "evt_" + secrets.token_hex(12),
        "object": "event",
        "api_version": "2025-09-30.clover",
        "created": int(time.time()),
        "livemode": False,
        "type": kind,
        "data": {"object": session},
    }
    return json.dumps(body).encode()


def session_of(payload: bytes) -> str:
    sid: str = json.loads(payload)["data"]["object"]["id"]
    return sid


# -- the app -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve(tmp_path: Path, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The whole app on ``overrides`` (an in-process pool; the database in
    ``tmp_path`` unless one is given), running, and an HTTP client on it."""
    settings: dict[str, Any] = {
        "dev": True,
        "secret": SECRET,
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'dispatch.db'}",
        **overrides,
    }
    if not settings["dev"]:
        settings.setdefault("data_key", Fernet.generate_key().decode())
    app = create_app(load_settings(settings, env={}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pay.test") as http:
            yield http


def card(stripe_url: str = "http://127.0.0.1:9", **more: Any) -> dict[str, Any]:
    """Settings of card payments (Stripe at ``stripe_url``)."""
    return {
        "stripe_secret_key": SK,
        "stripe_webhook_secret": WHSEC,
        "stripe_api_url": stripe_url,
        **more,
    }


async def deliver(http: httpx.AsyncClient, payload: bytes, signature: str | None = None) -> Any:
    headers = {"content-type": "application/json"}
    headers["stripe-signature"] = sign(payload) if signature is None else signature
    return await http.post("/v1/stripe/webhook", content=payload, headers=headers)


async def balance(http: httpx.AsyncClient, who: dict[str, str] = C1) -> int:
    r = await http.get("/v1/wallet", headers=who)
    assert r.status_code == 200, r.text
    value: int = r.json()["balance_minor"]
    return value


async def topups(http: httpx.AsyncClient, who: dict[str, str] = C1) -> list[dict[str, Any]]:
    r = await http.get("/v1/transactions", headers=who)
    assert r.status_code == 200, r.text
    return [t for t in r.json()["transactions"] if t["kind"] == "topup"]


def error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"}
    err: dict[str, Any] = r.json()["error"]
    assert err["code"] == code and isinstance(err["message"], str) and err["message"]
    return err


# -- Stripe Checkout -------------------------------------------------------------------


async def test_a_checkout_is_created_at_stripe_and_its_webhook_credits_it(
    tmp_path: Path, stripe_api: StripeStandIn
) -> None:
    async with serve(tmp_path, **card(stripe_api.url, public_url=PUBLIC)) as http:
        r = await http.post("/v1/wallet/checkout", json={"amount_minor": 2500}, headers=C1)
        assert r.status_code == 201, r.text
        body = r.json()
        assert set(body) == {"checkout_id", "url"}
        checkout_id = body["checkout_id"]
        assert checkout_id.startswith("cs_test_")
        assert body["url"] == f"https://checkout.stripe.test/c/pay/{checkout_id}"
        # What Stripe was asked for.
        [sent] = stripe_api.received
        assert sent == {
            "mode": "payment",
            "allowed_payment_method_types[0]": "card",
            "line_items[0][price_data][currency]": "gbp",
            "line_items[0][price_data][unit_amount]": "2500",
            "line_items[0][price_data][product_data][name]": "Wallet top-up",
            "line_items[0][quantity]": "1",
            "client_reference_id": "c1",
            "metadata[client_id]": "c1",
            "success_url": f"{PUBLIC}/talk?topup=done&checkout_id={{CHECKOUT_SESSION_ID}}",
            "cancel_url": f"{PUBLIC}/talk?topup=cancelled",
        }
        # The payer's page can follow it; no one else can see it.
        r = await http.get(f"/v1/wallet/checkout/{checkout_id}", headers=C1)
        assert r.json() == {
            "checkout_id": checkout_id,
            "amount_minor": 2500,
            "currency": "GBP",
            "state": "open",
        }
        error(await http.get(f"/v1/wallet/checkout/{checkout_id}", headers=C2), 404, "not_found")
        assert await balance(http) == 0

        # Stripe says it was paid.
        r = await deliver(http, event(session_id=checkout_id, amount=2500))
        assert r.status_code == 200, r.text
        assert await balance(http) == 2500
        r = await http.get(f"/v1/wallet/checkout/{checkout_id}", headers=C1)
        assert r.json()["state"] == "paid"
        [receipt] = await topups(http)
        assert (receipt["amount_minor"], receipt["method"]) == (2500, "card")
        wallet = (await http.get("/v1/wallet", headers=C1)).json()
        assert wallet["payments"] == "card"


async def test_without_a_public_url_the_payer_comes_back_to_this_server(
    tmp_path: Path, stripe_api: StripeStandIn
) -> None:
    async with serve(tmp_path, **card(stripe_api.url)) as http:
        r = await http.post("/v1/wallet/checkout", json={"amount_minor": 500}, headers=C1)
        assert r.status_code == 201, r.text
        assert stripe_api.received[0]["cancel_url"] == "http://pay.test/talk?topup=cancelled"


async def test_stripe_down_or_refusing_is_503(
    tmp_path: Path, stripe_api: StripeStandIn, log_lines: io.StringIO
) -> None:
    # Nothing listens on port 9 (discard): the connection is refused.
    async with serve(tmp_path, **card("http://127.0.0.1:9")) as http:
        r = await http.post("/v1/wallet/checkout", json={"amount_minor": 500}, headers=C1)
        error(r, 503, "unavailable")
    # A key Stripe does not know: 401 from Stripe, 503 to the client, the key unlogged.
    wrong_key = "sk_test_" + "q" * 24
    async with serve(tmp_path, **card(stripe_api.url, stripe_secret_key=wrong_key)) as http:
        logs.configure("debug", json=True, stream=log_lines)
        r = await http.post("/v1/wallet/checkout", json={"amount_minor": 500}, headers=C1)
        error(r, 503, "unavailable")
    assert stripe_api.received == []
    assert '"AuthenticationError"' in log_lines.getvalue()
    assert wrong_key not in log_lines.getvalue()


async def test_the_same_event_five_times_at_once_on_two_servers_credits_once(
    tmp_path: Path, database_url: str
) -> None:
    # A session this deployment has no row for (created elsewhere, or its row
    # lost): Stripe is the source of truth, so it is credited and recorded.
    payload = event(amount=4200)
    checkout_id = session_of(payload)
    async with (
        serve(tmp_path, **card(database_url=database_url)) as a,
        serve(tmp_path, **card(database_url=database_url)) as b,
    ):
        answers = await asyncio.gather(*(deliver(s, payload) for s in (a, b, a, b, a)))
        assert [r.status_code for r in answers] == [200] * 5, [r.text for r in answers]
        # ... and Stripe's retries after that, each freshly signed.
        assert (await deliver(b, payload)).status_code == 200
        for http in (a, b):
            assert await balance(http) == 4200
            [receipt] = await topups(http)
            assert receipt["method"] == "card"
        r = await a.get(f"/v1/wallet/checkout/{checkout_id}", headers=C1)
        assert r.json() == {
            "checkout_id": checkout_id,
            "amount_minor": 4200,
            "currency": "GBP",
            "state": "paid",
        }
        check = (await b.get("/v1/ledger/check", headers=OPERATOR)).json()
        assert check["balanced"] is True and check["transactions"] == 1


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(lambda p: sign(p, secret="whsec_" + "x" * 32), id="another-secret"),
        pytest.param(lambda p: sign(p, at=time.time() - 301), id="older-than-5-minutes"),
        pytest.param(lambda p: sign(p + b" "), id="another-body"),
        pytest.param(lambda p: sign(p).replace("v1=", "v0="), id="another-scheme"),
        pytest.param(lambda p: "", id="missing"),
        pytest.param(lambda p: "t=abc,v1=zz", id="garbage"),
    ],
)
async def test_a_wrong_or_old_signature_is_400_and_credits_nothing(
    tmp_path: Path, signature: Any
) -> None:
    payload = event(amount=3000)
    async with serve(tmp_path, **card()) as http:
        r = await deliver(http, payload, signature(payload))
        err = error(r, 400, "bad_message")
        assert WHSEC not in err["message"]
        assert await balance(http) == 0
        # The same event, properly signed, does credit (the payload was fine).
        assert (await deliver(http, payload)).status_code == 200
        assert await balance(http) == 3000


async def test_an_unreadable_body_is_400(tmp_path: Path) -> None:
    async with serve(tmp_path, **card()) as http:
        for payload in (b"not json", b"\xff\xfe", b"[1, 2]", b'{"no": "type"}'):
            error(await deliver(http, payload), 400, "bad_message")
        r = await http.post(
            "/v1/stripe/webhook",
            content=b"{" + b" " * (256 * 1024) + b"}",
            headers={"stripe-signature": "t=1,v1=0"},
        )
        error(r, 413, "too_large")


async def test_unpaid_unusable_and_other_events_are_200_and_ignored(tmp_path: Path) -> None:
    async with serve(tmp_path, **card()) as http:
        ignored = [
            event(payment_status="unpaid"),
            event(payment_status="no_payment_required"),
            event("payment_intent.succeeded"),
            event("checkout.session.async_payment_failed"),
            event(currency="eur"),
            event(client_id=None),
            event(client_id="bad id!"),
            event(amount=0),
            event(amount="2500"),
            event(session_id="pi_123"),
        ]
        for payload in ignored:
            r = await deliver(http, payload)
            assert r.status_code == 200, r.text
        assert await balance(http) == 0
        assert await topups(http) == []


async def test_an_expired_session_is_marked_and_a_paid_one_stays_paid(
    tmp_path: Path, stripe_api: StripeStandIn
) -> None:
    async with serve(tmp_path, **card(stripe_api.url)) as http:
        ids = []
        for _ in range(2):
            r = await http.post("/v1/wallet/checkout", json={"amount_minor": 700}, headers=C1)
            ids.append(r.json()["checkout_id"])
        assert (await deliver(http, event(session_id=ids[1], amount=700))).status_code == 200
        for checkout_id in ids:
            r = await deliver(http, event("checkout.session.expired", checkout_id))
            assert r.status_code == 200
        # One nobody here created: nothing to mark, still 200.
        assert (await deliver(http, event("checkout.session.expired"))).status_code == 200
        states = [
            (await http.get(f"/v1/wallet/checkout/{i}", headers=C1)).json()["state"] for i in ids
        ]
        assert states == ["expired", "paid"]
        assert await balance(http) == 700


# -- limits, roles, off ----------------------------------------------------------------


@pytest.mark.parametrize("amount", [499, 50001, 0, -500, "1000", 1000.0, True, None])
async def test_amounts_outside_the_limits_are_422(tmp_path: Path, amount: object) -> None:
    async with serve(tmp_path) as http:
        r = await http.post("/v1/wallet/checkout", json={"amount_minor": amount}, headers=C1)
        err = error(r, 422, "invalid_field")
        assert err["field"] == "amount_minor"
        assert (err["min_minor"], err["max_minor"]) == (500, 50000)


async def test_the_limits_themselves_are_allowed_and_settable(tmp_path: Path) -> None:
    async with serve(tmp_path, topup_min_minor=1000, topup_max_minor=2000) as http:
        for amount in (1000, 2000):
            r = await http.post("/v1/wallet/checkout", json={"amount_minor": amount}, headers=C1)
            assert r.status_code == 201, r.text
        r = await http.post("/v1/wallet/checkout", json={"amount_minor": 999}, headers=C1)
        error(r, 422, "invalid_field")
        wallet = (await http.get("/v1/wallet", headers=C1)).json()
        assert (wallet["topup_min_minor"], wallet["topup_max_minor"]) == (1000, 2000)


async def test_who_may_call_what(tmp_path: Path) -> None:
    async with serve(tmp_path) as http:
        body = {"amount_minor": 1000}
        error(await http.post("/v1/wallet/checkout", json=body), 401, "unauthorized")
        for role in ("therapist", "operator"):
            r = await http.post("/v1/wallet/checkout", json=body, headers=_h(role, "x"))
            error(r, 403, "forbidden")
        r = await http.post("/v1/wallet/checkout", json=body, headers=C1)
        checkout_id = r.json()["checkout_id"]
        error(await http.get(f"/v1/wallet/checkout/{checkout_id}"), 401, "unauthorized")
        r = await http.get(f"/v1/wallet/checkout/{checkout_id}", headers=_h("therapist", "c1"))
        error(r, 403, "forbidden")
        for who, path in [
            (C2, checkout_id),
            (C1, "chk_nothing"),
            (C1, "x" * 200),
            (C1, "cs_test_unknown"),
        ]:
            error(await http.get(f"/v1/wallet/checkout/{path}", headers=who), 404, "not_found")
        # The webhook takes no token, and with no Stripe set up it is not there.
        error(await deliver(http, event()), 404, "not_found")


async def test_payments_off_is_503(tmp_path: Path) -> None:
    async with serve(tmp_path, dev=False) as http:
        r = await http.post("/v1/wallet/checkout", json={"amount_minor": 1000}, headers=C1)
        error(r, 503, "payments_off")
        # Off wins over a bad body: there is nothing to fix on the client's side.
        r = await http.post("/v1/wallet/checkout", json={"amount_minor": 1}, headers=C1)
        error(r, 503, "payments_off")
        assert (await http.get("/v1/wallet", headers=C1)).json()["payments"] == "off"
        # No test page without --dev.
        assert (await http.get("/dev/checkout/chk_1")).status_code == 404
        r = await http.post("/dev/checkout/chk_1/pay", headers=C1)
        error(r, 404, "not_found")


async def test_get_wallet_tells_the_pages_what_they_need(tmp_path: Path) -> None:
    async with serve(tmp_path, price_per_minute_minor=200, min_balance_minutes=5) as http:
        r = await http.get("/v1/wallet", headers=C1)
        assert r.json() == {
            "balance_minor": 0,
            "held_minor": 0,
            "currency": "GBP",
            "price_per_minute_minor": 200,
            "min_balance_minor": 1000,
            "topup_min_minor": 500,
            "topup_max_minor": 50000,
            "payments": "test",
        }


# -- the --dev test page -----------------------------------------------------------------


async def test_the_test_page_pays_once_through_the_same_credit(tmp_path: Path) -> None:
    async with serve(tmp_path) as http:
        r = await http.post("/v1/wallet/checkout", json={"amount_minor": 1250}, headers=C1)
        assert r.status_code == 201, r.text
        checkout_id, url = r.json()["checkout_id"], r.json()["url"]
        assert checkout_id.startswith("chk_")
        assert url == f"http://pay.test/dev/checkout/{checkout_id}"

        page = await http.get(f"/dev/checkout/{checkout_id}")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert PAGE_BANNER in page.text

        pay = f"/dev/checkout/{checkout_id}/pay"
        error(await http.post(pay), 401, "unauthorized")
        error(await http.post(pay, headers=C2), 404, "not_found")
        error(await http.post(pay, headers=_h("operator", "c1")), 403, "forbidden")
        assert await balance(http) == 0

        answers = await asyncio.gather(*(http.post(pay, headers=C1) for _ in range(3)))
        assert [a.status_code for a in answers] == [200] * 3
        assert sorted(a.headers.get("idempotent-replayed", "") for a in answers) == [
            "",
            "true",
            "true",
        ]
        assert answers[0].json() == {
            "checkout_id": checkout_id,
            "amount_minor": 1250,
            "currency": "GBP",
            "state": "paid",
            "url": f"http://pay.test/talk?topup=done&checkout_id={checkout_id}",
        }
        # A replayed "Pay" (back button, double click) credits nothing more.
        again = await http.post(pay, headers=C1)
        assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
        assert await balance(http) == 1250
        r = await http.get(f"/v1/wallet/checkout/{checkout_id}", headers=C1)
        assert r.json()["state"] == "paid"

        # The receipts: the test page's and an operator's top-up.
        body = {"client_id": "c1", "amount_minor": 300, "reference": "bank-transfer-1"}
        assert (await http.post("/v1/wallet/topups", json=body, headers=OPERATOR)).is_success
        assert [(t["amount_minor"], t["method"]) for t in await topups(http)] == [
            (300, "operator"),
            (1250, "test"),
        ]
        # A card checkout's webhook does not exist in test mode.
        error(await deliver(http, event()), 404, "not_found")


def test_the_test_page_loads_only_what_the_csp_allows() -> None:
    refs = _refs("checkout.html")
    assert refs.scripts == ["/static/js/checkout.js"]
    assert not (refs.inline_scripts or refs.style_elements or refs.style_attrs)
    assert not refs.handler_attrs
    todo = [*refs.scripts, *refs.links]
    while todo:
        url = todo.pop()
        path = _static_file(url)
        assert path.is_file(), url
        if path.suffix == ".js":
            todo += [_resolve(url, spec) for spec in _module_imports(path)]


# -- the pieces ------------------------------------------------------------------------


def test_classify_reads_stripe_events() -> None:
    paid = json.loads(event(session_id="cs_test_1", amount=900))
    assert classify(paid, "GBP") == Paid(paid["id"], "cs_test_1", "c1", 900)
    # The metadata stands in for a missing client_reference_id.
    paid["data"]["object"]["client_reference_id"] = None
    assert isinstance(classify(paid, "GBP"), Paid)
    assert isinstance(classify(paid, "EUR"), Ignored)
    expired = json.loads(event("checkout.session.expired", "cs_test_2"))
    assert classify(expired, "GBP") == Expired(expired["id"], "cs_test_2")
    assert isinstance(classify({"type": "checkout.session.completed"}, "GBP"), Ignored)
    assert isinstance(classify({}, "GBP"), Ignored)


async def test_an_id_credited_to_someone_else_is_a_conflict(tmp_path: Path) -> None:
    async with serve(tmp_path, **card()) as http:
        ledger = http._transport.app.state.ctx.ledger  # type: ignore[attr-defined]
        now = time.time()
        first = await ledger.credit_checkout("cs_test_x", "c1", 800, Method.CARD, now)
        assert not first.replayed
        again = await ledger.credit_checkout("cs_test_x", "c1", 800, Method.CARD, now)
        assert again.replayed and again.transaction.id == first.transaction.id
        for client_id, amount in (("c2", 800), ("c1", 801)):
            with pytest.raises(Conflict):
                await ledger.credit_checkout("cs_test_x", client_id, amount, Method.CARD, now)
        assert await balance(http) == 800 and await balance(http, C2) == 0


async def test_nothing_secret_or_personal_is_logged(
    tmp_path: Path, stripe_api: StripeStandIn, log_lines: io.StringIO
) -> None:
    async with serve(tmp_path, **card(stripe_api.url)) as http:
        logs.configure("debug", json=True, stream=log_lines)  # the app set its own up
        r = await http.post("/v1/wallet/checkout", json={"amount_minor": 900}, headers=C1)
        checkout_id = r.json()["checkout_id"]
        assert (await deliver(http, event(session_id=checkout_id, amount=900))).is_success
        error(await deliver(http, event(), sign(b"x")), 400, "bad_message")
    text = log_lines.getvalue()
    assert '"checkout.credited"' in text and checkout_id in text
    for secret in (SK, WHSEC, EMAIL, "A Payer"):
        assert secret not in text
