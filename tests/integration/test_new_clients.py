"""``accepting_new_clients`` false (PROTOCOL.md §7): across two servers, a
therapist paused for new clients is neither offered nor able to claim a
request from a client it has never had a session with, while a client it
knows still reaches it."""

from __future__ import annotations

import pytest

from .harness import Cluster, ServerProcess, StartCluster, about, open_session, token, with_ref

pytestmark = pytest.mark.integration


async def test_a_paused_therapist_sees_and_claims_only_clients_it_knows(
    start_cluster: StartCluster,
) -> None:
    c = await start_cluster(2)
    a, b = c[0], c[1]
    # t1 has had a session with c-known (it ends), then pauses itself.
    m = await open_session(c, a, b, "c-known", "t1")
    await m.client.send({"type": "session.end", "session_id": m.id, "ref": "end"})
    await m.therapist.expect("session.ended", 10)
    resp = await c.call(
        a, "PATCH", "/v1/therapists/t1", token("therapist", "t1"), {"accepting_new_clients": False}
    )
    assert resp.status_code == 200 and resp.json()["accepting_new_clients"] is False
    t1 = m.therapist
    # A new client's request: not offered to t1 (on B), offered to t2 (on A).
    await c.put_therapist(a, "t2")
    t2 = await c.therapist(a, "t2")
    new = await c.create_request(a, "c-new")
    await t2.expect("request.new", 10, about(new["id"]))
    await t1.no_frame_of("request.new", 1.0, about(new["id"]))
    # Nor in a snapshot, nor claimable.
    assert new["id"] not in await _snapshot(c, a)
    await t1.send({"type": "claim", "request_id": new["id"], "ref": "claim-new"})
    refused = await t1.expect("error", 10, with_ref("claim-new"))
    assert refused["code"] == "not_eligible"
    # The client it knows still reaches it.
    known = await c.create_request(b, "c-known")
    got = await t1.expect("request.new", 10, about(known["id"]))
    assert got["request"]["client_id"] == "c-known"
    # Back to accepting: the new client's request is in its next snapshot.
    resp = await c.call(
        b, "PATCH", "/v1/therapists/t1", token("therapist", "t1"), {"accepting_new_clients": True}
    )
    assert resp.status_code == 200
    assert new["id"] in await _snapshot(c, b)


async def _snapshot(c: Cluster, server: ServerProcess) -> list[str]:
    """The request ids of a fresh t1 console's ``pool.snapshot`` on ``server``."""
    ws = await c.ws(server, f"t1-snapshot@{server.name}")
    await ws.auth(token("therapist", "t1"))
    frame = await ws.expect("pool.snapshot")
    await ws.close()
    return [r["id"] for r in frame["requests"]]
