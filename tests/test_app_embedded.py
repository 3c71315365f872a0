"""The app end to end in one process on its embedded (in-process) pool.

Starlette's TestClient drives the real ASGI app, websocket endpoint included;
no network. The multi-server behaviour is in tests/integration/.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from core.identity import mint
from dispatch.app import create_app
from dispatch.settings import load_settings

SECRET = "test-secret-" + "x" * 40
PROFILE = {
    "name": "Dr Test",
    "bio": "bio",
    "photo_url": "",
    "regions": ["GB-ENG"],
    "languages": ["en"],
    "topics": ["anxiety"],
    "works_with_minors": False,
}
DRAFT = {"region": "GB-ENG", "language": "en", "topics": ["anxiety"], "notes": "hello"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    overrides = {
        "dev": True,
        "secret": SECRET,
        "request_max_wait_s": 600.0,
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'dispatch.db'}",
    }
    settings = load_settings(overrides, env={})
    app = create_app(settings)
    with TestClient(app) as c:
        yield c


def token(role: str, sub: str, ttl: float = 600) -> str:
    return mint(SECRET, role, sub, ttl_s=ttl)


def auth(role: str, sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(role, sub)}"}


def expect(ws: Any, ftype: str, limit: int = 20) -> dict[str, Any]:
    """Receive frames until one of ``ftype`` arrives (bounded)."""
    for _ in range(limit):
        frame: dict[str, Any] = ws.receive_json()
        if frame["type"] == ftype:
            return frame
    raise AssertionError(f"no {ftype} frame within {limit} frames")


@contextlib.contextmanager
def connect(client: TestClient, role: str, sub: str) -> Iterator[Any]:
    with client.websocket_connect("/v1/ws", subprotocols=["qc.v1.json"]) as conn:
        conn.send_json({"type": "auth", "token": token(role, sub)})
        welcome = conn.receive_json()
        assert welcome == {"type": "welcome", "user": {"id": sub, "role": role}}
        yield conn


def fund(client: TestClient, cid: str, amount: int = 10_000) -> None:
    body = {"client_id": cid, "amount_minor": amount, "reference": f"fund-{cid}"}
    r = client.post("/v1/wallet/topups", json=body, headers=auth("operator", "op"))
    assert r.status_code in (200, 201), r.text


def put_therapist(client: TestClient, tid: str, **changes: Any) -> None:
    r = client.put(
        f"/v1/therapists/{tid}", json={**PROFILE, **changes}, headers=auth("operator", "op")
    )
    assert r.status_code in (200, 201), r.text


def test_talk_now_to_session(client: TestClient) -> None:
    put_therapist(client, "t1")
    with connect(client, "therapist", "t1") as t:
        _talk_now(client, t)


def _talk_now(client: TestClient, t: Any) -> None:
    assert expect(t, "pool.snapshot")["requests"] == []
    t.send_json({"type": "status", "available": True, "ref": "s1"})
    assert expect(t, "status.ok") == {"type": "status.ok", "available": True, "ref": "s1"}

    r = client.post("/v1/requests", json=DRAFT, headers=auth("client", "c1"))
    assert r.status_code == 402 and r.json()["error"]["code"] == "insufficient_funds"
    fund(client, "c1")
    r = client.post("/v1/requests", json=DRAFT, headers=auth("client", "c1"))
    assert r.status_code == 201, r.text
    req = r.json()["request"]
    assert req["state"] == "waiting" and req["position"] == 1
    new = expect(t, "request.new")
    assert new["request"]["id"] == req["id"]

    with connect(client, "client", "c1") as c:
        _claim_and_accept(client, t, c, req)


def _claim_and_accept(client: TestClient, t: Any, c: Any, req: dict[str, Any]) -> None:
    assert expect(c, "request.state")["request"]["position"] == 1

    t.send_json({"type": "claim", "request_id": req["id"], "ref": "c1"})
    ok = expect(t, "claim.ok")
    assert ok["ref"] == "c1" and ok["request_id"] == req["id"]
    state = expect(c, "request.state")["request"]
    assert state["state"] == "claimed" and state["claimed_by"] == "t1"
    offer = expect(c, "request.offer")
    assert offer["therapist"]["name"] == "Dr Test"

    c.send_json(
        {"type": "offer.accept", "request_id": req["id"], "terms_version": "v1", "ref": "a"}
    )
    ready_c = expect(c, "session.ready")
    ready_t = expect(t, "session.ready")
    assert ready_c["session"]["id"] == ready_t["session"]["id"]
    assert ready_c["ref"] == "a" and "ref" not in ready_t
    assert ready_c["session"]["state"] == "ready"
    got = client.get(f"/v1/requests/{req['id']}", headers=auth("client", "c1")).json()
    assert got["request"]["state"] == "matched"
    assert got["request"]["session_id"] == ready_c["session"]["id"]
    # In an open session a client may not ask for another therapist.
    again = client.post("/v1/requests", json=DRAFT, headers=auth("client", "c1"))
    assert again.status_code == 409 and again.json()["error"]["code"] == "request_exists"


def test_idempotency_and_conflict(client: TestClient) -> None:
    fund(client, "c2")
    h = {**auth("client", "c2"), "Idempotency-Key": "k-1"}
    a = client.post("/v1/requests", json=DRAFT, headers=h)
    b = client.post("/v1/requests", json=DRAFT, headers=h)
    assert a.status_code == b.status_code == 201
    assert a.json()["request"]["id"] == b.json()["request"]["id"]
    c = client.post("/v1/requests", json=DRAFT, headers=auth("client", "c2"))
    assert c.status_code == 409 and c.json()["error"]["code"] == "request_exists"


def test_http_errors_have_protocol_shape(client: TestClient) -> None:
    assert client.post("/v1/requests", json=DRAFT).status_code == 401
    r = client.post("/v1/requests", json=DRAFT, headers=auth("therapist", "t9"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = client.post("/v1/requests", json={**DRAFT, "age": 15}, headers=auth("client", "c3"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "consent_required"
    r = client.get("/v1/requests/nope", headers=auth("client", "c3"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.get("/v1/pool/stats", headers=auth("client", "c3"))
    assert r.status_code == 403
    r = client.get("/v1/pool/stats", headers=auth("operator", "op"))
    assert r.status_code == 200 and r.json()["waiting"] == 0
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert b"dispatch_pool_waiting" in client.get("/metrics").content


def test_bad_frames_keep_socket_open(client: TestClient) -> None:
    with connect(client, "client", "c4") as c:
        _bad_frames(c)


def _bad_frames(c: Any) -> None:
    c.send_text("not json")
    assert expect(c, "error")["code"] == "bad_message"
    c.send_json({"type": "nope", "ref": "r1"})
    err = expect(c, "error")
    assert err["code"] == "bad_message" and err["ref"] == "r1"
    c.send_json({"type": "claim", "request_id": "x", "ref": "r2"})
    err = expect(c, "error")
    assert err["code"] == "forbidden" and err["ref"] == "r2"
    c.send_json({"type": "ping", "ref": "p"})
    assert expect(c, "pong")["ref"] == "p"
    c.send_text("x" * (64 * 1024 + 1))
    with pytest.raises(WebSocketDisconnect) as info:
        for _ in range(5):
            c.receive_json()
    assert info.value.code == 1009


def test_bad_token_closes_4401(client: TestClient) -> None:
    with client.websocket_connect("/v1/ws") as ws:
        ws.send_json({"type": "auth", "token": "garbage"})
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_json()
        assert info.value.code == 4401
    expired = mint(SECRET, "client", "c5", ttl_s=1, now=time.time() - 100)
    with client.websocket_connect("/v1/ws") as ws:
        ws.send_json({"type": "auth", "token": expired})
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_json()
        assert info.value.code == 4401


def test_header_auth_and_msgpack(client: TestClient) -> None:
    with client.websocket_connect(
        "/v1/ws", subprotocols=["qc.v1.msgpack"], headers=auth("operator", "op")
    ) as ws:
        welcome = msgpack.unpackb(ws.receive_bytes())
        assert welcome["type"] == "welcome" and welcome["user"]["role"] == "operator"
        stats = msgpack.unpackb(ws.receive_bytes())
        assert stats["type"] == "pool.stats" and "wait_p95_s" in stats


def _matched(client: TestClient, t: Any, c: Any, cid: str, amount: int = 10_000) -> str:
    """Claim and accept a fresh request; returns the session id."""
    fund(client, cid, amount)
    r = client.post("/v1/requests", json=DRAFT, headers=auth("client", cid))
    rid = r.json()["request"]["id"]
    expect(t, "request.new")
    t.send_json({"type": "claim", "request_id": rid})
    expect(t, "claim.ok")
    expect(c, "request.offer")
    c.send_json({"type": "offer.accept", "request_id": rid, "terms_version": "v1"})
    sid: str = expect(c, "session.ready")["session"]["id"]
    assert expect(t, "session.ready")["session"]["id"] == sid
    return sid


def test_session_signaling_chat_notes_and_call_log(client: TestClient) -> None:
    put_therapist(client, "t7", name="Dr Seven")
    with connect(client, "therapist", "t7") as t, connect(client, "client", "c7") as c:
        expect(t, "pool.snapshot")
        t.send_json({"type": "status", "available": True})
        expect(t, "status.ok")
        sid = _matched(client, t, c, "c7")
        # A candidate sent before the peer joined is held, then delivered on its join.
        c.send_json({"type": "session.join", "session_id": sid, "ref": "j1"})
        joined = expect(c, "session.joined")
        assert joined["ref"] == "j1" and joined["peer_joined"] is False
        c.send_json({"type": "rtc.signal", "session_id": sid, "data": {"candidate": "x"}})
        t.send_json({"type": "session.join", "session_id": sid})
        assert expect(c, "session.peer_joined")["user_id"] == "t7"
        assert expect(t, "session.joined")["peer_joined"] is True
        held = t.receive_json()  # held frames come right after the join's answer
        assert held["type"] == "rtc.signal" and held["from"] == "c7"
        assert held["data"] == {"candidate": "x"}
        assert expect(t, "session.live")["session_id"] == sid
        t.send_json({"type": "rtc.signal", "session_id": sid, "data": {"sdp": "v=0"}})
        assert expect(c, "rtc.signal")["data"] == {"sdp": "v=0"}

        c.send_json({"type": "chat.send", "session_id": sid, "text": "hi", "client_msg_id": "m1"})
        msg = expect(t, "chat.message")
        assert msg["text"] == "hi" and msg["from"] == "c7"
        assert expect(c, "chat.message")["id"] == msg["id"]
        c.send_json({"type": "chat.send", "session_id": sid, "text": "hi", "client_msg_id": "m1"})
        assert expect(c, "chat.message")["id"] == msg["id"]  # a retry is stored once

        t.send_json({"type": "note.save", "session_id": sid, "text": "private", "ref": "n"})
        assert expect(t, "note.saved")["ref"] == "n"
        c.send_json({"type": "note.save", "session_id": sid, "text": "x", "ref": "n2"})
        assert expect(c, "error")["code"] == "forbidden"

        c.send_json({"type": "session.end", "session_id": sid})
        ended = expect(t, "session.ended")
        assert ended["reason"] == "ended_by_client" and ended["duration_s"] >= 0
        assert expect(c, "session.ended")["session_id"] == sid
        expect(t, "pool.snapshot")  # free again: the pool as it is now

    log = client.get("/v1/sessions", headers=auth("client", "c7")).json()["sessions"]
    assert [s["id"] for s in log] == [sid] and log[0]["name"] == "Dr Seven"
    tr = client.get(f"/v1/sessions/{sid}/transcript", headers=auth("client", "c7")).json()
    assert [m["text"] for m in tr["messages"]] == ["hi"]
    assert (
        client.get(f"/v1/sessions/{sid}/transcript", headers=auth("client", "c8")).status_code
        == 404
    )
    notes = client.get(f"/v1/sessions/{sid}/notes", headers=auth("therapist", "t7")).json()
    assert [n["text"] for n in notes["notes"]] == ["private"]
    assert client.get(f"/v1/sessions/{sid}/notes", headers=auth("client", "c7")).status_code == 403
    assert (
        client.get(f"/v1/sessions/{sid}/notes", headers=auth("therapist", "t8")).status_code == 404
    )


def test_intruder_gets_forbidden_for_every_session_frame(client: TestClient) -> None:
    put_therapist(client, "t9")
    with connect(client, "therapist", "t9") as t, connect(client, "client", "c9") as c:
        expect(t, "pool.snapshot")
        t.send_json({"type": "status", "available": True})
        expect(t, "status.ok")
        sid = _matched(client, t, c, "c9")
        with connect(client, "client", "intruder") as x:
            for frame in (
                {"type": "session.join", "session_id": sid},
                {"type": "rtc.signal", "session_id": sid, "data": {}},
                {"type": "chat.send", "session_id": sid, "text": "x", "client_msg_id": "m"},
                {"type": "session.end", "session_id": sid},
            ):
                x.send_json({**frame, "ref": frame["type"]})
                err = expect(x, "error")
                assert (err["code"], err["ref"]) == ("forbidden", frame["type"])
        tr = client.get(f"/v1/sessions/{sid}/transcript", headers=auth("client", "c9")).json()
        assert tr["messages"] == []


class FakeClock:
    """Wall-clock time plus a shift the test moves forward."""

    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.time() + self.shift


def test_billing_warns_ends_and_settles_once(tmp_path: Path) -> None:
    clock = FakeClock()
    overrides = {
        "dev": True,
        "secret": SECRET,
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'billing.db'}",
        "billing_tick_s": 0.05,
    }
    app = create_app(load_settings(overrides, env={}), clock=clock)
    with TestClient(app) as client:
        put_therapist(client, "tb")
        with connect(client, "therapist", "tb") as t, connect(client, "client", "cb") as c:
            expect(t, "pool.snapshot")
            t.send_json({"type": "status", "available": True})
            expect(t, "status.ok")
            # 1500 = exactly the 10 minutes at 150 a minute that the gate asks for.
            sid = _matched(client, t, c, "cb", amount=1500)
            c.send_json({"type": "session.join", "session_id": sid})
            t.send_json({"type": "session.join", "session_id": sid})
            expect(c, "session.live")
            clock.shift += 9 * 60 + 1
            low = expect(c, "session.funds_low")
            assert low["session_id"] == sid and 55 <= low["seconds_left"] <= 60
            assert expect(t, "session.funds_low")["session_id"] == sid
            clock.shift += 60
            ended = expect(c, "session.ended")
            assert ended["reason"] == "funds_exhausted" and ended["duration_s"] == 600
            assert expect(t, "session.ended")["reason"] == "funds_exhausted"

        wallet = client.get("/v1/wallet", headers=auth("client", "cb")).json()
        assert (wallet["balance_minor"], wallet["currency"]) == (0, "GBP")
        txs = client.get("/v1/transactions", headers=auth("client", "cb")).json()["transactions"]
        assert [(x["kind"], x["amount_minor"]) for x in txs] == [
            ("session_charge", -1500),
            ("topup", 1500),
        ]
        earnings = client.get("/v1/earnings", headers=auth("therapist", "tb")).json()
        assert earnings["available_minor"] == 900  # 60 % of 1500
        check = client.get("/v1/ledger/check", headers=auth("operator", "op")).json()
        assert check["balanced"] is True


def test_demo_mode_funds_demo_clients_once(tmp_path: Path) -> None:
    overrides = {
        "dev": True,
        "demo": True,
        "secret": SECRET,
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}",
    }
    for _ in range(2):  # a restart must not fund them again
        with TestClient(create_app(load_settings(overrides, env={}))) as client:
            wallet = client.get("/v1/wallet", headers=auth("client", "demo-client-1")).json()
            assert wallet["balance_minor"] == 10_000
            r = client.get("/v1/therapists/demo-therapist-1", headers=auth("client", "x"))
            assert r.status_code == 200


def test_a_top_up_during_a_call_moves_its_end(tmp_path: Path) -> None:
    clock = FakeClock()
    overrides = {
        "dev": True,
        "secret": SECRET,
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'topup.db'}",
        "billing_tick_s": 0.05,
    }
    with TestClient(create_app(load_settings(overrides, env={}), clock=clock)) as client:
        put_therapist(client, "tt")
        with connect(client, "therapist", "tt") as t, connect(client, "client", "ct") as c:
            expect(t, "pool.snapshot")
            t.send_json({"type": "status", "available": True})
            expect(t, "status.ok")
            sid = _matched(client, t, c, "ct", amount=1500)  # 10 minutes
            c.send_json({"type": "session.join", "session_id": sid})
            t.send_json({"type": "session.join", "session_id": sid})
            expect(c, "session.live")
            clock.shift += 9 * 60 + 1
            expect(c, "session.funds_low")
            body = {"client_id": "ct", "amount_minor": 1500, "reference": "more"}
            r = client.post("/v1/wallet/topups", json=body, headers=auth("operator", "op"))
            assert r.status_code == 201, r.text
            clock.shift += 10 * 60  # past the old end, before the new one
            low = expect(c, "session.funds_low")  # warned again before the new end
            assert low["seconds_left"] <= 60
            clock.shift += 60
            ended = expect(c, "session.ended")
            assert (ended["reason"], ended["duration_s"]) == ("funds_exhausted", 1200)
        wallet = client.get("/v1/wallet", headers=auth("client", "ct")).json()
        assert wallet["balance_minor"] == 0
