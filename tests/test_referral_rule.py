"""The referring therapist's head start (PROTOCOL.md §10,
``DISPATCH_REFERRAL_HEAD_START_S``): a pure pool rule
(:func:`pool.rules.head_start_holder`), kept by both adapters' claim
(memory and the Redis script), by the hub's offers and snapshots (and the
offer to everyone once it ends), by the texts, and given by the dispatcher
only when the referrer is there to see the request."""

from __future__ import annotations

from typing import Any

import pytest
from hubkit import DRAFT, T0, Clock, console, hub_with, profile, sent
from hypothesis import given
from hypothesis import strategies as st

from core.errors import NotEligible
from notify.texts import Candidate, TextContact, recipients
from pool import rules
from pool.effects import Effect
from pool.memory import MemoryPool
from pool.model import HEAD_START, Draft, Reason, Request, State, Timeouts
from pool.store import PoolStore

T = Timeouts()
HEAD = 20.0
REFERRED = Draft(
    region="GB", language="en", topics=("anxiety",), referred_to="t-ref", head_start_s=HEAD
)


# -- the rule ------------------------------------------------------------------------------


def test_a_new_request_carries_the_head_start_only_when_there_is_one() -> None:
    req = rules.new_request(REFERRED, "r1", "c1", T0, T)
    assert (req.referred_to, req.head_start_until) == ("t-ref", T0 + HEAD)
    for draft in (DRAFT, Draft(region="GB", language="en", referred_to="t-ref")):
        plain = rules.new_request(draft, "r1", "c1", T0, T)
        assert (plain.referred_to, plain.head_start_until) == (None, None)
    # Private: the request object users see is unchanged.
    assert "referred_to" not in req.public(1) and "head_start_until" not in req.public(1)


def test_the_referrer_has_it_alone_until_the_head_start_ends() -> None:
    req = rules.new_request(REFERRED, "r1", "c1", T0, T)
    assert rules.head_start_holder(req, T0) == "t-ref"
    assert rules.head_start_holder(req, T0 + HEAD - 0.001) == "t-ref"
    assert rules.head_start_holder(req, T0 + HEAD) is None
    assert rules.eligible_during_head_start(req, "t-ref", T0)
    assert not rules.eligible_during_head_start(req, "t-other", T0 + 1)
    assert rules.eligible_during_head_start(req, "t-other", T0 + HEAD)


@pytest.mark.parametrize("reason", [Reason.DECLINED, Reason.RELEASED, Reason.THERAPIST_LOST])
def test_back_in_waiting_after_its_claim_the_head_start_is_spent(reason: Reason) -> None:
    req = rules.new_request(REFERRED, "r1", "c1", T0, T)
    claimed = rules.claim(req, profile("t-ref"), None, T0 + 1, T)
    assert rules.head_start_holder(claimed, T0 + 2) == "t-ref"  # nobody else may claim it
    back = rules.back_to_waiting(claimed, reason, T0 + 2, T)
    assert rules.head_start_holder(back, T0 + 3) is None
    assert rules.claim(back, profile("t-other"), None, T0 + 3, T).claimed_by == "t-other"


def test_a_claim_by_another_during_the_head_start_is_not_eligible() -> None:
    req = rules.new_request(REFERRED, "r1", "c1", T0, T)
    with pytest.raises(NotEligible) as err:
        rules.claim(req, profile("t-other"), None, T0 + 5, T)
    assert err.value.message == HEAD_START
    # Unqualified stays the plain not_eligible (checked first).
    with pytest.raises(NotEligible) as plain:
        rules.claim(req, profile("t-other", languages=("fr",)), None, T0 + 5, T)
    assert plain.value.message != HEAD_START
    assert rules.claim(req, profile("t-ref"), None, T0 + 5, T).claimed_by == "t-ref"
    assert rules.claim(req, profile("t-other"), None, T0 + HEAD, T).claimed_by == "t-other"


_ids = st.sampled_from(["t-ref", "t-a", "t-b"])


