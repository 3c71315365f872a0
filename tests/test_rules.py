"""Unit tests of the pure pool core: ``pool.rules`` and ``pool.model``.

No Redis, no network, no event loop: every function under test is pure.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.clock import rfc3339
from core.errors import Busy, DispatchError, Forbidden, NotEligible, NotFound, Taken
from pool import rules
from pool.model import (
    Draft,
    Hold,
    Reason,
    Request,
    Session,
    SessionState,
    State,
    TherapistProfile,
    Timeouts,
)

T = Timeouts(claim_confirm_s=60.0, request_max_wait_s=600.0, reconnect_grace_s=15.0)
T0 = 1_700_000_000.0


def therapist(
    tid: str = "t1",
    regions: tuple[str, ...] = ("GB-ENG",),
    languages: tuple[str, ...] = ("en",),
    topics: tuple[str, ...] = ("anxiety",),
    works_with_minors: bool = False,
) -> TherapistProfile:
    return TherapistProfile(
        id=tid,
        name=f"Therapist {tid}",
        regions=regions,
        languages=languages,
        topics=topics,
        works_with_minors=works_with_minors,
    )


def draft(
    region: str = "GB-ENG",
    language: str = "en",
    topics: tuple[str, ...] = (),
    age: int | None = None,
) -> Draft:
    return Draft(
        region=region,
        language=language,
        topics=topics,
        notes="n",
        age=age,
        guardian_consent=age is not None and age < 18,
    )


def waiting(
    region: str = "GB-ENG",
    language: str = "en",
    topics: tuple[str, ...] = (),
    age: int | None = None,
) -> Request:
    """Request r1 of client c1, created at T0."""
    return rules.new_request(draft(region, language, topics, age), "r1", "c1", T0, T)


def claimed(tid: str = "t1", at: float = T0 + 5.0) -> Request:
    """Request r1 of client c1, claimed by ``tid`` at ``at``."""
    return rules.claim(waiting(), therapist(tid), None, at, T)


def raises_exactly(exc: type[DispatchError], fn: object, *args: object) -> DispatchError:
    """Call ``fn(*args)`` and check it raised exactly ``exc`` (not a sibling subclass)."""
    assert callable(fn)
    with pytest.raises(DispatchError) as info:
        fn(*args)
    assert type(info.value) is exc, f"expected {exc.__name__}, got {type(info.value).__name__}"
    return info.value


# -- may_take / may_see ------------------------------------------------------


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        (draft(), True),
        (draft(region="US-CA"), False),
        (draft(language="fr"), False),
        (draft(topics=()), True),
        (draft(topics=("anxiety",)), True),
        (draft(topics=("grief", "anxiety")), True),
        (draft(topics=("grief",)), False),
        (draft(topics=("grief", "couples")), False),
        (draft(age=17), False),
        (draft(age=12, topics=("anxiety",)), False),
        (draft(age=18), True),
        (draft(age=40), True),
    ],
)
def test_may_take_adult_only_therapist(req: Draft, expected: bool) -> None:
    assert rules.may_take(therapist(), req) is expected


def test_may_take_minor_needs_works_with_minors() -> None:
    minor = draft(age=15)
    assert rules.may_take(therapist(works_with_minors=True), minor)
    assert not rules.may_take(therapist(works_with_minors=False), minor)
    # works_with_minors does not override region/language/topic checks
    assert not rules.may_take(therapist(works_with_minors=True), draft(age=15, region="US-CA"))


def test_may_take_therapist_without_topics_only_takes_topicless_requests() -> None:
    t = therapist(topics=())
    assert rules.may_take(t, draft(topics=()))
    assert not rules.may_take(t, draft(topics=("anxiety",)))


def test_may_take_accepts_a_request_like_a_draft() -> None:
    t = therapist(regions=("GB-ENG", "US-CA"), languages=("en", "fr"))
    assert rules.may_take(t, waiting(region="US-CA", language="fr"))
    assert not rules.may_take(t, waiting(region="FR", language="fr"))


_REGIONS = ["GB-ENG", "US-CA", "FR"]
_LANGS = ["en", "fr", "de"]
_TOPICS = ["anxiety", "couples", "grief"]


@given(
    regions=st.lists(st.sampled_from(_REGIONS), unique=True),
    languages=st.lists(st.sampled_from(_LANGS), unique=True),
    t_topics=st.lists(st.sampled_from(_TOPICS), unique=True),
    minors=st.booleans(),
    region=st.sampled_from(_REGIONS),
    language=st.sampled_from(_LANGS),
    r_topics=st.lists(st.sampled_from(_TOPICS), unique=True),
    age=st.none() | st.integers(0, 99),
)
def test_may_take_matches_the_protocol_sentence(
    regions: list[str],
    languages: list[str],
    t_topics: list[str],
    minors: bool,
    region: str,
    language: str,
    r_topics: list[str],
    age: int | None,
) -> None:
    prof = therapist(
        regions=tuple(regions),
        languages=tuple(languages),
        topics=tuple(t_topics),
        works_with_minors=minors,
    )
    d = draft(region=region, language=language, topics=tuple(r_topics), age=age)
    expected = (
        region in regions
        and language in languages
        and (not r_topics or any(x in t_topics for x in r_topics))
        and (age is None or age >= 18 or minors)
    )
    assert rules.may_take(prof, d) is expected
    req = rules.new_request(d, "r1", "c1", T0, T)
    assert rules.may_take(prof, req) is expected
    assert rules.may_see(prof, req) is expected
    assert rules.may_see(prof, req.replace(declined=frozenset({prof.id}))) is False
    assert rules.may_see(prof, req.replace(declined=frozenset({"someone-else"}))) is expected


def test_may_see_hides_declined_requests_only_from_the_declined_therapist() -> None:
    req = waiting().replace(declined=frozenset({"t1"}))
    assert rules.may_take(therapist("t1"), req)
    assert not rules.may_see(therapist("t1"), req)
    assert rules.may_see(therapist("t2"), req)
    # qualified-ness still applies to the others
    assert not rules.may_see(therapist("t3", regions=("US-CA",)), req)


# -- new_request -------------------------------------------------------------


def test_new_request_is_waiting_with_max_wait_deadline() -> None:
    d = Draft(
        region="US-CA",
        language="fr",
        topics=("grief", "couples"),
        notes="hello",
        age=16,
        guardian_consent=True,
    )
    req = rules.new_request(d, "r9", "c9", T0, T)
    assert req == Request(
        id="r9",
        client_id="c9",
        region="US-CA",
        language="fr",
        topics=("grief", "couples"),
        notes="hello",
        age=16,
        guardian_consent=True,
        created_at=T0,
        state=State.WAITING,
        claimed_by=None,
        claimed_at=None,
        expires_at=T0 + 600.0,
        session_id=None,
        reason=None,
        updated_at=T0,
        declined=frozenset(),
    )
    assert req.minor and d.minor


@pytest.mark.parametrize(("age", "minor"), [(None, False), (0, True), (17, True), (18, False)])
def test_minor(age: int | None, minor: bool) -> None:
    assert draft(age=age).minor is minor
    assert waiting(age=age).minor is minor


# -- claim -------------------------------------------------------------------


def test_claim_success() -> None:
    req = waiting()
    after = rules.claim(req, therapist("t1"), None, T0 + 7.0, T)
    assert after.state is State.CLAIMED
    assert after.claimed_by == "t1"
    assert after.claimed_at == T0 + 7.0
    assert after.expires_at == T0 + 7.0 + 60.0
    assert after.updated_at == T0 + 7.0
    assert after.reason is None
    # everything else unchanged; the input is untouched
    assert (
        after.replace(
            state=State.WAITING,
            claimed_by=None,
            claimed_at=None,
            expires_at=req.expires_at,
            updated_at=req.updated_at,
        )
        == req
    )
    assert req.state is State.WAITING


def test_claim_clears_previous_back_to_waiting_reason() -> None:
    req = rules.release(claimed("t1"), "t1", T0 + 8.0, T)
    assert req.reason == "released"
    again = rules.claim(req, therapist("t2"), None, T0 + 9.0, T)
    assert again.reason is None and again.claimed_by == "t2"


def test_claim_not_found_for_missing_cancelled_or_expired() -> None:
    t = therapist()
    raises_exactly(NotFound, rules.claim, None, t, None, T0, T)
    cancelled = rules.cancel(waiting(), "c1", T0 + 1)
    raises_exactly(NotFound, rules.claim, cancelled, t, None, T0 + 2, T)
    expired = rules.on_deadline(waiting(), T0 + 600.0)
    assert expired is not None
    raises_exactly(NotFound, rules.claim, expired, t, None, T0 + 601, T)


def test_claim_busy_when_holding_another_claim_or_a_session() -> None:
    t = therapist()
    raises_exactly(Busy, rules.claim, waiting(), t, Hold("claim", "other"), T0, T)
    raises_exactly(Busy, rules.claim, waiting(), t, Hold("session", "s1"), T0, T)


def test_claim_taken_when_already_holding_this_very_claim() -> None:
    req = claimed("t1")
    raises_exactly(Taken, rules.claim, req, therapist("t1"), Hold("claim", req.id), T0 + 6, T)


def test_claim_not_eligible_when_unqualified_or_declined() -> None:
    raises_exactly(NotEligible, rules.claim, waiting(), therapist(regions=("US-CA",)), None, T0, T)
    raises_exactly(NotEligible, rules.claim, waiting(age=12), therapist(), None, T0, T)
    declined = rules.decline(claimed("t1"), "c1", T0 + 10, T)
    raises_exactly(NotEligible, rules.claim, declined, therapist("t1"), None, T0 + 11, T)
    # another qualified therapist still may
    assert rules.claim(declined, therapist("t2"), None, T0 + 11, T).claimed_by == "t2"


def test_claim_taken_when_claimed_or_matched() -> None:
    req = claimed("t1")
    raises_exactly(Taken, rules.claim, req, therapist("t2"), None, T0 + 6, T)
    matched = rules.accept(req, "c1", "s1", T0 + 7)
    raises_exactly(Taken, rules.claim, matched, therapist("t2"), None, T0 + 8, T)


def test_claim_error_order() -> None:
    """not_found, then busy, then not_eligible, then taken (rules.claim docstring)."""
    unqualified = therapist("tx", regions=("US-CA",))
    busy_hold = Hold("claim", "elsewhere")
    cancelled = rules.cancel(claimed("t1"), "c1", T0 + 6)
    # cancelled beats busy and not-eligible
    raises_exactly(NotFound, rules.claim, cancelled, unqualified, busy_hold, T0 + 7, T)
    # busy beats not-eligible and taken
    raises_exactly(Busy, rules.claim, claimed("t1"), unqualified, busy_hold, T0 + 7, T)
    # not-eligible beats taken (qualification and declines alike)
    raises_exactly(NotEligible, rules.claim, claimed("t1"), unqualified, None, T0 + 7, T)
    declined_t1 = rules.decline(claimed("t1"), "c1", T0 + 6, T)
    twice = rules.claim(declined_t1, therapist("t2"), None, T0 + 8, T)
    raises_exactly(NotEligible, rules.claim, twice, therapist("t1"), None, T0 + 9, T)
    # taken last
    raises_exactly(Taken, rules.claim, claimed("t1"), therapist("t2"), None, T0 + 7, T)


# -- release / decline / accept / cancel ------------------------------------


def test_release_returns_to_waiting_keeping_original_deadline() -> None:
    req = claimed("t1", at=T0 + 100.0)
    after = rules.release(req, "t1", T0 + 130.0, T)
    assert after.state is State.WAITING
    assert after.claimed_by is None and after.claimed_at is None
    assert after.expires_at == T0 + 600.0
    assert after.reason == "released"
    assert after.declined == frozenset()
    assert after.updated_at == T0 + 130.0


def test_release_errors() -> None:
    raises_exactly(NotFound, rules.release, None, "t1", T0, T)
    raises_exactly(Forbidden, rules.release, waiting(), "t1", T0, T)
    raises_exactly(Forbidden, rules.release, claimed("t1"), "t2", T0 + 6, T)
    matched = rules.accept(claimed("t1"), "c1", "s1", T0 + 6)
    raises_exactly(Forbidden, rules.release, matched, "t1", T0 + 7, T)


def test_decline_adds_therapist_to_declined_and_keeps_earlier_ones() -> None:
    first = rules.decline(claimed("t1"), "c1", T0 + 10, T)
    assert first.state is State.WAITING
    assert first.declined == frozenset({"t1"})
    assert first.reason == "declined"
    assert first.claimed_by is None
    assert first.expires_at == T0 + 600.0
    second = rules.decline(rules.claim(first, therapist("t2"), None, T0 + 11, T), "c1", T0 + 12, T)
    assert second.declined == frozenset({"t1", "t2"})


def test_decline_errors() -> None:
    raises_exactly(NotFound, rules.decline, None, "c1", T0, T)
    raises_exactly(NotFound, rules.decline, claimed("t1"), "c2", T0 + 6, T)
    raises_exactly(Taken, rules.decline, waiting(), "c1", T0, T)
    matched = rules.accept(claimed("t1"), "c1", "s1", T0 + 6)
    raises_exactly(Taken, rules.decline, matched, "c1", T0 + 7, T)


def test_accept_matches() -> None:
    req = claimed("t1")
    after = rules.accept(req, "c1", "s1", T0 + 9)
    assert after.state is State.MATCHED
    assert after.session_id == "s1"
    assert after.claimed_by == "t1"
    assert after.expires_at is None
    assert after.reason == "matched"
    assert after.updated_at == T0 + 9


def test_accept_errors() -> None:
    raises_exactly(NotFound, rules.accept, None, "c1", "s1", T0)
    raises_exactly(NotFound, rules.accept, claimed("t1"), "c2", "s1", T0 + 6)
    raises_exactly(Taken, rules.accept, waiting(), "c1", "s1", T0)
    matched = rules.accept(claimed("t1"), "c1", "s1", T0 + 6)
    raises_exactly(Taken, rules.accept, matched, "c1", "s2", T0 + 7)


@pytest.mark.parametrize("make", [waiting, claimed])
def test_cancel_while_waiting_or_claimed(make: object) -> None:
    assert callable(make)
    req: Request = make()
    after = rules.cancel(req, "c1", T0 + 20)
    assert after.state is State.CANCELLED
    assert after.reason == "cancelled"
    assert after.expires_at is None
    assert after.updated_at == T0 + 20


def test_cancel_errors() -> None:
    raises_exactly(NotFound, rules.cancel, None, "c1", T0)
    raises_exactly(NotFound, rules.cancel, waiting(), "c2", T0)
    cancelled = rules.cancel(waiting(), "c1", T0)
    raises_exactly(Taken, rules.cancel, cancelled, "c1", T0 + 1)
    matched = rules.accept(claimed("t1"), "c1", "s1", T0 + 6)
    raises_exactly(Taken, rules.cancel, matched, "c1", T0 + 7)
    expired = rules.on_deadline(waiting(), T0 + 600)
    raises_exactly(Taken, rules.cancel, expired, "c1", T0 + 601)


# -- timers ------------------------------------------------------------------


def test_on_deadline_waiting_expires_no_therapist_exactly_at_deadline() -> None:
    req = waiting()
    assert rules.on_deadline(req, T0 + 599.999) is None
    after = rules.on_deadline(req, T0 + 600.0)
    assert after is not None
    assert after.state is State.EXPIRED
    assert after.reason == "no_therapist"
    assert after.expires_at is None
    assert after.updated_at == T0 + 600.0


def test_on_deadline_claimed_expires_client_no_response() -> None:
    req = claimed("t1", at=T0 + 5)
    assert rules.on_deadline(req, T0 + 64.9) is None
    after = rules.on_deadline(req, T0 + 70.0)
    assert after is not None
    assert after.state is State.EXPIRED
    assert after.reason == "client_no_response"
    assert after.expires_at is None


def test_on_deadline_ignores_stale_timers() -> None:
    # claimed at +5 (deadline +65), released at +30: the claim timer is stale
    req = rules.release(claimed("t1", at=T0 + 5), "t1", T0 + 30, T)
    assert rules.on_deadline(req, T0 + 65) is None
    # a final request ignores every timer
    for final in (
        rules.cancel(waiting(), "c1", T0),
        rules.accept(claimed("t1"), "c1", "s1", T0 + 6),
    ):
        assert rules.on_deadline(final, T0 + 10_000) is None
        # even with an expires_at that somehow survived
        assert rules.on_deadline(final.replace(expires_at=T0), T0 + 10_000) is None
    expired = rules.on_deadline(waiting(), T0 + 600)
    assert expired is not None
    assert rules.on_deadline(expired, T0 + 10_000) is None


def test_on_therapist_lost() -> None:
    req = claimed("t1").replace(declined=frozenset({"t0"}))
    after = rules.on_therapist_lost(req, "t1", T0 + 40, T)
    assert after is not None
    assert after.state is State.WAITING
    assert after.reason == "therapist_lost"
    assert after.claimed_by is None
    assert after.declined == frozenset({"t0"})  # losing a therapist is not a decline
    assert after.expires_at == T0 + 600.0
    assert rules.on_therapist_lost(req, "t2", T0 + 40, T) is None
    assert rules.on_therapist_lost(waiting(), "t1", T0 + 40, T) is None
    matched = rules.accept(claimed("t1"), "c1", "s1", T0 + 6)
    assert rules.on_therapist_lost(matched, "t1", T0 + 40, T) is None


def test_waiting_deadline_is_kept_after_returning_to_waiting() -> None:
    assert rules.waiting_deadline_at(T0, T0 + 1234.0, T) == T0 + 600.0
    req = waiting()
    # claimed late, declined after the original deadline passed
    late = rules.claim(req, therapist("t1"), None, T0 + 590, T)
    assert late.expires_at == T0 + 650
    back = rules.decline(late, "c1", T0 + 620, T)
    assert back.expires_at == T0 + 600.0
    # ... so it expires on the very next tick
    gone = rules.on_deadline(back, T0 + 620)
    assert gone is not None and gone.reason == "no_therapist"


@pytest.mark.parametrize("reason", [Reason.DECLINED, Reason.RELEASED, Reason.THERAPIST_LOST])
def test_back_to_waiting_only_decline_records_declined(reason: Reason) -> None:
    after = rules.back_to_waiting(claimed("t1"), reason, T0 + 9, T)
    assert after.reason == str(reason)
    assert after.declined == (frozenset({"t1"}) if reason is Reason.DECLINED else frozenset())


def test_hold_after() -> None:
    req = claimed("t1")
    assert rules.hold_after(req) == Hold("claim", req.id)
    matched = rules.accept(req, "c1", "s7", T0 + 6)
    assert rules.hold_after(matched) == Hold("session", "s7")
    assert rules.hold_after(waiting()) is None
    assert rules.hold_after(rules.cancel(req, "c1", T0 + 6)) is None
    expired = rules.on_deadline(req, T0 + 100)
    assert expired is not None and rules.hold_after(expired) is None


# -- percentile --------------------------------------------------------------


def test_percentile_examples() -> None:
    assert rules.percentile([], 50) is None
    assert rules.percentile([7.0], 0) == 7.0
    assert rules.percentile([7.0], 100) == 7.0
    # Wikipedia's nearest-rank example
    vals = [15.0, 20.0, 35.0, 40.0, 50.0]
    assert rules.percentile(vals, 5) == 15.0
    assert rules.percentile(vals, 30) == 20.0
    assert rules.percentile(vals, 40) == 20.0
    assert rules.percentile(vals, 50) == 35.0
    assert rules.percentile(vals, 100) == 50.0
    ten = [float(x) for x in range(10, 0, -1)]  # unsorted input
    assert rules.percentile(ten, 50) == 5.0
    assert rules.percentile(ten, 95) == 10.0
    assert rules.percentile(ten, 90) == 9.0
    assert rules.percentile(ten, 0) == 1.0


_VALUES = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=60)
_PCT = st.floats(0, 100, allow_nan=False)


@given(values=_VALUES, pct=_PCT)
def test_percentile_is_an_element(values: list[float], pct: float) -> None:
    before = list(values)
    result = rules.percentile(values, pct)
    assert result in values
    assert values == before  # input not reordered


@given(values=_VALUES, p1=_PCT, p2=_PCT)
def test_percentile_is_monotone_in_pct(values: list[float], p1: float, p2: float) -> None:
    lo, hi = sorted((p1, p2))
    a, b = rules.percentile(values, lo), rules.percentile(values, hi)
    assert a is not None and b is not None
    assert a <= b


@given(values=_VALUES, pct=st.integers(1, 100))
def test_percentile_is_nearest_rank(values: list[float], pct: int) -> None:
    """The smallest value with at least pct% of the values at or below it."""
    result = rules.percentile(values, pct)
    assert result is not None
    n = len(values)
    at_or_below = sum(1 for v in values if v <= result)
    below = sum(1 for v in values if v < result)
    assert at_or_below * 100 >= pct * n
    assert below * 100 < pct * n
    assert rules.percentile(values, 100) == max(values)
    assert rules.percentile(values, 0) == min(values)


# -- model: records ----------------------------------------------------------

_ID = st.from_regex(r"\A[A-Za-z0-9_.-]{1,64}\Z")
_TS = st.floats(0, 4_000_000_000, allow_nan=False, allow_infinity=False)
_TEXT = st.text(max_size=50)
_STRS = st.lists(st.text(min_size=1, max_size=10), max_size=4).map(tuple)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    return Request(
        id=draw(_ID),
        client_id=draw(_ID),
        region=draw(st.text(min_size=1, max_size=8)),
        language=draw(st.text(min_size=1, max_size=5)),
        topics=draw(_STRS),
        notes=draw(_TEXT),
        age=draw(st.none() | st.integers(0, 130)),
        guardian_consent=draw(st.booleans()),
        created_at=draw(_TS),
        state=draw(st.sampled_from(State)),
        claimed_by=draw(st.none() | _ID),
        claimed_at=draw(st.none() | _TS),
        expires_at=draw(st.none() | _TS),
        session_id=draw(st.none() | _ID),
        reason=draw(st.none() | st.sampled_from([str(r) for r in Reason])),
        updated_at=draw(_TS),
        declined=draw(st.frozensets(_ID, max_size=4)),
    )


profiles = st.builds(
    TherapistProfile,
    id=_ID,
    name=_TEXT,
    bio=_TEXT,
    photo_url=_TEXT,
    regions=_STRS,
    languages=_STRS,
    topics=_STRS,
    works_with_minors=st.booleans(),
)

sessions = st.builds(
    Session,
    id=_ID,
    request_id=_ID,
    client_id=_ID,
    therapist_id=_ID,
    state=st.sampled_from(SessionState),
    created_at=_TS,
    started_at=st.none() | _TS,
    ended_at=st.none() | _TS,
    end_reason=st.none()
    | st.sampled_from(["ended_by_client", "ended_by_therapist", "peer_lost", "funds_exhausted"]),
)


@given(requests())
def test_request_record_round_trip(req: Request) -> None:
    rec = req.to_record()
    assert Request.from_record(rec) == req
    # the record is JSON-safe and survives the trip too
    assert Request.from_record(json.loads(json.dumps(rec))) == req


@given(profiles)
def test_profile_record_round_trip(prof: TherapistProfile) -> None:
    rec = prof.to_record()
    assert TherapistProfile.from_record(rec) == prof
    assert TherapistProfile.from_record(json.loads(json.dumps(rec))) == prof


@given(sessions)
def test_session_record_round_trip(sess: Session) -> None:
    rec = sess.to_record()
    assert Session.from_record(rec) == sess
    assert Session.from_record(json.loads(json.dumps(rec))) == sess


def test_from_record_reads_empty_strings_as_none() -> None:
    """A hash store keeps None as ""; reading it back must give None, not ""."""
    rec = waiting().to_record() | {
        "claimed_by": "",
        "claimed_at": "",
        "expires_at": "",
        "session_id": "",
        "reason": "",
    }
    req = Request.from_record(rec)
    assert req.claimed_by is None and req.claimed_at is None and req.expires_at is None
    assert req.session_id is None and req.reason is None


# -- model: rfc3339 ----------------------------------------------------------

_RFC3339 = re.compile(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")


def test_rfc3339_examples() -> None:
    assert rfc3339(0.0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1_700_000_000.0) == "2023-11-14T22:13:20.000Z"
    assert rfc3339(1_700_000_000.25) == "2023-11-14T22:13:20.250Z"
    assert rfc3339(1_700_000_000.9999) == "2023-11-14T22:13:20.999Z"  # truncated, not rounded


@given(st.floats(0, 253_402_300_799.0, allow_nan=False))
def test_rfc3339_is_utc_z_milliseconds(ts: float) -> None:
    text = rfc3339(ts)
    assert _RFC3339.match(text), text
    parsed = dt.datetime.fromisoformat(text)
    assert parsed.utcoffset() == dt.timedelta(0)
    # within a millisecond below the instant (allow float error at large ts)
    delta = ts - parsed.timestamp()
    assert -1e-6 <= delta < 1e-3 + max(1e-6, abs(ts) * 1e-15)


# -- model: public views -----------------------------------------------------

_R_FIELDS = {
    "id",
    "state",
    "created_at",
    "client_id",
    "region",
    "language",
    "topics",
    "notes",
    "age",
    "position",
    "claimed_by",
    "expires_at",
    "session_id",
}


@given(requests(), st.none() | st.integers(1, 1000))
def test_request_public_never_shows_declined_and_position_only_when_waiting(
    req: Request, position: int | None
) -> None:
    pub = req.public(position)
    assert "declined" not in pub
    assert set(pub) >= _R_FIELDS
    assert pub["position"] == (position if req.state is State.WAITING else None)
    assert pub["state"] == str(req.state)
    assert pub["created_at"] == rfc3339(req.created_at)
    assert pub["expires_at"] == (None if req.expires_at is None else rfc3339(req.expires_at))
    assert pub["topics"] == list(req.topics)
    json.dumps(pub)  # JSON-ready as it is


def test_request_public_hides_declined_ids() -> None:
    req = rules.decline(claimed("t-secret"), "c1", T0 + 9, T)
    assert "t-secret" in req.declined
    pub = req.public(1)
    assert "t-secret" not in json.dumps(pub)
    assert pub["position"] == 1


def test_session_public_formats_times() -> None:
    sess = Session("s1", "r1", "c1", "t1", SessionState.LIVE, T0, T0 + 1.5, None)
    ice = [{"urls": ["stun:example.invalid"]}]
    pub = sess.public(ice)
    assert pub == {
        "id": "s1",
        "request_id": "r1",
        "booking_id": None,
        "client_id": "c1",
        "therapist_id": "t1",
        "state": "live",
        "ice_servers": ice,
        "started_at": rfc3339(T0 + 1.5),
        "ended_at": None,
    }


# -- a therapist console's presence ---------------------------------------------------------


@pytest.mark.parametrize("ftype", sorted(rules.HOLDING_FRAMES))
def test_a_hold_stops_offers(ftype: str) -> None:
    after, back = rules.presence_after(rules.Presence(available=True), {"type": ftype})
    assert after == rules.Presence(available=True, busy=True) and not after.gets_offers
    assert back is False


@pytest.mark.parametrize("ftype", sorted(rules.FREEING_FRAMES))
def test_the_end_of_a_hold_brings_offers_back_with_a_snapshot(ftype: str) -> None:
    busy = rules.Presence(available=True, busy=True)
    after, back = rules.presence_after(busy, {"type": ftype})
    assert after == rules.Presence(available=True, busy=False) and after.gets_offers
    assert back is True  # it missed request.new while busy
    # Freed twice (two frames about the same end): only the first needs a snapshot.
    assert rules.presence_after(after, {"type": ftype}) == (after, False)


def test_status_ok_sets_availability_and_a_return_needs_a_snapshot() -> None:
    away = rules.Presence()
    back, needs = rules.presence_after(away, {"type": "status.ok", "available": True})
    assert back.gets_offers and needs is True
    again, needs = rules.presence_after(back, {"type": "status.ok", "available": True})
    assert again == back and needs is False  # already available: nothing missed
    gone, needs = rules.presence_after(back, {"type": "status.ok", "available": False})
    assert not gone.gets_offers and needs is False
    # Available while busy: no offers yet, so no snapshot until the hold ends.
    busy = rules.Presence(available=False, busy=True)
    after, needs = rules.presence_after(busy, {"type": "status.ok", "available": True})
    assert after == rules.Presence(available=True, busy=True) and needs is False


def test_other_frames_change_nothing() -> None:
    p = rules.Presence(available=True, busy=True)
    for frame in ({"type": "chat.message"}, {"type": "request.gone"}, {}):
        assert rules.presence_after(p, frame) == (p, False)


def test_paused_for_keeps_only_new_clients_away_from_a_paused_therapist() -> None:
    open_ = TherapistProfile(id="t1", name="T")
    paused = TherapistProfile(id="t1", name="T", accepting_new_clients=False)
    assert not rules.paused_for(open_, knows_client=False)
    assert not rules.paused_for(open_, knows_client=True)
    assert rules.paused_for(paused, knows_client=False)
    assert not rules.paused_for(paused, knows_client=True)


def test_a_profile_record_from_before_the_pause_accepts_new_clients() -> None:
    old = {"id": "t1", "name": "T", "regions": ["GB"]}
    profile = TherapistProfile.from_record(old)
    assert profile.accepting_new_clients is True and profile.session_price_minor is None
    paused = TherapistProfile(id="t1", name="T", accepting_new_clients=False, session_price_minor=5)
    assert TherapistProfile.from_record(paused.to_record()) == paused
