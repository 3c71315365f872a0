"""The quick-connect guard near a booked session (PROTOCOL.md §8,
``DISPATCH_QC_GUARD_MIN``), across two servers: a therapist whose booking
starts within the guard gets no ``request.new``, an empty ``pool.snapshot``
and ``not_eligible`` for a claim, while another therapist is offered the
request; once the booking is cancelled its console gets the pool again."""

from __future__ import annotations

import datetime as dt

import pytest

from .harness import Cluster, ServerProcess, StartCluster, about, token, with_ref

pytestmark = pytest.mark.integration

ALL_WEEK = [
    {"day": d, "start": "00:00", "end": "23:30"}
    for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
]


async def test_a_therapist_near_a_booking_gets_no_quick_connect_work(
    start_cluster: StartCluster,
) -> None:
    # A guard of a whole day covers the first bookable slot (2 h of notice).
    c = await start_cluster(2, qc_guard_min=24 * 60)
    a, b = c[0], c[1]
    await c.put_therapist(a, "t1")
    await c.put_therapist(a, "t2")
    availability = {"timezone": "UTC", "weekly": ALL_WEEK, "overrides": []}
    t1_token = token("therapist", "t1")
    resp = await c.call(a, "PUT", "/v1/therapists/t1/availability", t1_token, availability)
    assert resp.status_code == 200, resp.text
    t1 = await c.therapist(b, "t1")
    await t1.expect("pool.snapshot", 10)  # the one that follows going available
    t2 = await c.therapist(a, "t2")
    # The client books t1's first open slot (a free intro).
    today = dt.datetime.now(dt.UTC).date().isoformat()
    slots = await c.call(
        a, "GET", f"/v1/therapists/t1/slots?type=intro&from={today}&days=2", t1_token
    )
    assert slots.status_code == 200, slots.text
    start = slots.json()["slots"][0]["start"]
    body = {"therapist_id": "t1", "type": "intro", "start": start}
    resp = await c.http(a).post(
        "/v1/bookings",
        json=body,
        headers={"Authorization": f"Bearer {token('client', 'c-book')}", "Idempotency-Key": "k1"},
    )
    assert resp.status_code == 201, resp.text
    booking_id = resp.json()["bookings"][0]["id"]
    # Its guard starts: t1's console is given the pool as it now is for it.
    snap = await t1.expect("pool.snapshot", 15)
    assert snap["requests"] == []
    req = await c.create_request(a, "c-new")
    await t2.expect("request.new", 10, about(req["id"]))
    await t1.no_frame_of("request.new", 1.5, about(req["id"]))
    assert req["id"] not in await _snapshot(c, a)
    await t1.send({"type": "claim", "request_id": req["id"], "ref": "claim-guarded"})
    refused = await t1.expect("error", 10, with_ref("claim-guarded"))
    assert refused["code"] == "not_eligible"
    # The booking is cancelled: the guard ends, the request is t1's to see.
    resp = await c.call(b, "POST", f"/v1/bookings/{booking_id}/cancel", t1_token, {})
    assert resp.status_code == 200, resp.text
    back = await t1.expect("pool.snapshot", 15)
    assert [r["id"] for r in back["requests"]] == [req["id"]]
    await t1.send({"type": "claim", "request_id": req["id"], "ref": "claim-free"})
    ok = await t1.expect("claim.ok", 10, with_ref("claim-free"))
    assert ok["request_id"] == req["id"]


async def _snapshot(c: Cluster, server: ServerProcess) -> list[str]:
    """The request ids of a fresh t1 console's ``pool.snapshot`` on ``server``."""
    ws = await c.ws(server, f"t1-snapshot@{server.name}")
    await ws.auth(token("therapist", "t1"))
    frame = await ws.expect("pool.snapshot")
    await ws.close()
    return [r["id"] for r in frame["requests"]]