@given(
    head=st.floats(min_value=0, max_value=600, allow_nan=False),
    offset=st.floats(min_value=-1, max_value=700, allow_nan=False),
    tid=_ids,
    referred=st.booleans(),
    claimed_before=st.sampled_from([None, "declined", "released", "therapist_lost"]),
)
def test_the_head_start_is_a_window_for_everyone_but_the_referrer(
    head: float, offset: float, tid: str, referred: bool, claimed_before: str | None
) -> None:
    draft = Draft(
        region="GB", language="en", referred_to="t-ref" if referred else None, head_start_s=head
    )
    req = rules.new_request(draft, "r1", "c1", T0, T).replace(reason=claimed_before)
    now = T0 + offset
    in_window = referred and head > 0 and now < T0 + head and claimed_before is None
    assert (rules.head_start_holder(req, now) is not None) == in_window
    assert rules.eligible_during_head_start(req, tid, now) == (not in_window or tid == "t-ref")
    # Once over, it stays over (the hub offers the rest once, for good).
    if not rules.eligible_during_head_start(req, tid, now):
        assert rules.eligible_during_head_start(req, tid, T0 + head)


@given(
    watching=st.booleans(),
    busy=st.booleans(),
    guarded=st.booleans(),
    paused=st.booleans(),
    qualified=st.booleans(),
)
def test_a_head_start_only_for_a_referrer_who_would_see_the_request(
    watching: bool, busy: bool, guarded: bool, paused: bool, qualified: bool
) -> None:
    referrer = profile("t-ref", languages=("en",) if qualified else ("fr",))
    got = rules.head_start_applies(
        referrer, DRAFT, watching=watching, busy=busy, guarded=guarded, paused=paused
    )
    assert got == (watching and not busy and not guarded and not paused and qualified)
    assert not rules.head_start_applies(
        None, DRAFT, watching=True, busy=False, guarded=False, paused=False
    )


def test_the_record_round_trips_and_old_records_have_no_head_start() -> None:
    req = rules.new_request(REFERRED, "r1", "c1", T0, T)
    assert Request.from_record(req.to_record()) == req
    old = req.to_record()
    del old["referred_to"], old["head_start_until"]
    assert Request.from_record(old).head_start_until is None


# -- both adapters -------------------------------------------------------------------------


async def test_both_adapters_keep_the_head_start_on_claims(pool_store: PoolStore) -> None:
    for tid in ("t-ref", "t-other", "t-third"):
        await pool_store.put_profile(profile(tid))
    req, _ = await pool_store.create(REFERRED, "c1", "r1", T0)
    stored = await pool_store.get("r1")
    assert stored == req and stored is not None and stored.head_start_until == T0 + HEAD
    assert [r.referred_to for r in await pool_store.waiting()] == ["t-ref"]
    with pytest.raises(NotEligible) as err:
        await pool_store.claim("r1", profile("t-other"), T0 + 1)
    assert err.value.message == HEAD_START
    assert (await pool_store.get("r1")).state is State.WAITING  # type: ignore[union-attr]
    # The referrer claims; the client declines it: the others may claim at once.
    await pool_store.claim("r1", profile("t-ref"), T0 + 2)
    change = await pool_store.decline("r1", "c1", T0 + 3)
    assert change.after.reason == "declined" and change.after.referred_to == "t-ref"
    claimed = await pool_store.claim("r1", profile("t-other"), T0 + 4)
    assert claimed.after.claimed_by == "t-other"
    # Another request: once the head start is over, anyone qualified.
    await pool_store.create(REFERRED, "c2", "r2", T0 + 10)
    with pytest.raises(NotEligible):
        await pool_store.claim("r2", profile("t-third"), T0 + 10 + HEAD - 0.5)
    late = await pool_store.claim("r2", profile("t-third"), T0 + 10 + HEAD)
    assert late.after.claimed_by == "t-third"


# -- the hub -------------------------------------------------------------------------------


