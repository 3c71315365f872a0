"""Tokens that expire on an open socket (PROTOCOL.md §11), and their refresh over HTTP.

The embedded app (Starlette's TestClient, the in-process pool) with the
warning lead shortened to 2 s, so that a token of a few seconds shows the
whole cycle: ``auth.expiring``, a new ``auth``, ``auth.ok``; or 4401 at
``exp``, with the therapist's claim held for the reconnect grace.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from test_app_embedded import DRAFT, PROFILE

from core.errors import Unauthorized
from core.identity import mint, refresh, verify
from dispatch.app import create_app
from dispatch.settings import load_settings

SECRET = "expiry-test-secret-" + "x" * 40
LEAD_S = 2.0


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    overrides = {
        "dev": True,
        "secret": SECRET,
        "auth_expiring_s": LEAD_S,
        "reconnect_grace_s": 30.0,
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'dispatch.db'}",
    }
    with TestClient(create_app(load_settings(overrides, env={}))) as c:
        yield c


def _headers(role: str, sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(SECRET, role, sub, ttl_s=600)}"}


def _exp(token: str) -> float:
    exp: float = jwt.decode(token, options={"verify_signature": False})["exp"]
    return exp


def _at(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def _expect(ws: Any, ftype: str, limit: int = 20) -> dict[str, Any]:
    for _ in range(limit):
        frame: dict[str, Any] = ws.receive_json()
        if frame["type"] == ftype:
            return frame
    raise AssertionError(f"no {ftype} frame within {limit} frames")


def _closed_with(ws: Any) -> int:
    with pytest.raises(WebSocketDisconnect) as info:
        for _ in range(50):
            ws.receive_json()
    code: int = info.value.code
    return code


@contextlib.contextmanager
def _socket(client: TestClient, token: str) -> Iterator[Any]:
    with client.websocket_connect("/v1/ws", subprotocols=["qc.v1.json"]) as ws:
        ws.send_json({"type": "auth", "token": token})
        assert _expect(ws, "welcome")["type"] == "welcome"
        yield ws


def test_expiring_then_a_new_token_keeps_the_socket(client: TestClient) -> None:
    short = mint(SECRET, "client", "c1", ttl_s=4)
    with _socket(client, short) as ws:
        warned = _expect(ws, "auth.expiring")
        assert _at(warned["expires_at"]) == _exp(short)
        assert time.time() >= _exp(short) - LEAD_S - 0.5  # not long before the lead
        fresh = mint(SECRET, "client", "c1", ttl_s=3600)
        ws.send_json({"type": "auth", "token": fresh, "ref": "re"})
        ok = _expect(ws, "auth.ok")
        assert ok == {"type": "auth.ok", "expires_at": ok["expires_at"], "ref": "re"}
        assert _at(ok["expires_at"]) == _exp(fresh)
        time.sleep(max(0.0, _exp(short) - time.time()) + 0.5)  # past the old exp
        ws.send_json({"type": "ping", "ref": "p"})
        assert _expect(ws, "pong")["ref"] == "p"  # still open, on the new token


def test_welcome_comes_first_for_a_token_already_in_its_warning_lead(
    client: TestClient,
) -> None:
    token = mint(SECRET, "client", "c-soon", ttl_s=1)  # inside the 2 s lead at once
    with client.websocket_connect("/v1/ws", subprotocols=["qc.v1.json"]) as ws:
        ws.send_json({"type": "auth", "token": token})
        assert ws.receive_json()["type"] == "welcome"  # the answer to auth, first
        assert _at(_expect(ws, "auth.expiring")["expires_at"]) == pytest.approx(_exp(token))


def test_no_new_token_closes_4401_at_exp(client: TestClient) -> None:
    short = mint(SECRET, "client", "c2", ttl_s=3)
    with _socket(client, short) as ws:
        _expect(ws, "auth.expiring")
        assert _closed_with(ws) == 4401
        assert time.time() >= _exp(short) - 0.2


@pytest.mark.parametrize(
    "other",
    [
        mint(SECRET, "client", "someone-else", ttl_s=3600),
        mint(SECRET, "therapist", "c3", ttl_s=3600),
        mint("another-secret-" + "y" * 40, "client", "c3", ttl_s=3600),
        "garbage",
    ],
)
def test_a_token_for_someone_else_or_bad_closes_4401(client: TestClient, other: str) -> None:
    with _socket(client, mint(SECRET, "client", "c3", ttl_s=3600)) as ws:
        ws.send_json({"type": "auth", "token": other, "ref": "re"})
        assert _closed_with(ws) == 4401


def test_a_claim_survives_an_expired_socket_for_the_grace(client: TestClient) -> None:
    assert client.put(
        "/v1/therapists/t1", json=PROFILE, headers=_headers("operator", "op")
    ).is_success
    client.post(
        "/v1/wallet/topups",
        json={"client_id": "c9", "amount_minor": 10_000, "reference": "f-c9"},
        headers=_headers("operator", "op"),
    ).raise_for_status()
    rid = client.post("/v1/requests", json=DRAFT, headers=_headers("client", "c9")).json()[
        "request"
    ]["id"]
    with _socket(client, mint(SECRET, "therapist", "t1", ttl_s=3)) as t:
        t.send_json({"type": "status", "available": True, "ref": "s"})
        _expect(t, "status.ok")
        t.send_json({"type": "claim", "request_id": rid, "ref": "c"})
        assert _expect(t, "claim.ok")["request_id"] == rid
        assert _closed_with(t) == 4401
    got = client.get(f"/v1/requests/{rid}", headers=_headers("client", "c9")).json()["request"]
    assert (got["state"], got["claimed_by"]) == ("claimed", "t1")  # held for the grace
    with _socket(client, mint(SECRET, "therapist", "t1", ttl_s=3600)) as t:
        # Still this therapist's claim: only the claimer may release it.
        t.send_json({"type": "claim.release", "request_id": rid, "ref": "r"})
        assert _expect(t, "claim.released", limit=30)["request_id"] == rid


# -- POST /v1/auth/refresh ---------------------------------------------------------------


def test_refresh_gives_a_token_for_the_same_user(client: TestClient) -> None:
    old = mint(SECRET, "therapist", "t7", name="Dr Seven", ttl_s=600, now=time.time() - 60)
    r = client.post("/v1/auth/refresh", headers={"Authorization": f"Bearer {old}"})
    assert r.status_code == 200, r.text
    body = r.json()
    user = verify(SECRET, body["token"])
    assert (user.id, user.role, user.name) == ("t7", "therapist", "Dr Seven")
    assert _at(body["expires_at"]) == user.expires_at
    assert user.expires_at is not None and user.expires_at > _exp(old)  # a full lifetime again


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer garbage",
        "Bearer " + mint(SECRET, "client", "c", ttl_s=1, now=time.time() - 10),
    ],
)
def test_refresh_needs_a_valid_token(client: TestClient, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    r = client.post("/v1/auth/refresh", headers=headers)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


def test_refresh_never_outlives_the_sign_in_by_more_than_the_max_age() -> None:
    now = 1_900_000_000.0
    first = mint(SECRET, "client", "c", ttl_s=3600, now=now)
    # Refreshed again and again, an hour each time, the chain ends at the max age.
    token, t = first, now
    for _ in range(4):  # at +3000, +6000, +9000, +12000 s; the last one capped
        t += 3000
        token = refresh(SECRET, token, max_age_s=4 * 3600, now=t)
        user = verify(SECRET, token, now=t)
        assert user.auth_time == now
        assert user.expires_at is not None and user.expires_at <= now + 4 * 3600
    assert user.expires_at == now + 4 * 3600
    with pytest.raises(Unauthorized, match="sign in again"):
        refresh(SECRET, token, max_age_s=4 * 3600, now=now + 4 * 3600 - 0.5)
