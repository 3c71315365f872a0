"""The websocket edge of a real server: codecs, bad frames, size limit, auth, rate limit."""

from __future__ import annotations

import asyncio
import json
import time

import msgpack
import pytest

from core.identity import mint

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


def _of(ws: WsClient, ftype: str) -> list[dict[str, object]]:
    return [f for f in ws.received if f.get("type") == ftype]


async def _settle(ws: WsClient, count: int, timeout_s: float = 5.0) -> None:
    """Wait until ``count`` pongs and errors have arrived, or the time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(_of(ws, "pong")) + len(_of(ws, "error")) >= count:
            return
        await asyncio.sleep(0.05)


async def test_a_burst_over_the_rate_gets_one_answer_then_silence(
    start_cluster: StartCluster,
) -> None:
    """The first refused frame is answered rate_limited (its ref echoed); the rest are
    dropped unanswered until the client pauses as long as the bucket takes to refill."""
    burst, rate = 5, 2.0  # the bucket refills in 2.5 s
    c = await start_cluster(1, ws_rate_burst=burst, ws_rate_per_s=rate, ws_flood_close_s=60.0)
    ws = await c.client(c[0], "c1")
    for i in range(30):
        await ws.send({"type": "ping", "ref": f"r{i}"})
    await _settle(ws, 30, timeout_s=1.5)  # all 30 will never come: that is the point
    pongs, errors = _of(ws, "pong"), _of(ws, "error")
    assert burst <= len(pongs) <= burst + 2, len(pongs)
    assert len(errors) == 1 and errors[0]["code"] == "rate_limited"
    assert errors[0]["ref"] == f"r{len(pongs)}"  # the first refused frame's ref
    # A pause as long as the refill: the next burst is served, and one new answer.
    await asyncio.sleep(burst / rate + 0.3)
    for i in range(30, 40):
        await ws.send({"type": "ping", "ref": f"r{i}"})
    await asyncio.sleep(1.0)
    assert len(_of(ws, "error")) == 2
    assert len(_of(ws, "pong")) >= len(pongs) + burst
    await asyncio.sleep(burst / rate + 0.3)
    await _still_open(ws, "later")
    assert ws.close_code is None


async def test_a_sustained_flood_costs_no_answers_and_is_closed_1008(
    start_cluster: StartCluster,
) -> None:
    """The attack of issue #10: 45 frames every 60 ms. Served at the rate (burst 40, then
    20 a second), one rate_limited answer in all, and closed once the flood has lasted
    ws_flood_close_s."""
    c = await start_cluster(1, ws_flood_close_s=3.0)  # the default rate: 20/s, burst 40
    ws = await c.client(c[0], "c1")
    sent, start = 0, time.monotonic()
    closed_after: float | None = None
    while time.monotonic() - start < 6.0:
        try:
            for _ in range(45):
                await ws.send({"type": "ping", "ref": f"f{sent}"})
                sent += 1
        except Exception:  # the server closed the socket under us
            closed_after = time.monotonic() - start
            break
        await asyncio.sleep(0.06)
        if ws.close_code is not None:
            closed_after = time.monotonic() - start
            break
    code = await ws.wait_closed(5)
    assert code == 1008
    assert closed_after is not None and 2.5 <= closed_after <= 5.0, closed_after
    pongs, errors = _of(ws, "pong"), _of(ws, "error")
    assert len(errors) == 1 and errors[0]["code"] == "rate_limited"
    # ~40 + 20/s for ~3 s are served; the other thousands cost no answer.
    assert 40 <= len(pongs) <= 40 + 20 * 5, len(pongs)
    assert sent > 1000, sent


async def test_before_auth_only_auth_is_read(start_cluster: StartCluster) -> None:
    c = await start_cluster(1)
    # A few stray frames: the first is answered, the rest are not; auth still works.
    ws = await c.ws(c[0], "strays")
    for i in range(3):
        await ws.send({"type": "ping", "ref": f"p{i}"})
    await ws.send_raw("{not json")
    welcome = await ws.auth(token("client", "c1"))
    assert welcome["type"] == "welcome"
    errors = _of(ws, "error")
    assert [(e["code"], e["ref"]) for e in errors] == [("unauthorized", "p0")]
    assert not _of(ws, "pong")
    # More strays than allowed before auth: closed 1008 without an answer each.
    flood = await c.ws(c[0], "flood")
    for i in range(50):
        try:
            await flood.send({"type": "ping", "ref": f"q{i}"})
        except Exception:
            break
    assert await flood.wait_closed(5) == 1008
    assert len(_of(flood, "error")) == 1
