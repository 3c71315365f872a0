"""Offer to a few at a time through the whole app (issue #16,
``DISPATCH_OFFER_FANOUT``, ``DISPATCH_OFFER_WIDEN_S``) on SQLite and
PostgreSQL: ``POST /v1/requests`` stores the first few the dispatcher
picked, a claim by anyone else is ``not_eligible``, and the widening (the
``offers`` loop's step, driven here with the app's clock) adds more, once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from test_booking_http import C1, OP, PROFILE, T0, World, serve

from core.errors import NotEligible
from core.identity import Role, User
from pool.model import NOT_OFFERED

BODY = {"region": "GB-ENG", "language": "en", "topics": ["anxiety"]}
WIDEN_S = 5.0


@pytest_asyncio.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    async with serve(database_url, offer_fanout=1, offer_widen_s=WIDEN_S) as w:
        await w.ok("PUT", "/v1/therapists/t2", OP, 201, json={**PROFILE, "name": "Bob"})
        await w.ok("PUT", "/v1/therapists/t3", OP, 201, json={**PROFILE, "name": "Cy"})
        for tid in ("t1", "t2", "t3"):
            await w.ctx.store.connect(tid, Role.THERAPIST, "conn-" + tid, "srv-test", T0)
            assert await w.ctx.store.set_available(tid, True)
        yield w


async def test_a_request_is_offered_to_one_then_widened_once(world: World) -> None:
    created = await world.ok("POST", "/v1/requests", C1, 201, json=BODY)
    rid = created["request"]["id"]
    assert "offered" not in created["request"]  # private
    stored = await world.ctx.store.get(rid)
    assert stored is not None and stored.offered == {"t1"} and stored.widened_at == T0
    dispatcher = world.ctx.dispatcher
    with pytest.raises(NotEligible) as err:
        await dispatcher.claim(User("t2", Role.THERAPIST), rid, None)
    assert err.value.message == NOT_OFFERED
    # Not due yet; then due: one more (t2), once however many servers ask.
    world.clock.now = T0 + WIDEN_S - 1
    assert await dispatcher.widen_offers() == 0
    world.clock.now = T0 + WIDEN_S
    assert await dispatcher.widen_offers() == 1
    assert await dispatcher.widen_offers() == 0
    wider = await world.ctx.store.get(rid)
    assert wider is not None and wider.offered == {"t1", "t2"}
    # The next widening finds t3 alone left: open to everyone.
    world.clock.now = T0 + 2 * WIDEN_S
    assert await dispatcher.widen_offers() == 1
    opened = await world.ctx.store.get(rid)
    assert opened is not None and opened.offered is None
    change = await dispatcher.claim(User("t3", Role.THERAPIST), rid, None)
    assert change.after.claimed_by == "t3"
