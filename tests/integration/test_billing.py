"""Billing across real servers: a session whose server dies mid-call is
settled exactly once, by another server."""

from __future__ import annotations

import asyncio

import pytest

from .harness import StartCluster, open_session, token, with_ref

pytestmark = pytest.mark.integration


async def test_a_session_whose_server_is_killed_mid_call_is_settled_once(
    start_cluster: StartCluster,
) -> None:
    grace = 1.0
    c = await start_cluster(2, reconnect_grace_s=grace, server_dead_after_s=1.0, billing_tick_s=0.2)
    a, b = c[0], c[1]
    m = await open_session(c, a, a, "c-kill", "t-kill")  # both consoles on A
    for ws, ref in ((m.client, "jc"), (m.therapist, "jt")):
        await ws.send({"type": "session.join", "session_id": m.id, "ref": ref})
        await ws.expect("session.joined", predicate=with_ref(ref))
    await m.client.expect("session.live")

    a.kill()  # SIGKILL: A never records the end nor settles
    # B reaps A, the participants' grace runs out, B ends the session (peer_lost)
    # and settles it.
    operator = token("operator", "op-billing")
    for _ in range(100):
        resp = await c.call(b, "GET", f"/v1/sessions/{m.id}/transcript", operator)
        listed = await c.call(b, "GET", "/v1/sessions", token("client", "c-kill"))
        sessions = listed.json()["sessions"]
        if resp.status_code == 200 and sessions and sessions[0]["state"] == "ended":
            break
        await asyncio.sleep(0.1)
    assert sessions[0]["id"] == m.id and sessions[0]["end_reason"] == "peer_lost"

    async def charges() -> list[dict[str, object]]:
        r = await c.call(b, "GET", "/v1/transactions", token("client", "c-kill"))
        assert r.status_code == 200, r.text
        return [t for t in r.json()["transactions"] if t["kind"] == "session_charge"]

    for _ in range(50):
        if await charges():
            break
        await asyncio.sleep(0.1)
    first = await charges()
    assert len(first) == 1 and first[0]["session_id"] == m.id
    assert isinstance(first[0]["amount_minor"], int) and first[0]["amount_minor"] < 0
    # Later repair turns find nothing left to settle: still exactly one charge.
    await asyncio.sleep(2.5)
    assert await charges() == first
    earnings = await c.call(b, "GET", "/v1/earnings", token("therapist", "t-kill"))
    assert earnings.json()["available_minor"] > 0
    # The call log says the same as the ledger: what it cost, what it earned.
    listed = await c.call(a if a.running else b, "GET", "/v1/sessions", token("client", "c-kill"))
    assert listed.json()["sessions"][0]["amount_minor"] == -first[0]["amount_minor"]
    theirs = await c.call(b, "GET", "/v1/sessions", token("therapist", "t-kill"))
    assert theirs.json()["sessions"][0]["amount_minor"] == earnings.json()["available_minor"]
    check = await c.call(b, "GET", "/v1/ledger/check", operator)
    assert check.json()["balanced"] is True
