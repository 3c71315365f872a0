"""The wallet's HTTP calls (PROTOCOL.md §6) on SQLite and PostgreSQL: roles,
the protocol's error shape, top-up replays, withdrawals end to end.

The routes run in a small Starlette app with the service's own error handlers
and a context that carries what they use (settings, rate limiter, metrics,
clock, ledger); the last test runs them in the real app once it is wired.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.testclient import TestClient

from core.bus import LocalBus
from core.db import Database
from core.errors import DispatchError
from core.identity import mint
from dispatch.app import _dispatch_error, _http_error
from dispatch.context import AppContext
from dispatch.metrics import Metrics
from dispatch.ratelimit import KeyedLimiter
from dispatch.settings import Settings, load_settings
from dispatch.wallet_routes import ROUTES
from pool.effects import Effect
from pool.memory import MemoryPool
from signaling.metering import Metering
from wallet.ledger import Ledger

SECRET = "wallet-test-secret-" + "x" * 40
# Thursday 2025-10-09 09:53:20 in London.
T0 = 1_760_000_000.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def auth(role: str, sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(SECRET, role, sub, ttl_s=24 * 3600)}"}


#: What GET /v1/wallet tells the pages besides the balance, with the defaults and
#: --dev (no Stripe: test payments).
WALLET_EXTRAS = {
    "held_minor": 0,
    "price_per_minute_minor": 150,
    "min_balance_minor": 1500,
    "topup_min_minor": 500,
    "topup_max_minor": 50000,
    "payments": "test",
}

OPERATOR = auth("operator", "op1")
CLIENT = auth("client", "c1")
THERAPIST = auth("therapist", "t1")


@dataclasses.dataclass
class World:
    http: httpx.AsyncClient
    ledger: Ledger
    clock: Clock


@pytest_asyncio.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    db = Database.from_url(database_url)
    await db.migrate()
    ledger = Ledger(db, currency="GBP", therapist_share_pct=60, timezone="Europe/London")
    clock = Clock(T0)
    app = Starlette(
        routes=ROUTES,
        exception_handlers={DispatchError: _dispatch_error, HTTPException: _http_error},
    )
    app.state.ctx = SimpleNamespace(
        settings=Settings(secret=SECRET, dev=True),
        http_limiter=KeyedLimiter(1000.0, 1000),
        metrics=Metrics(),
        clock=clock,
        ledger=ledger,
        mail=None,  # emails off: no "withdrawal scheduled" email is queued
        # A top-up plans the client's live sessions again (none here).
        metering=Metering(
            ledger, MemoryPool(), LocalBus[Effect](), price_per_minute_minor=150, clock=clock
        ),
    )
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://wallet.test") as http:
            yield World(http, ledger, clock)
    finally:
        await db.aclose()


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert the protocol's error shape; return the error object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    err: dict[str, Any] = body["error"]
    assert err["code"] == code and isinstance(err["message"], str) and err["message"]
    return err


async def topup(w: World, client_id: str, amount: int, reference: str) -> httpx.Response:
    body = {"client_id": client_id, "amount_minor": amount, "reference": reference}
    return await w.http.post("/v1/wallet/topups", json=body, headers=OPERATOR)


async def give_therapist(w: World, amount_minor: int) -> None:
    """t1 earns 60% of a charge of ``amount_minor`` to c-pay."""
    await w.ledger.topup("c-pay", amount_minor, f"seed-{amount_minor}", T0)
    assert await w.ledger.charge_session(f"ses-{amount_minor}", "c-pay", "t1", amount_minor, T0)


# -- who may call what ---------------------------------------------------------------

CALLS: list[tuple[str, str, set[str]]] = [
    ("GET", "/v1/wallet", {"client"}),
    ("POST", "/v1/wallet/topups", {"operator"}),
    ("GET", "/v1/transactions", {"client", "therapist"}),
    ("GET", "/v1/earnings", {"therapist"}),
    ("POST", "/v1/withdrawals", {"therapist"}),
    ("GET", "/v1/withdrawals", {"therapist", "operator"}),
    ("POST", "/v1/withdrawals/wd_1/invoice", {"operator"}),
    ("POST", "/v1/withdrawals/wd_1/paid", {"operator"}),
    ("GET", "/v1/ledger/check", {"operator"}),
]


async def test_every_call_needs_a_token(world: World) -> None:
    for method, path, _ in CALLS:
        response = await world.http.request(method, path, json={})
        error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
        forged = {"Authorization": "Bearer " + mint("another-secret-" + "y" * 40, "operator", "x")}
        error(await world.http.request(method, path, json={}, headers=forged), 401, "unauthorized")


async def test_every_call_refuses_other_roles(world: World) -> None:
    for method, path, allowed in CALLS:
        for role in {"client", "therapist", "operator"} - allowed:
            response = await world.http.request(method, path, json={}, headers=auth(role, "u1"))
            error(response, 403, "forbidden")


# -- wallet and top-ups ----------------------------------------------------------------


async def test_wallet_and_topup(world: World) -> None:
    response = await world.http.get("/v1/wallet", headers=CLIENT)
    assert response.status_code == 200
    assert response.json() == {"balance_minor": 0, "currency": "GBP", **WALLET_EXTRAS}

    response = await topup(world, "c1", 2500, "pay_1")
    assert response.status_code == 201
    txn = response.json()["transaction"]
    assert txn == {
        "id": txn["id"],
        "kind": "topup",
        "amount_minor": 2500,
        "balance_after_minor": 2500,
        "session_id": None,
        "booking_id": None,
        "created_at": "2025-10-09T08:53:20.000Z",
        "client_id": "c1",
        "reference": "pay_1",
    }
    assert (await world.http.get("/v1/wallet", headers=CLIENT)).json()["balance_minor"] == 2500
    # Another client's wallet is its own.
    other = await world.http.get("/v1/wallet", headers=auth("client", "c2"))
    assert other.json() == {"balance_minor": 0, "currency": "GBP", **WALLET_EXTRAS}


async def test_topup_replay_answers_the_first_result(world: World) -> None:
    first = await topup(world, "c1", 2500, "pay_1")
    world.clock.now += 30
    again = await topup(world, "c1", 2500, "pay_1")
    assert first.status_code == 201 and again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert (await world.http.get("/v1/wallet", headers=CLIENT)).json()["balance_minor"] == 2500
    err = error(await topup(world, "c1", 9999, "pay_1"), 409, "conflict")
    assert err["field"] == "reference"


async def test_ten_concurrent_topup_replays_credit_once(world: World) -> None:
    responses = await asyncio.gather(*(topup(world, "c1", 700, "pay_race") for _ in range(10)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 9 + [201]
    assert len({r.json()["transaction"]["id"] for r in responses}) == 1
    assert (await world.http.get("/v1/wallet", headers=CLIENT)).json()["balance_minor"] == 700


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"client_id": "c1", "reference": "r"}, "amount_minor"),
        ({"client_id": "c1", "amount_minor": 0, "reference": "r"}, "amount_minor"),
        ({"client_id": "c1", "amount_minor": -5, "reference": "r"}, "amount_minor"),
        ({"client_id": "c1", "amount_minor": True, "reference": "r"}, "amount_minor"),
        ({"client_id": "c1", "amount_minor": 1.5, "reference": "r"}, "amount_minor"),
        ({"client_id": "c1", "amount_minor": "100", "reference": "r"}, "amount_minor"),
        ({"client_id": "c1", "amount_minor": 100}, "reference"),
        ({"client_id": "c1", "amount_minor": 100, "reference": ""}, "reference"),
        ({"client_id": "c1", "amount_minor": 100, "reference": "r" * 129}, "reference"),
        ({"client_id": "c1", "amount_minor": 100, "reference": 5}, "reference"),
        ({"amount_minor": 100, "reference": "r"}, "client_id"),
        ({"client_id": "not ok", "amount_minor": 100, "reference": "r"}, "client_id"),
    ],
)
async def test_topup_refuses_bad_fields(world: World, body: dict[str, Any], field: str) -> None:
    response = await world.http.post("/v1/wallet/topups", json=body, headers=OPERATOR)
    assert error(response, 422, "invalid_field")["field"] == field
    assert await world.ledger.balance("c1") == 0


async def test_topup_refuses_a_body_that_is_not_an_object(world: World) -> None:
    for raw in (b"", b"not json", b"[1, 2]", b'"x"'):
        response = await world.http.post("/v1/wallet/topups", content=raw, headers=OPERATOR)
        error(response, 400, "bad_message")
    ok = await topup(world, "c1", 128 * 100, "r" * 128)
    assert ok.status_code == 201


# -- transactions and earnings ----------------------------------------------------------


async def test_transactions_and_earnings(world: World) -> None:
    await topup(world, "c1", 1000, "pay_1")
    world.clock.now += 60
    assert await world.ledger.charge_session("ses_1", "c1", "t1", 300, world.clock())

    client = (await world.http.get("/v1/transactions", headers=CLIENT)).json()["transactions"]
    assert [(e["kind"], e["amount_minor"], e["balance_after_minor"]) for e in client] == [
        ("session_charge", -300, 700),
        ("topup", 1000, 1000),
    ]
    assert client[0]["session_id"] == "ses_1"
    assert client[0]["created_at"] == "2025-10-09T08:54:20.000Z"
    assert set(client[0]) >= {"id", "kind", "amount_minor", "balance_after_minor", "session_id"}
    # The receipt's method (PROTOCOL.md §9): the operator's top-up; none for a charge.
    assert [e["method"] for e in client] == [None, "operator"]

    therapist = (await world.http.get("/v1/transactions", headers=THERAPIST)).json()
    assert [(e["kind"], e["amount_minor"]) for e in therapist["transactions"]] == [("earning", 180)]
    assert therapist["transactions"][0]["method"] is None
    earnings = await world.http.get("/v1/earnings", headers=THERAPIST)
    assert earnings.status_code == 200
    assert earnings.json() == {
        "available_minor": 180,
        "withdrawing_minor": 0,
        "paid_out_minor": 0,
        "currency": "GBP",
    }
    limited = await world.http.get("/v1/transactions?limit=1", headers=CLIENT)
    assert limited.json()["transactions"] == client[:1]
    for bad in ("0", "-1", "x", "1001"):
        response = await world.http.get(f"/v1/transactions?limit={bad}", headers=CLIENT)
        assert error(response, 422, "invalid_field")["field"] == "limit"


# -- withdrawals -----------------------------------------------------------------------


async def test_withdrawal_from_request_to_payout(world: World) -> None:
    await give_therapist(world, 1000)  # 600 available
    http = world.http

    response = await http.post("/v1/withdrawals", json={"amount_minor": 601}, headers=THERAPIST)
    err = error(response, 402, "insufficient_funds")
    assert err["available_minor"] == 600
    for bad in (0, -1, True, None, "600"):
        response = await http.post("/v1/withdrawals", json={"amount_minor": bad}, headers=THERAPIST)
        assert error(response, 422, "invalid_field")["field"] == "amount_minor"

    response = await http.post("/v1/withdrawals", json={"amount_minor": 600}, headers=THERAPIST)
    assert response.status_code == 201
    w = response.json()["withdrawal"]
    assert w["state"] == "awaiting_invoice" and w["payout_date"] is None
    assert w["amount_minor"] == 600 and w["created_at"] == "2025-10-09T08:53:20.000Z"
    assert set(w) >= {"id", "amount_minor", "state", "created_at", "payout_date"}
    error(
        await http.post("/v1/withdrawals", json={"amount_minor": 1}, headers=THERAPIST),
        402,
        "insufficient_funds",
    )
    earnings = (await http.get("/v1/earnings", headers=THERAPIST)).json()
    assert (earnings["available_minor"], earnings["withdrawing_minor"]) == (0, 600)

    error(await http.post(f"/v1/withdrawals/{w['id']}/paid", headers=OPERATOR), 409, "conflict")

    # The invoice comes in on Sunday 2025-10-19 at 23:30 UTC, which is already
    # Monday in London (BST): paid on Friday of the week after, 2025-10-31.
    world.clock.now = dt.datetime(2025, 10, 19, 23, 30, tzinfo=dt.UTC).timestamp()
    response = await http.post(f"/v1/withdrawals/{w['id']}/invoice", headers=OPERATOR)
    assert response.status_code == 200
    scheduled = response.json()["withdrawal"]
    assert scheduled["state"] == "scheduled" and scheduled["payout_date"] == "2025-10-31"
    assert scheduled["id"] == w["id"] and scheduled["created_at"] == w["created_at"]
    err = error(
        await http.post(f"/v1/withdrawals/{w['id']}/invoice", headers=OPERATOR), 409, "conflict"
    )
    assert err["state"] == "scheduled"

    response = await http.post(f"/v1/withdrawals/{w['id']}/paid", headers=OPERATOR)
    assert response.status_code == 200
    paid = response.json()["withdrawal"]
    assert paid["state"] == "paid" and paid["payout_date"] == "2025-10-31"
    error(await http.post(f"/v1/withdrawals/{w['id']}/paid", headers=OPERATOR), 409, "conflict")
    assert (await http.get("/v1/earnings", headers=THERAPIST)).json()["paid_out_minor"] == 600

    history = (await http.get("/v1/transactions", headers=THERAPIST)).json()["transactions"]
    assert [(e["kind"], e["amount_minor"]) for e in history] == [
        ("withdrawal", -600),
        ("earning", 600),
    ]
    check = await http.get("/v1/ledger/check", headers=OPERATOR)
    assert check.status_code == 200 and check.json()["balanced"] is True


async def test_unknown_and_malformed_withdrawal_ids(world: World) -> None:
    for action in ("invoice", "paid"):
        response = await world.http.post(f"/v1/withdrawals/wd_nope/{action}", headers=OPERATOR)
        error(response, 404, "not_found")
        response = await world.http.post(f"/v1/withdrawals/bad%20id/{action}", headers=OPERATOR)
        error(response, 422, "invalid_field")


async def test_listing_withdrawals(world: World) -> None:
    await give_therapist(world, 1000)
    mine = await world.ledger.request_withdrawal("t1", 100, T0)
    await world.ledger.request_withdrawal("t1", 200, T0 + 1)
    await world.ledger.invoice_received(mine.id, T0 + 2)

    own = (await world.http.get("/v1/withdrawals", headers=THERAPIST)).json()["withdrawals"]
    assert [w["amount_minor"] for w in own] == [200, 100]
    other = await world.http.get("/v1/withdrawals", headers=auth("therapist", "t2"))
    assert other.json() == {"withdrawals": [], "currency": "GBP"}
    # A therapist cannot look at another's by asking.
    sneaky = await world.http.get("/v1/withdrawals?therapist_id=t2", headers=THERAPIST)
    assert [w["amount_minor"] for w in sneaky.json()["withdrawals"]] == [200, 100]

    scheduled = await world.http.get("/v1/withdrawals?state=scheduled", headers=OPERATOR)
    assert [w["id"] for w in scheduled.json()["withdrawals"]] == [mine.id]
    by_t2 = await world.http.get("/v1/withdrawals?therapist_id=t2", headers=OPERATOR)
    assert by_t2.json() == {"withdrawals": [], "currency": "GBP"}
    response = await world.http.get("/v1/withdrawals?state=lost", headers=OPERATOR)
    assert error(response, 422, "invalid_field")["field"] == "state"


async def test_ledger_check_reports_damage(world: World) -> None:
    await give_therapist(world, 1000)
    async with world.ledger.db.engine.begin() as conn:
        await conn.exec_driver_sql(
            "UPDATE ledger_entries SET amount_minor = amount_minor + 1 "
            "WHERE account_id = 'platform:revenue'"
        )
    response = await world.http.get("/v1/ledger/check", headers=OPERATOR)
    assert response.status_code == 200
    report = response.json()
    assert report["balanced"] is False
    assert report["accounts_out_of_step"] == ["platform:revenue"]
    assert len(report["unbalanced_transactions"]) == 1


# -- in the real app ---------------------------------------------------------------------


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[TestClient]:
    if "ledger" not in {f.name for f in dataclasses.fields(AppContext)}:
        pytest.skip("the app does not carry a Ledger yet (AppContext.ledger)")
    from dispatch.app import create_app

    overrides = {
        "dev": True,
        "secret": SECRET,
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'dispatch.db'}",
    }
    with TestClient(create_app(load_settings(overrides, env={}))) as client:
        yield client


def test_the_app_serves_the_wallet(app_client: TestClient) -> None:
    body = {"client_id": "c1", "amount_minor": 1500, "reference": "pay_app"}
    created = app_client.post("/v1/wallet/topups", json=body, headers=OPERATOR)
    assert created.status_code == 201
    assert app_client.post("/v1/wallet/topups", json=body, headers=OPERATOR).status_code == 200
    wallet = app_client.get("/v1/wallet", headers=CLIENT)
    assert wallet.json() == {"balance_minor": 1500, "currency": "GBP", **WALLET_EXTRAS}
    assert app_client.get("/v1/wallet", headers=THERAPIST).status_code == 403
    assert app_client.get("/v1/earnings", headers=THERAPIST).json()["available_minor"] == 0
    assert app_client.get("/v1/ledger/check", headers=OPERATOR).json()["balanced"] is True
