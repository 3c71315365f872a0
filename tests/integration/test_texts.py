"""Texts to therapists who are away (PROTOCOL.md §7) across real server
processes on one Redis and one PostgreSQL database, sent to a loopback Twilio
stand-in: exactly one text per (request, therapist), whatever crashes."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from .harness import Cluster, ServerProcess, StartCluster, serve_asgi, token

pytestmark = pytest.mark.integration

SID, AUTH = "AC" + "1" * 32, "integration-twilio-token"
PUBLIC = "https://care.example.com"
PHONE = "+447700900123"


@dataclass
class Twilio:
    """Twilio's Messages API as far as a text goes. ``script`` says how to
    answer each request in turn: ``"hang"`` (never, until the test ends:
    Twilio did not take it), an HTTP status, or nothing left: 201. Only a 201
    creates a message."""

    script: list[str | int] = field(default_factory=list)
    attempts: int = 0
    created: list[dict[str, str]] = field(default_factory=list)
    hanging: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def messages(self, request: Request) -> Response:
        expected = "Basic " + base64.b64encode(f"{SID}:{AUTH}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return JSONResponse({"code": 20003, "message": "Authenticate", "status": 401}, 401)
        form = dict(parse_qsl((await request.body()).decode()))
        self.attempts += 1
        action = self.script.pop(0) if self.script else 201
        if action == "hang":
            self.hanging.set()
            await self.release.wait()
            return Response(status_code=503)
        if action != 201:
            status = int(action)
            body = {"code": 20500 if status >= 500 else 21211, "message": "no", "status": status}
            return JSONResponse(body, status_code=status)
        self.created.append(form)
        sid = f"SM{len(self.created):032d}"
        return JSONResponse({"sid": sid, "status": "queued", "account_sid": SID}, 201)


@pytest_asyncio.fixture
async def twilio() -> AsyncIterator[Twilio]:
    stand_in = Twilio()
    app = Starlette(
        routes=[
            Route(f"/2010-04-01/Accounts/{SID}/Messages.json", stand_in.messages, methods=["POST"])
        ]
    )
    async with serve_asgi(app) as url:
        stand_in.url = url
        try:
            yield stand_in
        finally:
            stand_in.release.set()  # a hanging answer ends before the server stops


@pytest.fixture
def texting(twilio: Twilio, request: pytest.FixtureRequest) -> dict[str, object]:
    """Settings that turn texting on against the stand-in, on a shared PostgreSQL."""
    url: str = request.getfixturevalue("database_url_pg")
    return {
        "twilio_account_sid": SID,
        "twilio_auth_token": AUTH,
        "twilio_from": "+15005550006",
        "twilio_api_url": twilio.url,
        "public_url": PUBLIC,
        "database_url": url,
        # A short lease: a dead server's row goes to another within seconds
        # (the send timeout is a third of it).
        "outbox_lease_s": 4.5,
    }


@pytest.fixture
def database_url_pg(postgres_server_url: str) -> str:
    from conftest import _pg_reset

    _pg_reset(postgres_server_url)
    return postgres_server_url


async def _away_therapist(cluster: Cluster, server: ServerProcess, tid: str) -> None:
    """A therapist who takes texts and has no console open."""
    await cluster.put_therapist(server, tid)
    resp = await cluster.call(
        server,
        "PATCH",
        f"/v1/therapists/{tid}",
        token("therapist", tid),
        {"phone": PHONE, "sms_opt_in": True},
    )
    assert resp.status_code == 200, resp.text


async def _texts(cluster: Cluster, server: ServerProcess, request_id: str) -> list[dict[str, Any]]:
    resp = await cluster.call(
        server, "GET", f"/v1/texts?request_id={request_id}", token("operator", "op")
    )
    assert resp.status_code == 200, resp.text
    texts: list[dict[str, Any]] = resp.json()["texts"]
    return texts


async def _until(check: Any, timeout_s: float = 20.0) -> Any:
    """Poll ``check()`` (async) until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        got = await check()
        if got:
            return got
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_a_server_killed_between_taking_a_text_and_sending_it(
    start_cluster: StartCluster, twilio: Twilio, texting: dict[str, object]
) -> None:
    # Server A alone takes the text, and dies while Twilio has not answered.
    twilio.script = ["hang"]
    first = await start_cluster(1, **texting)
    a = first[0]
    await _away_therapist(first, a, "t-away")
    req = await first.create_request(a, "c-kill")
    await asyncio.wait_for(twilio.hanging.wait(), 15)
    a.kill()
    assert twilio.created == []
    # Server B, on the same Redis and database, sends it once the lease passes.
    second = await start_cluster(1, **texting)
    b = second[0]

    async def sent() -> list[dict[str, Any]]:
        texts = await _texts(second, b, req["id"])
        return texts if texts and texts[0]["state"] == "sent" else []

    texts = await _until(sent)
    assert len(texts) == 1 and texts[0]["therapist_id"] == "t-away"
    assert [m["To"] for m in twilio.created] == [PHONE]
    assert twilio.created[0]["Body"] == (
        f"Someone is waiting on quick connect. Open your console: {PUBLIC}/console"
    )
    assert twilio.created[0]["StatusCallback"] == f"{PUBLIC}/v1/twilio/status"
    assert texts[0]["sid"] == "SM" + "1".zfill(32)
    # Nothing more goes out, from either lifetime of the service.
    await asyncio.sleep(2)
    assert len(twilio.created) == 1 and twilio.attempts == 2


