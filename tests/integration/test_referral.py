"""The referring therapist's head start across two servers (PROTOCOL.md §10,
``DISPATCH_REFERRAL_HEAD_START_S``, short here): a referred client's request
is offered to its therapist (on server B) alone; another therapist (on server
A) gets no ``request.new``, an empty ``pool.snapshot`` and ``not_eligible``
for a claim until the head start ends, and then gets the offer from its own
server and may claim it. A decline of the referrer hands the next request to
the others at once."""

from __future__ import annotations

import time

import pytest

from .harness import StartCluster, about, token, with_ref
from .offers import assert_held_back, claim_release_cancel, expect_late_offer

pytestmark = pytest.mark.integration

HEAD_START_S = 3.0


async def test_the_referrer_has_a_head_start_on_every_server(start_cluster: StartCluster) -> None:
    c = await start_cluster(2, referral_head_start_s=HEAD_START_S)
    a, b = c[0], c[1]
    await c.put_therapist(a, "t-ref")
    await c.put_therapist(a, "t-other")
    got = await c.call(a, "GET", "/v1/me/referral", token("therapist", "t-ref"))
    assert got.status_code == 200, got.text
    code = got.json()["code"]
    linked = await c.call(b, "POST", "/v1/me/referral", token("client", "c-ref"), {"code": code})
    assert linked.status_code == 200, linked.text
    assert linked.json()["therapist_id"] == "t-ref"

    t_ref = await c.therapist(b, "t-ref")
    t_other = await c.therapist(a, "t-other")
    created = time.monotonic()
    req = await c.create_request(a, "c-ref")
    await t_ref.expect("request.new", 10, about(req["id"]))
    # The other therapist: nothing offered, nothing in a fresh snapshot, no claim.
    await assert_held_back(c, a, t_other, "t-other", req["id"], quiet_s=1.0)
    # The head start ends: server A offers it to its console, which claims it.
    await expect_late_offer(t_other, req["id"], created, HEAD_START_S)
    await claim_release_cancel(c, a, t_other, t_ref, req["id"], "c-ref")


async def test_declining_the_referrer_hands_the_request_to_the_others_at_once(
    start_cluster: StartCluster,
) -> None:
    c = await start_cluster(2, referral_head_start_s=60)
    a, b = c[0], c[1]
    await c.put_therapist(a, "t-ref")
    await c.put_therapist(a, "t-other")
    code = (await c.call(a, "GET", "/v1/me/referral", token("therapist", "t-ref"))).json()["code"]
    linked = await c.call(a, "POST", "/v1/me/referral", token("client", "c-dec"), {"code": code})
    assert linked.status_code == 200, linked.text
    t_ref = await c.therapist(b, "t-ref")
    t_other = await c.therapist(a, "t-other")
    client = await c.client(b, "c-dec")
    req = await c.create_request(b, "c-dec")
    await t_ref.expect("request.new", 10, about(req["id"]))
    await t_ref.send({"type": "claim", "request_id": req["id"], "ref": "mine"})
    await t_ref.expect("claim.ok", 10, with_ref("mine"))
    await client.expect("request.offer", 10)
    await client.send({"type": "offer.decline", "request_id": req["id"], "ref": "no"})
    await t_ref.expect("claim.declined", 10)
    # Well inside the 60 s head start, the others get it now.
    await t_other.expect("request.new", 10, about(req["id"]))
    await t_other.send({"type": "claim", "request_id": req["id"], "ref": "theirs"})
    ok = await t_other.expect("claim.ok", 10, with_ref("theirs"))
    assert ok["request_id"] == req["id"]
