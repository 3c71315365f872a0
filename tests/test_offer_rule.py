"""Offer to a few at a time (issue #16, ``DISPATCH_OFFER_FANOUT`` and
``DISPATCH_OFFER_WIDEN_S``): a pure pool rule (:func:`pool.rules.next_offers`,
:func:`pool.rules.widened`), the offered set stored with the request and
kept by both adapters' claim (memory and the Redis script) and widening, by
the hub's offers, snapshots and ``request.gone``, by the texts, and by the
dispatcher's widening. With the setting off (0) nothing changes."""

from __future__ import annotations

from typing import Any

import pytest
from hubkit import DRAFT, T0, hub_with, profile, sent
from hypothesis import given
from hypothesis import strategies as st

from core.errors import NotEligible
from core.identity import Role
from notify.texts import Candidate, TextContact, recipients
from pool import rules
from pool.effects import Effect
from pool.memory import MemoryPool
from pool.model import (
    NOT_OFFERED,
    Draft,
    OfferCandidate,
    Reason,
    Request,
    State,
    Timeouts,
)
from pool.store import PoolStore

T = Timeouts()
WIDEN = 10.0


def cand(tid: str, last: float | None = None, **changes: Any) -> OfferCandidate:
    return OfferCandidate(profile(tid, **changes), last)


def offered_draft(offered: set[str] | None, draft: Draft = DRAFT) -> Draft:
    return Draft(
        region=draft.region,
        language=draft.language,
        topics=draft.topics,
        offered=None if offered is None else frozenset(offered),
    )


# -- the rule ------------------------------------------------------------------------------


def test_referrer_first_then_topic_match_then_longest_idle_then_id() -> None:
    both = ("grief", "anxiety")
    draft = Draft(region="GB", language="en", topics=both, referred_to="t-ref")
    candidates = [
        cand("t-b", 100.0, topics=("grief",)),
        cand("t-a", 200.0, topics=("grief",)),
        cand("t-both-late", 300.0, topics=both),
        cand("t-old", 50.0, topics=("anxiety",)),
        cand("t-ref", T0, topics=("anxiety",)),
        cand("t-both-never", None, topics=both),
        cand("t-fr", None, topics=both, languages=("fr",)),
    ]
    ranked = sorted(candidates[:-1], key=lambda c: rules.offer_rank(draft, c))
    assert [c.profile.id for c in ranked] == [
        "t-ref",
        "t-both-never",
        "t-both-late",
        "t-old",
        "t-b",
        "t-a",
    ]
    first = rules.next_offers(draft, frozenset(), candidates, 2)
    assert first == {"t-ref", "t-both-never"}
    assert rules.next_offers(draft, first, candidates, 2) == first | {"t-both-late", "t-old"}


def test_off_or_enough_room_means_everyone() -> None:
    candidates = [cand("t-a"), cand("t-b")]
    assert rules.next_offers(DRAFT, frozenset(), candidates, 0) is None
    assert rules.next_offers(DRAFT, frozenset(), candidates, 2) is None  # all fit
    assert rules.next_offers(DRAFT, frozenset(), [], 3) is None  # nobody there: everyone
    assert rules.next_offers(DRAFT, frozenset(), candidates, 1) == {"t-a"}


def test_the_unqualified_and_the_declined_are_never_picked() -> None:
    req = rules.new_request(offered_draft({"t-a"}), "r1", "c1", T0, T).replace(
        declined=frozenset({"t-b"})
    )
    candidates = [
        cand("t-a"),
        cand("t-b"),
        cand("t-fr", languages=("fr",)),
        cand("t-c"),
        cand("t-d"),
    ]
    assert rules.next_offers(req, frozenset({"t-a"}), candidates, 1) == {"t-a", "t-c"}


def test_a_new_request_carries_its_offer_privately() -> None:
    req = rules.new_request(offered_draft({"t-a"}), "r1", "c1", T0, T)
    assert (req.offered, req.widened_at) == (frozenset({"t-a"}), T0)
    plain = rules.new_request(DRAFT, "r1", "c1", T0, T)
    assert (plain.offered, plain.widened_at) == (None, None)
    assert "offered" not in req.public(1) and "widened_at" not in req.public(1)
    assert Request.from_record(req.to_record()) == req
    old = req.to_record()
    del old["offered"], old["widened_at"]
    assert Request.from_record(old).offered is None  # records from before: everyone


def test_a_claim_by_a_therapist_not_offered_yet_is_not_eligible() -> None:
    req = rules.new_request(offered_draft({"t-a"}), "r1", "c1", T0, T)
    with pytest.raises(NotEligible) as err:
        rules.claim(req, profile("t-b"), None, T0 + 1, T)
    assert err.value.message == NOT_OFFERED
    with pytest.raises(NotEligible) as plain:  # unqualified: the plain one, checked first
        rules.claim(req, profile("t-b", languages=("fr",)), None, T0 + 1, T)
    assert plain.value.message != NOT_OFFERED
    assert rules.claim(req, profile("t-a"), None, T0 + 1, T).claimed_by == "t-a"


