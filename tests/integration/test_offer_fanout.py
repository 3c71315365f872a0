"""Offer to a few at a time across two servers (issue #16,
``DISPATCH_OFFER_FANOUT=1``, a short ``DISPATCH_OFFER_WIDEN_S``): a new
request is offered to the best-placed therapist alone (the better topic
match, whose console is on the other server); the other gets no
``request.new``, an empty ``pool.snapshot`` and ``not_eligible`` for a
claim until the offer widens, and then gets the offer, once, from its own
server and may claim it. The stored offer is what both servers go by."""

from __future__ import annotations

import time

import pytest

from .harness import StartCluster, about
from .offers import assert_held_back, claim_release_cancel, expect_late_offer

pytestmark = pytest.mark.integration

WIDEN_S = 2.0


async def test_a_request_goes_to_one_then_widens_on_every_server(
    start_cluster: StartCluster,
) -> None:
    c = await start_cluster(2, offer_fanout=1, offer_widen_s=WIDEN_S)
    a, b = c[0], c[1]
    # t-fan-b shares both of the request's topics: it ranks first, although
    # its id sorts after t-fan-a's and its console is on the other server.
    await c.put_therapist(a, "t-fan-a", topics=["anxiety"])
    await c.put_therapist(a, "t-fan-b", topics=["anxiety", "couples"])
    best = await c.therapist(b, "t-fan-b")
    other = await c.therapist(a, "t-fan-a")

    created = time.monotonic()
    req = await c.create_request(a, "c-fan", topics=["anxiety", "couples"])
    await best.expect("request.new", 10, about(req["id"]))
    await assert_held_back(c, a, other, "t-fan-a", req["id"], quiet_s=0.5)

    # The offer widens: server A offers it to its console, which claims it.
    await expect_late_offer(other, req["id"], created, WIDEN_S)
    await best.no_frame_of("request.new", 0.1, about(req["id"]))  # not again either
    await claim_release_cancel(c, a, other, best, req["id"], "c-fan")


async def test_without_the_setting_everyone_is_offered_at_once(
    start_cluster: StartCluster,
) -> None:
    c = await start_cluster(2)
    a, b = c[0], c[1]
    await c.put_therapist(a, "t-all-a")
    await c.put_therapist(a, "t-all-b")
    ta = await c.therapist(a, "t-all-a")
    tb = await c.therapist(b, "t-all-b")
    req = await c.create_request(b, "c-all")
    await ta.expect("request.new", 10, about(req["id"]))
    await tb.expect("request.new", 10, about(req["id"]))
