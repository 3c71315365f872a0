"""The websocket edge of a real server: codecs, bad frames, size limit, auth, rate limit."""

from __future__ import annotations

import asyncio
import json
import time

import msgpack
import pytest

from dispatch.tokens import mint

from .harness import JSON, MSGPACK, SECRET, StartCluster, WsClient, about, token

pytestmark = pytest.mark.integration


async def _still_open(ws: WsClient, ref: str) -> None:
    """A ping gets its pong: the socket is open and served."""
    await ws.send({"type": "ping", "ref": ref})
    pong = await ws.expect("pong", predicate=lambda f: f.get("ref") == ref)
    assert pong["ref"] == ref


async def test_malformed_frames_get_bad_message_and_the_socket_stays_open(
    start_cluster: StartCluster,
) -> None:
    c = await start_cluster(1)
    ws = await c.client(c[0], "c1")

    cases: list[tuple[str, str | bytes]] = [
        ("not json", "{not json"),
        ("json array", "[1, 2, 3]"),
        ("json string", '"auth"'),
        ("no type", json.dumps({"request_id": "r1"})),
        ("unknown type", json.dumps({"type": "teleport", "ref": "u1"})),
        ("bad field", json.dumps({"type": "offer.decline", "request_id": ["x"], "ref": "b1"})),
        ("missing field", json.dumps({"type": "offer.accept", "request_id": "r1", "ref": "m1"})),
        ("binary on json", msgpack.packb({"type": "ping"})),
    ]
    for i, (what, raw) in enumerate(cases):
        await ws.send_raw(raw)
        err = await ws.expect("error", 5)
        assert err["code"] == "bad_message", what
        assert isinstance(err["message"], str) and err["message"], what
        await _still_open(ws, f"after-{i}")
    refs = {f.get("ref") for f in ws.received if f.get("type") == "error"}
    assert {"u1", "b1", "m1"} <= refs
    assert ws.close_code is None


async def test_frame_over_64_kib_closes_with_1009(start_cluster: StartCluster) -> None:
    c = await start_cluster(1)
    ws = await c.client(c[0], "c1")
    # Just under the limit is served...
    await ws.send({"type": "ping", "ref": "big", "pad": "x" * (60 * 1024)})
    await ws.expect("pong", predicate=lambda f: f.get("ref") == "big")
    # ...over it closes the socket.
    await ws.send({"type": "ping", "ref": "huge", "pad": "x" * (64 * 1024 + 1)})
    assert await ws.wait_closed(5) == 1009
    assert not any(f.get("ref") == "huge" for f in ws.received)

    # Before auth too.
    raw = await c.ws(c[0], "unauthenticated")
    await raw.send({"type": "auth", "token": "x" * (65 * 1024)})
    assert await raw.wait_closed(5) == 1009


async def test_msgpack_round_trip(start_cluster: StartCluster) -> None:
    c = await start_cluster(2)
    a, b = c[0], c[1]
    await c.put_therapist(a, "t1")
    t1 = await c.ws(a, "t1-msgpack", subprotocol=MSGPACK)
    assert t1.conn.subprotocol == MSGPACK
    welcome = await t1.auth(token("therapist", "t1"))
    assert welcome["user"] == {"id": "t1", "role": "therapist"}
    await t1.expect("pool.snapshot")
    await t1.send({"type": "status", "available": True, "ref": "s1"})
    assert (await t1.expect("status.ok"))["ref"] == "s1"

    client = await c.ws(b, "c1-json", subprotocol=JSON)
    assert client.conn.subprotocol == JSON
    await client.auth(token("client", "c1"))
    rid = (await c.create_request(b, "c1", notes="naïve café ☕"))["id"]
    new = await t1.expect("request.new", predicate=about(rid))
    assert new["request"]["notes"] == "naïve café ☕"
    await t1.send({"type": "claim", "request_id": rid, "ref": "k1"})
    ok = await t1.expect("claim.ok")
    assert ok["ref"] == "k1"
    offer = await client.expect("request.offer", predicate=about(rid))
    assert offer["therapist"]["id"] == "t1"

    # Binary frames both ways on msgpack; text frames on JSON.
    assert set(t1.message_kinds) == {"binary"}
    assert set(client.message_kinds) == {"text"}
    # A text frame is the wrong kind on msgpack, and is answered, not fatal.
    await t1.send_raw(json.dumps({"type": "ping"}))
    err = await t1.expect("error")
    assert err["code"] == "bad_message"
    await _still_open(t1, "mp-ping")

    # With no subprotocol offered the server speaks JSON.
    plain = await c.ws(a, "no-subprotocol", subprotocol=None)
    assert plain.conn.subprotocol is None
    await plain.auth(token("client", "c9"))
    assert set(plain.message_kinds) == {"text"}


