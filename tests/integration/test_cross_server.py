"""Two server processes on one Redis form one service (PROTOCOL.md §4, §5)."""

from __future__ import annotations

import asyncio

import pytest

from .harness import StartCluster, about, token, with_ref

pytestmark = pytest.mark.integration


async def test_therapist_on_a_and_client_on_b_see_each_others_events(
    start_cluster: StartCluster,
) -> None:
    c = await start_cluster(2)
    a, b = c[0], c[1]
    await c.put_therapist(a, "t1", name="Dr One")
    therapist = await c.therapist(a, "t1")
    client = await c.client(b, "c1")

    req = await c.create_request(b, "c1")
    rid = req["id"]
    assert req["state"] == "waiting"
    assert req["position"] == 1
    assert req["client_id"] == "c1"

    # Created on B, announced on A.
    new = await therapist.expect("request.new", predicate=about(rid))
    assert new["request"]["state"] == "waiting"
    assert new["request"]["client_id"] == "c1"
    assert new["request"]["region"] == "GB-ENG"
    waiting = await client.expect("request.state", predicate=about(rid))
    assert waiting["request"]["state"] == "waiting"

    # Claimed on A, offered on B.
    await therapist.send({"type": "claim", "request_id": rid, "ref": "claim-1"})
    ok = await therapist.expect("claim.ok")
    assert ok["request_id"] == rid
    assert ok["ref"] == "claim-1"
    assert ok["expires_at"]
    offer = await client.expect("request.offer", predicate=about(rid))
    assert offer["therapist"]["id"] == "t1"
    assert offer["therapist"]["name"] == "Dr One"
    assert offer["expires_at"] == ok["expires_at"]
    claimed = await client.expect(
        "request.state", predicate=lambda f: f["request"]["state"] == "claimed"
    )
    assert claimed["request"]["claimed_by"] == "t1"
    assert claimed["request"]["position"] is None

    # Accepted on B, both sides told.
    await client.send(
        {"type": "offer.accept", "request_id": rid, "terms_version": "2024-05-01", "ref": "acc"}
    )
    ready_c = await client.expect("session.ready")
    ready_t = await therapist.expect("session.ready")
    session = ready_c["session"]
    assert ready_t["session"]["id"] == session["id"]
    assert session["request_id"] == rid
    assert session["client_id"] == "c1"
    assert session["therapist_id"] == "t1"
    assert session["state"] == "ready"
    assert isinstance(session["ice_servers"], list)
    assert {"started_at", "ended_at"} <= set(session)
    matched = await client.expect(
        "request.state", predicate=lambda f: f["request"]["state"] == "matched"
    )
    assert matched["request"]["session_id"] == session["id"]

    # Either server reads the same pool.
    for server in (a, b):
        resp = await c.get_request(server, rid, ("client", "c1"))
        assert resp.status_code == 200, resp.text
        assert resp.json()["request"]["state"] == "matched"
        assert resp.json()["request"]["session_id"] == session["id"]


async def test_fifty_therapists_race_for_one_request(start_cluster: StartCluster) -> None:
    c = await start_cluster(2)
    ids = [f"t{i:02d}" for i in range(50)]
    # Profiles through both servers and two operators: the HTTP limiter is per
    # user and per process (bursts of 30).
    await asyncio.gather(
        *(c.put_therapist(c[i % 2], tid, operator=f"op-{i % 2}") for i, tid in enumerate(ids))
    )
    consoles = await asyncio.gather(*(c.therapist(c[i % 2], tid) for i, tid in enumerate(ids)))
    req = await c.create_request(c[1], "c1")
    rid = req["id"]
    await asyncio.gather(*(t.expect("request.new", 10, about(rid)) for t in consoles))

    await asyncio.gather(
        *(
            t.send({"type": "claim", "request_id": rid, "ref": f"claim-{tid}"})
            for t, tid in zip(consoles, ids, strict=True)
        )
    )
    answers = await asyncio.gather(
        *(
            t.expect(("claim.ok", "error"), 10, with_ref(f"claim-{tid}"))
            for t, tid in zip(consoles, ids, strict=True)
        )
    )
    winners = [tid for tid, f in zip(ids, answers, strict=True) if f["type"] == "claim.ok"]
    losers = [(t, f) for t, f in zip(consoles, answers, strict=True) if f["type"] != "claim.ok"]
    assert len(winners) == 1, winners
    assert len(losers) == 49
    assert sorted({f["code"] for _, f in losers}) == ["taken"]
    await asyncio.gather(
        *(t.expect("request.gone", 10, lambda f: f["request_id"] == rid) for t, _ in losers)
    )
    for t, _ in losers:
        gone = [f for f in t.received if f.get("type") == "request.gone"]
        assert [f["reason"] for f in gone] == ["claimed"], t.label
        assert not any(f.get("type") == "claim.ok" for f in t.received), t.label

    resp = await c.get_request(c[0], rid, ("operator", "op-x"))
    assert resp.json()["request"]["state"] == "claimed"
    assert resp.json()["request"]["claimed_by"] == winners[0]


