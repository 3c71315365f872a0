"""Who may do what (PROTOCOL.md §2, §3, §5), and what operators are shown."""

from __future__ import annotations

import itertools

import pytest

from .harness import StartCluster, about, token, with_ref

pytestmark = pytest.mark.integration

#: The fields of ``pool.stats`` (PROTOCOL.md §5, Operator).
STATS_FIELDS = {
    "waiting",
    "claimed",
    "therapists_online",
    "therapists_available",
    "therapists_busy",
    "oldest_wait_s",
    "wait_p50_s",
    "wait_p95_s",
    "created_15m",
    "matched_15m",
    "expired_15m",
    "cancelled_15m",
    "texts_sent_15m",
    "texts_failed_15m",
}


async def test_websocket_role_boundaries(start_cluster: StartCluster) -> None:
    c = await start_cluster(1)
    s = c[0]
    await c.put_therapist(s, "t1")
    therapist = await c.therapist(s, "t1")
    client = await c.client(s, "c1")
    rid = (await c.create_request(s, "c1"))["id"]
    await therapist.expect("request.new", predicate=about(rid))

    for i, frame in enumerate(
        [
            {"type": "claim", "request_id": rid},
            {"type": "status", "available": True},
            {"type": "claim.release", "request_id": rid},
        ]
    ):
        ref = f"client-{i}"
        await client.send({**frame, "ref": ref})
        err = await client.expect("error", predicate=with_ref(ref))
        assert err["code"] == "forbidden", frame["type"]
    for i, frame in enumerate(
        [
            {"type": "offer.accept", "request_id": rid, "terms_version": "v1"},
            {"type": "offer.decline", "request_id": rid},
        ]
    ):
        ref = f"therapist-{i}"
        await therapist.send({**frame, "ref": ref})
        err = await therapist.expect("error", predicate=with_ref(ref))
        assert err["code"] == "forbidden", frame["type"]

    # Nothing changed: the request still waits, unclaimed.
    resp = await c.get_request(s, rid, ("client", "c1"))
    assert resp.json()["request"]["state"] == "waiting"
    # Another client may not act on it either.
    other = await c.client(s, "c2")
    await other.send({"type": "offer.decline", "request_id": rid, "ref": "x"})
    err = await other.expect("error", predicate=lambda f: f["ref"] == "x")
    assert err["code"] in ("not_found", "forbidden")


async def test_http_role_boundaries(start_cluster: StartCluster) -> None:
    c = await start_cluster(1)
    s = c[0]
    body = {"region": "GB-ENG", "language": "en", "topics": []}
    profile = {"name": "Dr T", "regions": ["GB-ENG"], "languages": ["en"]}

    resp = await c.call(s, "POST", "/v1/requests", token("therapist", "t1"), body)
    assert resp.status_code == 403, resp.text
    assert resp.json()["error"]["code"] == "forbidden"
    resp = await c.call(s, "PUT", "/v1/therapists/t1", token("client", "c1"), profile)
    assert resp.status_code == 403, resp.text
    resp = await c.call(s, "GET", "/v1/pool/stats", token("client", "c1"))
    assert resp.status_code == 403, resp.text
    resp = await c.call(s, "GET", "/v1/pool/stats", token("therapist", "t1"))
    assert resp.status_code == 403, resp.text

    rid = (await c.create_request(s, "c1"))["id"]
    resp = await c.get_request(s, rid, ("client", "c2"))
    assert resp.status_code == 404, resp.text
    assert resp.json()["error"]["code"] == "not_found"
    resp = await c.call(s, "DELETE", f"/v1/requests/{rid}", token("client", "c2"))
    assert resp.status_code == 404, resp.text
    resp = await c.get_request(s, rid, ("therapist", "t1"))
    assert resp.status_code == 403, resp.text
    resp = await c.get_request(s, rid, ("operator", "op1"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["request"]["id"] == rid

    for method, path in (
        ("GET", "/v1/pool/stats"),
        ("POST", "/v1/requests"),
        ("GET", f"/v1/requests/{rid}"),
        ("PUT", "/v1/therapists/t1"),
    ):
        resp = await c.call(s, method, path, None, body if method != "GET" else None)
        assert resp.status_code == 401, (method, path, resp.text)
        assert resp.json()["error"]["code"] == "unauthorized"
    resp = await c.call(s, "GET", "/v1/pool/stats", "not-a-token")
    assert resp.status_code == 401, resp.text
    # The request is untouched by all of that.
    resp = await c.get_request(s, rid, ("client", "c1"))
    assert resp.json()["request"]["state"] == "waiting"


async def test_operator_gets_pool_stats_every_second(start_cluster: StartCluster) -> None:
    c = await start_cluster(2)
    a, b = c[0], c[1]
    await c.put_therapist(a, "t1")
    await c.put_therapist(a, "t2")
    await c.therapist(a, "t1")
    await c.therapist(b, "t2", available=False)
    await c.create_request(b, "c1")

    resp = await c.call(a, "GET", "/v1/pool/stats", token("operator", "op1"))
    assert resp.status_code == 200, resp.text
    assert set(resp.json()) >= STATS_FIELDS

    op = await c.operator(a, "op1")
    frames = [await op.expect("pool.stats", 3) for _ in range(4)]
    for f in frames:
        assert set(f) >= STATS_FIELDS, sorted(STATS_FIELDS - set(f))
    # The first is sent on connect; then one a second.
    arrivals = [
        t for f, t in zip(op.received, op.received_at, strict=True) if f["type"] == "pool.stats"
    ]
    gaps = [y - x for x, y in itertools.pairwise(arrivals[1:4])]
    assert all(0.5 <= g <= 2.0 for g in gaps), gaps

    last = frames[-1]
    # The whole service's pool, whichever server the operator is on.
    assert last["waiting"] == 1
    assert last["claimed"] == 0
    assert last["therapists_online"] == 2
    assert last["therapists_available"] == 1
    assert last["therapists_busy"] == 0
    assert last["created_15m"] == 1
    assert last["oldest_wait_s"] >= 0
    for key in ("created_15m", "matched_15m", "expired_15m", "cancelled_15m"):
        assert isinstance(last[key], int)
