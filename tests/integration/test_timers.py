"""Deadlines and graces fire across servers, and survive the server that armed them."""

from __future__ import annotations

import asyncio

import pytest

from .harness import StartCluster, about

pytestmark = pytest.mark.integration


async def test_max_wait_expires_a_waiting_request(start_cluster: StartCluster) -> None:
    c = await start_cluster(2, request_max_wait_s=1.0)
    a, b = c[0], c[1]
    await c.put_therapist(a, "t1")
    t1 = await c.therapist(a, "t1")
    client = await c.client(b, "c1")
    rid = (await c.create_request(b, "c1"))["id"]
    await t1.expect("request.new", predicate=about(rid))

    gone = await t1.expect("request.gone", 5, about(rid))
    assert gone["reason"] == "expired"
    state = await client.expect(
        "request.state", 5, lambda f: about(rid)(f) and f["request"]["state"] == "expired"
    )
    assert state["request"]["reason"] == "no_therapist"
    resp = await c.get_request(a, rid, ("client", "c1"))
    assert resp.json()["request"]["state"] == "expired"
    await t1.send({"type": "claim", "request_id": rid, "ref": "late"})
    err = await t1.expect("error", predicate=lambda f: f["ref"] == "late")
    assert err["code"] == "not_found"


async def test_confirm_timeout_expires_a_claim(start_cluster: StartCluster) -> None:
    c = await start_cluster(2, claim_confirm_timeout_s=1.0)
    a, b = c[0], c[1]
    await c.put_therapist(a, "t1")
    t1 = await c.therapist(a, "t1")
    client = await c.client(b, "c1")
    rid = (await c.create_request(b, "c1"))["id"]
    await t1.expect("request.new", predicate=about(rid))
    await t1.send({"type": "claim", "request_id": rid})
    await t1.expect("claim.ok")
    await client.expect("request.offer", predicate=about(rid))

    expired = await t1.expect("claim.expired", 5)
    assert expired["request_id"] == rid
    state = await client.expect("request.state", 5, lambda f: f["request"]["state"] == "expired")
    assert state["request"]["reason"] == "client_no_response"
    # Too late to accept; the therapist is free again.
    await client.send(
        {"type": "offer.accept", "request_id": rid, "terms_version": "v1", "ref": "late"}
    )
    err = await client.expect("error", predicate=lambda f: f["ref"] == "late")
    assert err["code"] in ("taken", "not_found")
    r2 = (await c.create_request(b, "c2"))["id"]
    await t1.expect("request.new", predicate=about(r2))


async def test_therapist_reconnecting_within_the_grace_keeps_its_claim(
    start_cluster: StartCluster,
) -> None:
    grace = 2.0
    c = await start_cluster(2, reconnect_grace_s=grace)
    a, b = c[0], c[1]
    await c.put_therapist(a, "t1")
    t1 = await c.therapist(a, "t1")
    client = await c.client(b, "c1")
    rid = (await c.create_request(b, "c1"))["id"]
    await t1.expect("request.new", predicate=about(rid))
    await t1.send({"type": "claim", "request_id": rid})
    first = await t1.expect("claim.ok")

    await t1.close()
    # A reconnect may reach any server.
    again = await c.therapist(b, "t1", available=False)
    ok = await again.expect("claim.ok", 5)
    assert ok["request_id"] == rid
    assert ok["expires_at"] == first["expires_at"]

    # Well past the grace the claim still stands.
    await asyncio.sleep(grace + 1.0)
    # (The request.state of the creation, reason None, is still unconsumed.)
    await client.no_frame_of(
        "request.state", 0.1, lambda f: f["request"]["reason"] not in (None, "claimed")
    )
    resp = await c.get_request(a, rid, ("client", "c1"))
    assert resp.json()["request"]["state"] == "claimed"
    assert resp.json()["request"]["claimed_by"] == "t1"


async def test_therapist_gone_past_the_grace_loses_its_claim(
    start_cluster: StartCluster,
) -> None:
    grace = 1.0
    c = await start_cluster(2, reconnect_grace_s=grace)
    a, b = c[0], c[1]
    await c.put_therapist(a, "t1")
    await c.put_therapist(a, "t2")
    t1 = await c.therapist(a, "t1")
    t2 = await c.therapist(b, "t2")
    client = await c.client(b, "c1")
    rid = (await c.create_request(b, "c1"))["id"]
    await t1.expect("request.new", predicate=about(rid))
    await t1.send({"type": "claim", "request_id": rid})
    await t1.expect("claim.ok")
    await t2.expect("request.gone", predicate=about(rid))

    t1.abort()  # the network is lost: no close handshake
    back = await client.expect(
        "request.state",
        grace + 5,
        lambda f: f["request"]["state"] == "waiting" and f["request"]["reason"] == "therapist_lost",
    )
    assert back["request"]["claimed_by"] is None
    new = await t2.expect("request.new", 5, about(rid))
    assert new["request"]["state"] == "waiting"
    # Coming back later gives no claim.
    t1b = await c.therapist(a, "t1", available=False)
    await t1b.no_frame_of("claim.ok", 0.5)


async def test_claim_timer_fires_after_its_server_is_killed(
    start_cluster: StartCluster,
) -> None:
    confirm = 3.0
    # A long grace: what ends the claim must be its own timer, not the grace.
    c = await start_cluster(2, claim_confirm_timeout_s=confirm, reconnect_grace_s=30.0)
    a, b = c[0], c[1]
    await c.put_therapist(a, "t1")
    t1 = await c.therapist(a, "t1")
    client = await c.client(a, "c1")
    rid = (await c.create_request(a, "c1"))["id"]
    await t1.expect("request.new", predicate=about(rid))
    await t1.send({"type": "claim", "request_id": rid})
    ok = await t1.expect("claim.ok")
    await client.expect("request.offer", predicate=about(rid))

    a.kill()
    assert a.returncode is not None
    # The client lands on B before the deadline: it is told where it stands...
    client_b = await c.client(b, "c1")
    state = await client_b.expect("request.state", 5, about(rid))
    assert state["request"]["state"] == "claimed"
    offer = await client_b.expect("request.offer", 5, about(rid))
    assert offer["expires_at"] == ok["expires_at"]
    # ...and B fires the timer A armed.
    expired = await client_b.expect(
        "request.state", confirm + 5, lambda f: f["request"]["state"] == "expired"
    )
    assert expired["request"]["reason"] == "client_no_response"
    resp = await c.get_request(b, rid, ("client", "c1"))
    assert resp.json()["request"]["state"] == "expired"
    # The therapist, back on B (available again: going offline made it
    # unavailable), holds nothing and is free for the next request.
    t1b = await c.therapist(b, "t1")
    await t1b.no_frame_of("claim.ok", 0.3)
    r2 = (await c.create_request(b, "c2"))["id"]
    await t1b.expect("request.new", 5, about(r2))