async def test_the_hub_offers_the_referrer_alone_then_everyone() -> None:
    store = MemoryPool(T)
    clock = Clock()
    hub, (ref, other) = hub_with(store, "t-ref", "t-other", clock=clock)
    req, _ = await store.create(REFERRED, "c1", "r1", T0)
    await hub.deliver([Effect("new", request=req)])
    assert [f["request"]["id"] for f in sent(ref)] == ["r1"]
    assert sent(other) == []
    assert [r["id"] for r in (await hub.snapshot(ref.profile))["requests"]] == ["r1"]
    assert (await hub.snapshot(other.profile))["requests"] == []
    # Not yet over: nothing.
    clock.now = T0 + HEAD - 1
    assert await hub.head_starts_ended() == 0
    # Over: the others are offered it, the referrer not twice; and only once.
    clock.now = T0 + HEAD
    assert await hub.head_starts_ended() == 1
    assert sent(ref) == []
    [frame] = sent(other)
    assert (frame["type"], frame["request"]["id"], frame["request"]["position"]) == (
        "request.new",
        "r1",
        1,
    )
    assert await hub.head_starts_ended() == 0
    assert [r["id"] for r in (await hub.snapshot(other.profile))["requests"]] == ["r1"]


async def test_a_request_claimed_or_gone_meanwhile_is_not_offered_at_the_end() -> None:
    store = MemoryPool(T)
    clock = Clock()
    hub, (_, other) = hub_with(store, "t-ref", "t-other", clock=clock)
    await store.put_profile(profile("t-ref"))
    req, _ = await store.create(REFERRED, "c1", "r1", T0)
    await hub.deliver([Effect("new", request=req)])
    # A console that connects during the head start: its snapshot holds it back too.
    late = console("t-late")
    hub.add(late)
    assert (await hub.snapshot(late.profile))["requests"] == []
    # Claimed by the referrer (the gone effect not even seen here): at the
    # end the pool says it is not waiting, so nobody is offered it.
    await store.claim("r1", profile("t-ref"), T0 + 1)
    clock.now = T0 + HEAD + 1
    assert await hub.head_starts_ended() == 0
    assert sent(other) == [] and sent(late) == []
    # Declined: back in waiting, offered to the others at once.
    back = await store.decline("r1", "c1", T0 + HEAD + 2)
    await hub.deliver([Effect("new", request=back.after)])
    assert [f["request"]["id"] for f in sent(other)] == ["r1"]
    assert [f["request"]["id"] for f in sent(late)] == ["r1"]


async def test_a_decline_within_the_head_start_offers_it_to_everyone_at_once() -> None:
    store = MemoryPool(T)
    clock = Clock()
    hub, (ref, other) = hub_with(store, "t-ref", "t-other", clock=clock)
    req, _ = await store.create(REFERRED, "c1", "r1", T0)
    await hub.deliver([Effect("new", request=req)])
    change = await store.claim("r1", profile("t-ref"), T0 + 1)
    await hub.deliver([Effect("gone", request=change.after, reason="claimed")])
    back = await store.decline("r1", "c1", T0 + 2)
    clock.now = T0 + 3
    await hub.deliver([Effect("new", request=back.after)])
    assert [f["type"] for f in sent(other)] == ["request.gone", "request.new"]
    assert [f["type"] for f in sent(ref)] == ["request.new", "request.gone"]  # declined: not again
    clock.now = T0 + HEAD + 5
    assert await hub.head_starts_ended() == 0


# -- texts ---------------------------------------------------------------------------------


def test_nobody_else_is_texted_during_the_head_start() -> None:
    req = rules.new_request(REFERRED, "r1", "c1", T0, T)
    candidates = [
        Candidate(profile(tid), TextContact(tid, phone="+447700900123", sms_opt_in=True))
        for tid in ("t-other", "t-ref")
    ]
    kw: dict[str, Any] = {"delay_s": 0.0, "cooldown_s": 600.0, "max_per_request": 25}
    assert recipients(req, candidates, T0 + 1, **kw) == ["t-ref"]
    assert recipients(req, candidates, T0 + HEAD, **kw) == ["t-other", "t-ref"]
