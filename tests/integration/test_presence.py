"""Presence across servers: a server other servers took for dead, but which was not."""

from __future__ import annotations

import asyncio
import time

import pytest

from .harness import Cluster, StartCluster, WsClient, about, token

pytestmark = pytest.mark.integration


async def _online(c: Cluster) -> int:
    resp = await c.call(c[0], "GET", "/v1/pool/stats", token("operator", "op1"))
    assert resp.status_code == 200, resp.text
    online: int = resp.json()["therapists_online"]
    return online


async def test_server_taken_for_dead_restores_its_consoles(start_cluster: StartCluster) -> None:
    """B stalls for longer than ``server_dead_after_s`` (a GC pause, a stalled VM,
    a Redis outage that outlasts it), so A reaps B's connections. When B runs
    again its consoles are still open: B must make them count again (or close
    them so they reconnect); a console must not stay open but deaf."""
    c = await start_cluster(2, server_dead_after_s=1.5, heartbeat_s=0.3)
    a, b = c[0], c[1]
    await c.put_therapist(a, "t1")
    await c.put_therapist(a, "t2")
    await c.therapist(a, "t1")
    t2: WsClient = await c.therapist(b, "t2")
    assert await _online(c) == 2

    b.pause()
    try:
        await asyncio.sleep(3.0)
        assert await _online(c) == 1  # A reaped B
    finally:
        b.resume()

    deadline = time.monotonic() + 5.0
    while True:
        if t2.close_code is not None:  # B chose to close: the console reconnects
            t2 = await c.therapist(b, "t2")
        if await _online(c) == 2:
            break
        assert time.monotonic() < deadline, (
            "server B was reaped while alive and never counted its open console again"
        )
        await asyncio.sleep(0.2)

    await t2.send({"type": "status", "available": True, "ref": "again"})
    ok = await t2.expect("status.ok", predicate=lambda f: f.get("ref") == "again")
    assert ok["available"] is True
    rid = (await c.create_request(a, "c1"))["id"]
    await t2.expect("request.new", 5, about(rid))
