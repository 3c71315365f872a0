"""Offer to a few at a time through the whole app (issue #16,
``DISPATCH_OFFER_FANOUT``, ``DISPATCH_OFFER_WIDEN_S``) on SQLite and
PostgreSQL: ``POST /v1/requests`` stores the first few the dispatcher
picked, a claim by anyone else is ``not_eligible``, and the widening (the
``offers`` loop's step, driven here with the app's clock) adds more, once,
from the pool's due-widening index (a declined request too, once it waits
again); the widenings and first offers show in ``/metrics``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection

import pytest
import pytest_asyncio
from test_booking_http import C1, C2, OP, PROFILE, T0, World, serve

from core.errors import NotEligible
from core.identity import Role, User
from pool.model import NOT_OFFERED, Request, Session, State

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


def sample(world: World, name: str, **labels: str) -> float:
    value = world.ctx.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_a_request_is_offered_to_one_then_widened_once(world: World) -> None:
    created = await world.ok("POST", "/v1/requests", C1, 201, json=BODY)
    rid = created["request"]["id"]
    assert "offered" not in created["request"]  # private
    stored = await world.ctx.store.get(rid)
    assert stored is not None and stored.offered == {"t1"} and stored.widened_at == T0
    assert sample(world, "dispatch_offers_first_total", to="few") == 1
    assert sample(world, "dispatch_offer_first_therapists_count") == 1
    assert sample(world, "dispatch_offer_first_therapists_sum") == 1
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
    assert sample(world, "dispatch_offer_widenings_total", to="few") == 1
    assert sample(world, "dispatch_offer_widenings_total", to="everyone") == 0
    # The next widening finds t3 alone left: open to everyone.
    world.clock.now = T0 + 2 * WIDEN_S
    assert await dispatcher.widen_offers() == 1
    opened = await world.ctx.store.get(rid)
    assert opened is not None and opened.offered is None
    assert sample(world, "dispatch_offer_widenings_total", to="everyone") == 1
    metrics = (await world.http.get("/metrics")).text
    assert 'dispatch_offer_widenings_total{to="everyone"} 1.0' in metrics
    assert await world.ctx.store.due_widenings(T0 + 99 * WIDEN_S) == []
    change = await dispatcher.claim(User("t3", Role.THERAPIST), rid, None)
    assert change.after.claimed_by == "t3"


async def test_a_declined_request_widens_later_and_a_claimed_one_does_not(world: World) -> None:
    created = await world.ok("POST", "/v1/requests", C1, 201, json=BODY)
    rid = created["request"]["id"]
    dispatcher, store = world.ctx.dispatcher, world.ctx.store
    await dispatcher.claim(User("t1", Role.THERAPIST), rid, None)
    world.clock.now = T0 + WIDEN_S
    assert await dispatcher.widen_offers() == 0  # claimed: skipped
    await dispatcher.decline(User("c1", Role.CLIENT), rid, None)
    back = await store.get(rid)
    assert back is not None and back.state is State.WAITING and back.offered == {"t1"}
    # Back to waiting with its widened_at: due at once, and t1 (declined) is
    # passed over for the next best, t2.
    assert await dispatcher.widen_offers() == 1
    wider = await store.get(rid)
    assert wider is not None and wider.offered == {"t1", "t2"}
    assert wider.widened_at == T0 + WIDEN_S


async def test_with_everyone_fitting_the_first_offer_goes_to_everyone(world: World) -> None:
    await world.ctx.store.set_available("t2", False)
    await world.ctx.store.set_available("t3", False)
    created = await world.ok("POST", "/v1/requests", C1, 201, json=BODY)
    stored = await world.ctx.store.get(created["request"]["id"])
    assert stored is not None and stored.offered is None
    assert sample(world, "dispatch_offers_first_total", to="everyone") == 1
    assert sample(world, "dispatch_offers_first_total", to="few") == 0
    assert sample(world, "dispatch_offer_first_therapists_count") == 0
    assert await world.ctx.store.due_widenings(T0 + 99 * WIDEN_S) == []


async def test_paused_therapists_are_weighed_in_one_query(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A therapist not accepting new clients is offered only a client it knows
    (PROTOCOL.md §7); the first offer asks the records once for all of them."""
    await world.ok("PUT", "/v1/therapists/t4", OP, 201, json={**PROFILE, "name": "Di"})
    await world.ctx.store.connect("t4", Role.THERAPIST, "conn-t4", "srv-test", T0)
    assert await world.ctx.store.set_available("t4", True)
    for tid in ("t1", "t3"):
        await world.ok(
            "PUT",
            f"/v1/therapists/{tid}",
            OP,
            200,
            json={**PROFILE, "accepting_new_clients": False},
        )
    records = world.ctx.signaling.records
    asked: list[tuple[str, set[str]]] = []
    known_to = records.therapists_known_to

    async def counting(client_id: str, therapist_ids: Collection[str]) -> set[str]:
        asked.append((client_id, set(therapist_ids)))
        return await known_to(client_id, therapist_ids)

    monkeypatch.setattr(records, "therapists_known_to", counting)
    first = await world.ok("POST", "/v1/requests", C1, 201, json=BODY)
    stored = await world.ctx.store.get(first["request"]["id"])
    assert stored is not None and stored.offered == {"t2"}  # t1 and t3: c1 is new to them
    assert asked == [("c1", {"t1", "t3"})]
    # c2 has had a session with t1: t1 (first by id) is offered c2's request.
    req = Request(
        id="req-old",
        client_id="c2",
        region="GB-ENG",
        language="en",
        topics=("anxiety",),
        notes="",
        age=None,
        guardian_consent=False,
        created_at=T0 - 100,
        state=State.MATCHED,
        claimed_by="t1",
        claimed_at=T0 - 90,
        session_id="ses-old",
    )
    session = Session(
        id="ses-old", request_id="req-old", client_id="c2", therapist_id="t1", created_at=T0 - 80
    )
    await records.session_matched(
        session, req, client_name="C", therapist_name="T", terms_version="v1", now=T0 - 80
    )
    second = await world.ok("POST", "/v1/requests", C2, 201, json=BODY)
    stored = await world.ctx.store.get(second["request"]["id"])
    assert stored is not None and stored.offered == {"t1"}
    assert asked[1:] == [("c2", {"t1", "t3"})]
