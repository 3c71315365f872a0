"""An offer held back from a therapist for a while, then given, as seen
across two servers: what the tests of the referrer's head start
(test_referral.py) and of offering to a few at a time (test_offer_fanout.py)
check on the therapist kept waiting. Each step is bounded (10 s a frame)."""

from __future__ import annotations

import time

from .harness import Cluster, ServerProcess, WsClient, about, token, with_ref


async def assert_held_back(
    c: Cluster,
    server: ServerProcess,
    console: WsClient,
    therapist_id: str,
    request_id: str,
    quiet_s: float,
) -> None:
    """While the request is held back from ``therapist_id`` (``console`` on
    ``server``): no ``request.new`` for ``quiet_s``, not in a fresh console's
    ``pool.snapshot``, and a claim refused with ``not_eligible``."""
    await console.no_frame_of("request.new", quiet_s, about(request_id))
    fresh = await c.ws(server, f"{therapist_id}-snapshot")
    await fresh.auth(token("therapist", therapist_id))
    snap = await fresh.expect("pool.snapshot")
    assert request_id not in [r["id"] for r in snap["requests"]]
    await fresh.close()
    await console.send({"type": "claim", "request_id": request_id, "ref": "early"})
    refused = await console.expect("error", 10, with_ref("early"))
    assert refused["code"] == "not_eligible"


async def expect_late_offer(
    console: WsClient, request_id: str, created: float, held_s: float
) -> None:
    """The held-back request reaches ``console`` no sooner than ``held_s``
    (less half a second) after ``created`` (a ``time.monotonic()``), still
    waiting, and once."""
    new = await console.expect("request.new", 10, about(request_id))
    assert time.monotonic() - created >= held_s - 0.5
    assert new["request"]["state"] == "waiting"
    await console.no_frame_of("request.new", 0.5, about(request_id))  # offered once


async def claim_release_cancel(
    c: Cluster,
    server: ServerProcess,
    console: WsClient,
    first: WsClient,
    request_id: str,
    client_id: str,
) -> None:
    """``console`` claims the request (``first``, offered it first, sees it
    go) and lets it go; its client then cancels it on ``server``."""
    await console.send({"type": "claim", "request_id": request_id, "ref": "late"})
    ok = await console.expect("claim.ok", 10, with_ref("late"))
    assert ok["request_id"] == request_id
    await first.expect("request.gone", 10, about(request_id))
    await console.send({"type": "claim.release", "request_id": request_id, "ref": "let-go"})
    await console.expect("claim.released", 10)
    cancel = await c.call(
        server, "DELETE", f"/v1/requests/{request_id}", token("client", client_id)
    )
    assert cancel.status_code == 200, cancel.text