async def test_twilio_answering_500_twice_still_sends_one_text_and_reports(
    start_cluster: StartCluster, twilio: Twilio, texting: dict[str, object]
) -> None:
    twilio.script = [500, 500]
    cluster = await start_cluster(2, **texting)
    a, b = cluster[0], cluster[1]
    await _away_therapist(cluster, a, "t-1")
    # t-2 has its console open and available: it sees the request live, no text.
    await cluster.put_therapist(a, "t-2")
    await cluster.therapist(b, "t-2")
    ops = await cluster.operator(b, "op")
    req = await cluster.create_request(b, "c-500")

    async def sent() -> list[dict[str, Any]]:
        texts = await _texts(cluster, a, req["id"])
        return texts if texts and texts[0]["state"] == "sent" else []

    texts = await _until(sent, 30)
    assert [t["therapist_id"] for t in texts] == ["t-1"]
    assert twilio.attempts == 3 and len(twilio.created) == 1
    # Twilio reports delivery to either server, signed; the list and the stats show it.
    sid = texts[0]["sid"]
    form = {"MessageSid": sid, "MessageStatus": "delivered"}
    signature = RequestValidator(AUTH).compute_signature(f"{PUBLIC}/v1/twilio/status", form)
    resp = await cluster.http(b).post(
        "/v1/twilio/status", data=form, headers={"X-Twilio-Signature": signature}
    )
    assert resp.status_code == 204
    assert (await _texts(cluster, a, req["id"]))[0]["state"] == "delivered"
    stats = await cluster.call(a, "GET", "/v1/pool/stats", token("operator", "op"))
    assert (stats.json()["texts_sent_15m"], stats.json()["texts_failed_15m"]) == (1, 0)
    frame = await ops.expect("pool.stats", 5, lambda f: f.get("texts_sent_15m") == 1)
    assert frame["texts_failed_15m"] == 0
    await asyncio.sleep(1.5)
    assert len(twilio.created) == 1


async def test_a_refused_number_fails_once_and_gets_no_more_texts(
    start_cluster: StartCluster, twilio: Twilio, texting: dict[str, object]
) -> None:
    twilio.script = [400]
    cluster = await start_cluster(2, **texting, sms_cooldown_s=1.0)
    a, b = cluster[0], cluster[1]
    await _away_therapist(cluster, a, "t-bad")

    async def failed() -> list[dict[str, Any]]:
        texts = await _texts(cluster, a, first["id"])
        return texts if texts and texts[0]["state"] == "failed" else []

    first = await cluster.create_request(b, "c-1")
    await _until(failed)
    assert twilio.attempts == 1
    stats = await cluster.call(b, "GET", "/v1/pool/stats", token("operator", "op"))
    assert stats.json()["texts_failed_15m"] == 1
    # The phone is flagged: a later request texts nobody, past the cooldown.
    second = await cluster.create_request(a, "c-2")
    await asyncio.sleep(2.5)
    assert await _texts(cluster, b, second["id"]) == [] and twilio.attempts == 1
    # A new number clears the flag.
    resp = await cluster.call(
        a,
        "PATCH",
        "/v1/therapists/t-bad",
        token("therapist", "t-bad"),
        {"phone": "+447700900456"},
    )
    assert resp.status_code == 200

    async def texted() -> list[dict[str, Any]]:
        return await _texts(cluster, b, second["id"])

    assert [t["therapist_id"] for t in await _until(texted)] == ["t-bad"]