async def test_decline_returns_request_to_others_only(start_cluster: StartCluster) -> None:
    c = await start_cluster(2)
    a, b = c[0], c[1]
    await c.put_therapist(a, "t1")
    await c.put_therapist(a, "t2")
    t1 = await c.therapist(a, "t1")
    t2 = await c.therapist(b, "t2")
    client = await c.client(b, "c1")
    rid = (await c.create_request(a, "c1"))["id"]
    await t1.expect("request.new", predicate=about(rid))
    await t2.expect("request.new", predicate=about(rid))

    await t1.send({"type": "claim", "request_id": rid})
    await t1.expect("claim.ok")
    gone = await t2.expect("request.gone", predicate=about(rid))
    assert gone["reason"] == "claimed"
    await client.expect("request.offer", predicate=about(rid))

    await client.send({"type": "offer.decline", "request_id": rid, "ref": "dec-1"})
    declined = await t1.expect("claim.declined")
    assert declined["request_id"] == rid
    back = await client.expect(
        "request.state",
        predicate=lambda f: (
            f["request"]["state"] == "waiting" and f["request"]["reason"] == "declined"
        ),
    )
    assert back["request"]["claimed_by"] is None
    assert back["request"]["position"] == 1
    again = await t2.expect("request.new", predicate=about(rid))
    assert again["request"]["state"] == "waiting"

    # The declined therapist never sees it again and may not claim it.
    await t1.no_frame_of("request.new", 1.0, about(rid))
    await t1.send({"type": "claim", "request_id": rid, "ref": "again"})
    err = await t1.expect("error", predicate=lambda f: f["ref"] == "again")
    assert err["code"] == "not_eligible"
    # A fresh console of t1 (snapshot) does not list it either.
    t1b = await c.therapist(b, "t1", available=False)
    snapshot = next(f for f in t1b.received if f["type"] == "pool.snapshot")
    assert rid not in [r["id"] for r in snapshot["requests"]]

    # Anyone else still may.
    await t2.send({"type": "claim", "request_id": rid})
    ok = await t2.expect("claim.ok")
    assert ok["request_id"] == rid


async def test_cancel_tells_therapists_and_the_claimer(start_cluster: StartCluster) -> None:
    c = await start_cluster(2)
    a, b = c[0], c[1]
    await c.put_therapist(a, "t1")
    await c.put_therapist(a, "t2")
    t1 = await c.therapist(a, "t1")
    t2 = await c.therapist(b, "t2")

    # A waiting request cancelled: every therapist who saw it is told.
    r1 = (await c.create_request(a, "c1"))["id"]
    await t1.expect("request.new", predicate=about(r1))
    await t2.expect("request.new", predicate=about(r1))
    resp = await c.call(b, "DELETE", f"/v1/requests/{r1}", token("client", "c1"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["request"]["state"] == "cancelled"
    for t in (t1, t2):
        gone = await t.expect("request.gone", predicate=about(r1))
        assert gone["reason"] == "cancelled"

    # A claimed request cancelled: the claimer gets claim.cancelled.
    client2 = await c.client(b, "c2")
    r2 = (await c.create_request(b, "c2"))["id"]
    await t1.expect("request.new", predicate=about(r2))
    await t1.send({"type": "claim", "request_id": r2})
    await t1.expect("claim.ok")
    await client2.expect("request.offer", predicate=about(r2))
    resp = await c.call(a, "DELETE", f"/v1/requests/{r2}", token("client", "c2"))
    assert resp.status_code == 200, resp.text
    cancelled = await t1.expect("claim.cancelled")
    assert cancelled["request_id"] == r2
    state = await client2.expect(
        "request.state", predicate=lambda f: f["request"]["state"] == "cancelled"
    )
    assert state["request"]["id"] == r2

    # Cancelled is final; the claimer is free for the next request.
    resp = await c.call(a, "DELETE", f"/v1/requests/{r1}", token("client", "c1"))
    assert resp.status_code == 409, resp.text
    r3 = (await c.create_request(b, "c3"))["id"]
    await t1.expect("request.new", predicate=about(r3))
    await t1.send({"type": "claim", "request_id": r2, "ref": "dead"})
    err = await t1.expect("error", predicate=lambda f: f["ref"] == "dead")
    assert err["code"] == "not_found"