async def test_authentication(start_cluster: StartCluster) -> None:
    c = await start_cluster(1, auth_timeout_s=1.0)
    s = c[0]

    forged = mint("another-secret-of-at-least-32-bytes!!", "client", "c1")
    expired = mint(SECRET, "client", "c1", ttl_s=60, now=time.time() - 3600)
    for what, tok in (("forged", forged), ("expired", expired), ("garbage", "not.a.jwt")):
        ws = await c.ws(s, what)
        await ws.send({"type": "auth", "token": tok})
        assert await ws.wait_closed(5) == 4401, what
        assert not any(f.get("type") == "welcome" for f in ws.received), what

    # Silence: closed with 4408 once the auth timeout passes, not before.
    start = time.monotonic()
    idle = await c.ws(s, "silent")
    assert await idle.wait_closed(5) == 4408
    assert time.monotonic() - start >= 0.8

    # The header on the upgrade request authenticates without an auth frame.
    header = await c.ws(s, "header", bearer=token("therapist", "t1"))
    welcome = await header.expect("welcome")
    assert welcome["user"] == {"id": "t1", "role": "therapist"}
    await header.expect("pool.snapshot")
    await _still_open(header, "h1")
    bad_header = await c.ws(s, "bad-header", bearer=forged)
    assert await bad_header.wait_closed(5) == 4401


async def test_burst_over_the_rate_limit_is_refused(start_cluster: StartCluster) -> None:
    burst = 5
    c = await start_cluster(1, ws_rate_burst=burst, ws_rate_per_s=2.0)
    ws = await c.client(c[0], "c1")
    n = 30
    for i in range(n):
        await ws.send({"type": "ping", "ref": f"r{i}"})
    # Every frame is answered: a pong or a rate_limited error.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        answered = [f for f in ws.received if f.get("type") in ("pong", "error")]
        if len(answered) >= n:
            break
        await asyncio.sleep(0.05)
    pongs = [f for f in ws.received if f.get("type") == "pong"]
    limited = [f for f in ws.received if f.get("type") == "error"]
    assert {f["code"] for f in limited} == {"rate_limited"}
    assert len(pongs) + len(limited) == n
    assert burst <= len(pongs) <= burst + 3, len(pongs)
    assert len(limited) >= n - burst - 3
    # The socket stays open and the bucket refills.
    await asyncio.sleep(1.0)
    await _still_open(ws, "later")
    assert ws.close_code is None


async def test_rate_limited_error_echoes_the_ref(start_cluster: StartCluster) -> None:
    """PROTOCOL.md §5: "the answer to it, and any error it causes, echo that ref"."""
    c = await start_cluster(1, ws_rate_burst=2, ws_rate_per_s=1.0)
    ws = await c.client(c[0], "c1")
    for i in range(6):
        await ws.send({"type": "ping", "ref": f"r{i}"})
    errors = [await ws.expect("error", 5) for _ in range(3)]
    assert all(e["code"] == "rate_limited" for e in errors)
    assert all(e["ref"] is not None and e["ref"].startswith("r") for e in errors), errors
