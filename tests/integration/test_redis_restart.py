"""Redis goes away and comes back (append-only file on): the service heals by itself."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from .harness import Cluster, ServerProcess, StartCluster, WsClient, about, token, with_ref

pytestmark = pytest.mark.integration


async def _wait_readyz(c: Cluster, server: ServerProcess, status: int, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    seen: int | None = None
    while time.monotonic() < deadline:
        try:
            seen = (await c.http(server).get("/readyz", timeout=2.0)).status_code
        except Exception:  # a timeout counts as "not ready" too
            seen = None
        if seen == status:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{server.name}: /readyz answered {seen}, not {status}, for {within_s}s")


async def _bus_works(console: WsClient, within_s: float = 15.0) -> dict[str, Any]:
    """Wait until a ``status`` frame's answer comes back: ``status.ok`` travels
    through the Redis bus, so this proves the server publishes and is
    subscribed. Returns that ``status.ok``."""
    deadline = time.monotonic() + within_s
    n = 0
    while time.monotonic() < deadline:
        n += 1
        ref = f"probe-{n}"
        await console.send({"type": "status", "available": True, "ref": ref})
        try:
            answer = await console.expect(("status.ok", "error"), 1.0, with_ref(ref))
        except AssertionError:
            continue
        if answer["type"] == "status.ok":
            return answer
        await asyncio.sleep(0.2)
    raise AssertionError(f"{console.label}: the bus did not come back within {within_s}s")


async def test_service_heals_after_redis_restarts(
    start_cluster: StartCluster, redis_server: Any
) -> None:
    # Servers reaping each other after an outage longer than server_dead_after_s
    # is test_presence.py's concern; here the outage stays well inside it.
    c = await start_cluster(2, server_dead_after_s=30.0)
    a, b = c[0], c[1]
    for tid in ("t1", "t2", "t3"):
        await c.put_therapist(a, tid)
    t1 = await c.therapist(a, "t1")
    t2 = await c.therapist(b, "t2")
    before = (await c.create_request(a, "c1"))["id"]
    await t1.expect("request.new", predicate=about(before))
    await t2.expect("request.new", predicate=about(before))

    await c.fund(b, "c-down")  # so that only Redis can refuse its request below
    await asyncio.to_thread(redis_server.stop)
    try:
        for server in (a, b):
            await _wait_readyz(c, server, 503, 10.0)
        resp = await c.call(
            b,
            "POST",
            "/v1/requests",
            token("client", "c-down"),
            {"region": "GB-ENG", "language": "en"},
        )
        assert resp.status_code == 503, resp.text
        assert resp.json()["error"]["code"] == "unavailable"
    finally:
        await asyncio.to_thread(redis_server.start)

    for server in (a, b):
        await _wait_readyz(c, server, 200, 20.0)
    for console in (t1, t2):
        ok = await _bus_works(console)
        assert ok["available"] is True, f"{console.label}: its server forgot it is online"

    # The request made before the restart is still there, first in the queue.
    resp = await c.get_request(b, before, ("client", "c1"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["request"]["state"] == "waiting"
    assert resp.json()["request"]["position"] == 1
    t3 = await c.therapist(b, "t3")
    snapshot = next(f for f in t3.received if f["type"] == "pool.snapshot")
    assert [r["id"] for r in snapshot["requests"]] == [before]

    # ...and it is claimed exactly once.
    consoles = {"t1": t1, "t2": t2, "t3": t3}
    await asyncio.gather(
        *(
            ws.send({"type": "claim", "request_id": before, "ref": f"after-{tid}"})
            for tid, ws in consoles.items()
        )
    )
    answers = {
        tid: await ws.expect(("claim.ok", "error"), 5, with_ref(f"after-{tid}"))
        for tid, ws in consoles.items()
    }
    winners = [tid for tid, f in answers.items() if f["type"] == "claim.ok"]
    assert len(winners) == 1, answers
    assert sorted(f["code"] for f in answers.values() if f["type"] == "error") == [
        "taken",
        "taken",
    ]

    # New requests work, across servers (t1 is on A, t2 and t3 on B).
    losers = [ws for tid, ws in consoles.items() if tid not in winners]
    client = await c.client(b, "c2")
    after = (await c.create_request(a, "c2"))["id"]
    await client.expect("request.state", 5, about(after))
    for ws in losers:
        await ws.expect("request.new", 5, about(after))
