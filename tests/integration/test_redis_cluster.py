"""Two server processes on a Redis Cluster form one service, as on one Redis.

``DISPATCH_REDIS_URL=redis+cluster://...`` names one node of the run's
three-primary cluster (``tests/conftest.py``); the servers find the rest, run
every pool step on the node that owns the pool's slot and talk over sharded
pub/sub there.
"""

from __future__ import annotations

import asyncio

import pytest

from .harness import StartCluster, about

pytestmark = pytest.mark.integration


async def test_two_servers_on_a_redis_cluster_race_match_and_agree(
    start_cluster: StartCluster, redis_cluster_url: str
) -> None:
    c = await start_cluster(2, redis_url=redis_cluster_url)
    a, b = c[0], c[1]
    ids = [f"t{i}" for i in range(6)]
    await asyncio.gather(*(c.put_therapist(c[i % 2], tid) for i, tid in enumerate(ids)))
    consoles = await asyncio.gather(*(c.therapist(c[i % 2], tid) for i, tid in enumerate(ids)))
    client = await c.client(b, "c1")

    # Created on B, announced on both servers' consoles (over the shard's bus).
    rid = (await c.create_request(b, "c1"))["id"]
    await asyncio.gather(*(t.expect("request.new", 10, about(rid)) for t in consoles))

    # Everyone claims at once, from both servers: exactly one wins.
    await asyncio.gather(
        *(
            t.send({"type": "claim", "request_id": rid, "ref": f"claim-{tid}"})
            for t, tid in zip(consoles, ids, strict=True)
        )
    )
    answers = await asyncio.gather(*(t.expect(("claim.ok", "error"), 10) for t in consoles))
    winners = [tid for tid, f in zip(ids, answers, strict=True) if f["type"] == "claim.ok"]
    assert len(winners) == 1, answers
    assert {f["code"] for f in answers if f["type"] == "error"} == {"taken"}
    offer = await client.expect("request.offer", predicate=about(rid))
    assert offer["therapist"]["id"] == winners[0]

    # Accepted on B; the winner (on A or B) gets the session too.
    await client.send(
        {"type": "offer.accept", "request_id": rid, "terms_version": "2024-05-01", "ref": "acc"}
    )
    session = (await client.expect("session.ready"))["session"]
    winner = consoles[ids.index(winners[0])]
    assert (await winner.expect("session.ready"))["session"]["id"] == session["id"]

    # Either server reads the same pool.
    for server in (a, b):
        resp = await c.get_request(server, rid, ("client", "c1"))
        assert resp.status_code == 200, resp.text
        assert resp.json()["request"]["state"] == "matched"
        assert resp.json()["request"]["session_id"] == session["id"]