def test_widening_is_due_every_widen_s_and_opens_when_the_rest_fits() -> None:
    req = rules.new_request(offered_draft({"t-a"}), "r1", "c1", T0, T)
    candidates = [cand("t-a"), cand("t-b"), cand("t-c"), cand("t-d")]
    assert not rules.widen_due(req, T0 + WIDEN - 0.001, WIDEN)
    assert rules.widen_due(req, T0 + WIDEN, WIDEN)
    once = rules.widened(req, candidates, 1, T0 + WIDEN)
    assert (once.offered, once.widened_at) == ({"t-a", "t-b"}, T0 + WIDEN)
    assert not rules.widen_due(once, T0 + WIDEN + 1, WIDEN)
    twice = rules.widened(once, candidates, 1, T0 + 2 * WIDEN)
    assert twice.offered == {"t-a", "t-b", "t-c"}
    thrice = rules.widened(twice, candidates, 1, T0 + 3 * WIDEN)
    assert (thrice.offered, thrice.widened_at) == (None, None)  # t-d was the last: open
    assert not rules.widen_due(thrice, T0 + 99 * WIDEN, WIDEN)
    claimed = rules.claim(once, profile("t-b"), None, T0 + WIDEN + 1, T)
    assert not rules.widen_due(claimed, T0 + 9 * WIDEN, WIDEN)  # only while waiting


@pytest.mark.parametrize("reason", [Reason.DECLINED, Reason.RELEASED, Reason.THERAPIST_LOST])
def test_back_in_waiting_the_offer_stays(reason: Reason) -> None:
    req = rules.new_request(offered_draft({"t-a", "t-b"}), "r1", "c1", T0, T)
    claimed = rules.claim(req, profile("t-a"), None, T0 + 1, T)
    back = rules.back_to_waiting(claimed, reason, T0 + 2, T)
    assert back.offered == {"t-a", "t-b"} and back.widened_at == T0
    assert rules.claim(back, profile("t-b"), None, T0 + 3, T).claimed_by == "t-b"


_tids = [f"t-{i}" for i in range(8)]
_candidates = st.lists(
    st.builds(
        lambda tid, last, topic, lang: cand(tid, last, topics=(topic,), languages=(lang,)),
        st.sampled_from(_tids),
        st.one_of(st.none(), st.floats(min_value=0, max_value=1e6, allow_nan=False)),
        st.sampled_from(["anxiety", "grief"]),
        st.sampled_from(["en", "en", "fr"]),
    ),
    max_size=8,
    unique_by=lambda c: c.profile.id,
)


@given(
    candidates=_candidates,
    fanout=st.integers(min_value=0, max_value=10),
    already=st.sets(st.sampled_from(_tids), max_size=4),
    referred=st.sampled_from([None, *_tids]),
)
def test_an_offer_only_grows_by_at_most_fanout_of_the_best_qualified(
    candidates: list[OfferCandidate], fanout: int, already: set[str], referred: str | None
) -> None:
    draft = Draft(region="GB", language="en", topics=("grief",), referred_to=referred)
    got = rules.next_offers(draft, frozenset(already), candidates, fanout)
    qualified = [c for c in candidates if rules.may_take(c.profile, draft)]
    fresh = [c for c in qualified if c.profile.id not in already]
    if fanout == 0 or len(fresh) <= fanout:
        assert got is None  # everyone: off, or the rest fits
        return
    assert got is not None
    added = got - already
    assert already <= got and len(added) == fanout
    assert all(t in {c.profile.id for c in fresh} for t in added)
    # Nobody left out ranks before anybody added.
    rank = {c.profile.id: rules.offer_rank(draft, c) for c in fresh}
    left = [rank[c.profile.id] for c in fresh if c.profile.id not in added]
    assert max(rank[t] for t in added) < min(left)
    if referred is not None and referred in rank:
        assert referred in got  # the referring therapist first
    # Ordering the candidates differently changes nothing (every server agrees).
    assert rules.next_offers(draft, frozenset(already), list(reversed(candidates)), fanout) == got


@given(
    candidates=_candidates,
    fanout=st.integers(min_value=1, max_value=3),
    tid=st.sampled_from(_tids),
)
def test_widening_ends_open_to_everyone_and_eligibility_never_shrinks(
    candidates: list[OfferCandidate], fanout: int, tid: str
) -> None:
    req = rules.new_request(DRAFT, "r1", "c1", T0, T)
    req = req.replace(offered=rules.next_offers(req, frozenset(), candidates, fanout))
    req = req.replace(widened_at=None if req.offered is None else T0)
    now = T0
    was = rules.offered_to(req, tid)
    for _ in range(len(_tids) + 1):
        if not rules.widen_due(req, now + WIDEN, WIDEN):
            break
        now += WIDEN
        req = rules.widened(req, candidates, fanout, now)
        assert not was or rules.offered_to(req, tid)
        was = rules.offered_to(req, tid)
    assert req.offered is None  # within a few widenings, everyone
    assert rules.offered_to(req, tid)


# -- both adapters -------------------------------------------------------------------------


async def _available(store: PoolStore, *tids: str) -> None:
    for tid in tids:
        await store.put_profile(profile(tid))
        await store.connect(tid, Role.THERAPIST, "conn-" + tid, "srv-1", T0)
        assert await store.set_available(tid, True)


async def test_both_adapters_list_only_the_regions_therapists(pool_store: PoolStore) -> None:
    """Candidates for a region are the available therapists licensed there,
    whatever else is available; a profile changed to another region moves
    its therapist with it."""
    await _available(pool_store, "t-gb")
    for tid, regions in (("t-us", ("US-CA",)), ("t-both", ("GB", "US-CA"))):
        await pool_store.put_profile(profile(tid, regions=regions))
        await pool_store.connect(tid, Role.THERAPIST, "conn-" + tid, "srv-1", T0)
        assert await pool_store.set_available(tid, True)

    async def ids(region: str) -> list[str]:
        return [c.profile.id for c in await pool_store.offer_candidates(region)]

    assert await ids("GB") == ["t-both", "t-gb"]
    assert await ids("US-CA") == ["t-both", "t-us"]
    assert await ids("FR") == []
    # While available, licensed elsewhere: now in US-CA only.
    await pool_store.put_profile(profile("t-gb", regions=("US-CA",)))
    assert await ids("GB") == ["t-both"]
    assert await ids("US-CA") == ["t-both", "t-gb", "t-us"]
    await pool_store.set_available("t-both", False)
    assert await ids("GB") == [] and await ids("US-CA") == ["t-gb", "t-us"]
    assert await pool_store.set_available("t-both", True)
    assert await ids("GB") == ["t-both"]


async def test_both_adapters_list_the_free_available_therapists(pool_store: PoolStore) -> None:
    assert await pool_store.offer_candidates("GB") == []
    await _available(pool_store, "t-b", "t-a", "t-c")
    await pool_store.put_profile(profile("t-away"))
    assert [c.profile.id for c in await pool_store.offer_candidates("GB")] == ["t-a", "t-b", "t-c"]
    assert all(c.last_claim_at is None for c in await pool_store.offer_candidates("GB"))
    # A claim: t-a holds it (not a candidate) and has claimed at T0 + 1.
    await pool_store.create(DRAFT, "c1", "r1", T0)
    await pool_store.claim("r1", profile("t-a"), T0 + 1)
    assert [c.profile.id for c in await pool_store.offer_candidates("GB")] == ["t-b", "t-c"]
    await pool_store.release("r1", "t-a", T0 + 2)
    got = {c.profile.id: c.last_claim_at for c in await pool_store.offer_candidates("GB")}
    assert got == {"t-a": T0 + 1, "t-b": None, "t-c": None}
    await pool_store.set_available("t-b", False)
    assert [c.profile.id for c in await pool_store.offer_candidates("GB")] == ["t-a", "t-c"]
    # A changed profile is what the next choice weighs (the Redis adapter
    # keeps parsed profiles by their JSON: a change is another JSON).
    await pool_store.put_profile(profile("t-c", topics=("grief",), name="Dr C"))
    after = {c.profile.id: c.profile for c in await pool_store.offer_candidates("GB")}
    assert after["t-c"] == profile("t-c", topics=("grief",), name="Dr C")
    assert after["t-a"] == profile("t-a")


async def test_both_adapters_keep_the_offer_on_claims(pool_store: PoolStore) -> None:
    for tid in ("t-a", "t-b"):
        await pool_store.put_profile(profile(tid))
    req, _ = await pool_store.create(offered_draft({"t-a"}), "c1", "r1", T0)
    assert req.offered == {"t-a"} and req.widened_at == T0
    assert await pool_store.get("r1") == req
    with pytest.raises(NotEligible) as err:
        await pool_store.claim("r1", profile("t-b"), T0 + 1)
    assert err.value.message == NOT_OFFERED
    assert (await pool_store.get("r1")).state is State.WAITING  # type: ignore[union-attr]
    change = await pool_store.claim("r1", profile("t-a"), T0 + 2)
    assert change.after.claimed_by == "t-a" and change.after.offered == {"t-a"}
    back = await pool_store.release("r1", "t-a", T0 + 3)
    assert back.after.offered == {"t-a"} and await pool_store.get("r1") == back.after
    # Without the setting: no offer stored, anyone qualified.
    plain, _ = await pool_store.create(DRAFT, "c2", "r2", T0)
    assert (await pool_store.get("r2")) == plain and plain.offered is None
    assert (await pool_store.claim("r2", profile("t-b"), T0 + 4)).after.claimed_by == "t-b"


async def test_both_adapters_widen_once(pool_store: PoolStore) -> None:
    for tid in ("t-a", "t-b"):
        await pool_store.put_profile(profile(tid))
    await pool_store.create(offered_draft({"t-a"}), "c1", "r1", T0)
    wider = frozenset({"t-a", "t-b"})
    change = await pool_store.widen("r1", T0, wider, T0 + WIDEN)
    assert change is not None and change.before.offered == {"t-a"}
    assert (change.after.offered, change.after.widened_at) == (wider, T0 + WIDEN)
    assert await pool_store.get("r1") == change.after
    # Another server read the same widened_at: it loses, nothing changes.
    assert await pool_store.widen("r1", T0, frozenset({"t-a", "t-x"}), T0 + WIDEN) is None
    assert (await pool_store.get("r1")) == change.after
    assert (await pool_store.claim("r1", profile("t-b"), T0 + WIDEN + 1)).after.claimed_by == "t-b"
    # Claimed: no widening.
    assert await pool_store.widen("r1", T0 + WIDEN, None, T0 + 2 * WIDEN) is None
    # Open to everyone: both fields go.
    await pool_store.create(offered_draft({"t-a"}), "c2", "r2", T0)
    opened = await pool_store.widen("r2", T0, None, T0 + WIDEN)
    assert opened is not None and (opened.after.offered, opened.after.widened_at) == (None, None)
    assert await pool_store.get("r2") == opened.after
    assert await pool_store.widen("r2", T0, None, T0 + 2 * WIDEN) is None


# -- the hub -------------------------------------------------------------------------------


async def test_the_hub_offers_the_few_then_the_newly_offered_only() -> None:
    store = MemoryPool(T)
    hub, (a, b, c) = hub_with(store, "t-a", "t-b", "t-c")
    req, _ = await store.create(offered_draft({"t-a"}), "c1", "r1", T0)
    await hub.deliver([Effect("new", request=req)])
    assert [f["type"] for f in sent(a)] == ["request.new"]
    assert sent(b) == [] and sent(c) == []
    assert [r["id"] for r in (await hub.snapshot(a.profile))["requests"]] == ["r1"]
    assert (await hub.snapshot(b.profile))["requests"] == []
    # Widened to t-b: only t-b gets request.new.
    change = await store.widen("r1", T0, frozenset({"t-a", "t-b"}), T0 + WIDEN)
    assert change is not None
    await hub.deliver([Effect("widened", request=change.after, frame={"already": ["t-a"]})])
    assert sent(a) == [] and [f["type"] for f in sent(b)] == ["request.new"] and sent(c) == []
    # Opened: the rest.
    opened = await store.widen("r1", T0 + WIDEN, None, T0 + 2 * WIDEN)
    assert opened is not None
    await hub.deliver([Effect("widened", request=opened.after, frame={"already": ["t-a", "t-b"]})])
    assert sent(a) == [] and sent(b) == [] and [f["type"] for f in sent(c)] == ["request.new"]
    assert [r["id"] for r in (await hub.snapshot(c.profile))["requests"]] == ["r1"]


async def test_request_gone_goes_to_the_offered_consoles_alone() -> None:
    store = MemoryPool(T)
    hub, (a, b) = hub_with(store, "t-a", "t-b")
    req, _ = await store.create(offered_draft({"t-a"}), "c1", "r1", T0)
    await hub.deliver([Effect("new", request=req)])
    change = await store.claim("r1", profile("t-a"), T0 + 1)
    await hub.deliver([Effect("gone", request=change.after, reason="claimed")])
    assert [f["type"] for f in sent(a)] == ["request.new", "request.gone"]
    assert sent(b) == []


# -- texts ---------------------------------------------------------------------------------


def test_an_away_therapist_is_texted_only_once_the_offer_is_open() -> None:
    req = rules.new_request(offered_draft({"t-a"}), "r1", "c1", T0, T)
    candidates = [
        Candidate(profile(tid), TextContact(tid, phone="+447700900123", sms_opt_in=True))
        for tid in ("t-a", "t-away")
    ]
    kw: dict[str, Any] = {"delay_s": 0.0, "cooldown_s": 600.0, "max_per_request": 25}
    assert recipients(req, candidates, T0 + 1, **kw) == ["t-a"]
    opened = req.replace(offered=None, widened_at=None)
    assert recipients(opened, candidates, T0 + 1, **kw) == ["t-a", "t-away"]
