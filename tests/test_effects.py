"""pool.effects.effects: who is told what for each transition (PROTOCOL.md §4, §5).

Pure unit tests: each builds the :class:`Change` an adapter would report for
one transition, with the pure rules, and checks the frames that follow from
the protocol's tables:

- therapists' lists: ``request.new`` when a request enters or re-enters
  ``waiting``, ``request.gone`` (reason ``claimed``/``cancelled``/``expired``)
  when it leaves it, and a position refresh for the queue;
- the claiming therapist: ``claim.ok`` (``request_id``, ``expires_at``), and the
  end of its claim (``claim.declined``/``claim.expired``/``claim.cancelled``);
- the client: ``request.state`` on every change, ``request.offer``
  (``request_id``, ``therapist`` public profile, ``expires_at``) while claimed;
- both: ``session.ready`` with the session object S once matched.
"""

from __future__ import annotations

from typing import Any

from pool import rules
from pool.effects import Change, Effect, effects
from pool.model import (
    Draft,
    Reason,
    Request,
    Session,
    SessionState,
    State,
    TherapistProfile,
    Timeouts,
)

T0 = 1_700_000_000.0
T = Timeouts(claim_confirm_s=60, request_max_wait_s=600, reconnect_grace_s=15)
TH = TherapistProfile(
    id="t1",
    name="Ann",
    bio="bio",
    photo_url="https://example.test/a.jpg",
    regions=("GB-ENG",),
    languages=("en",),
    topics=("anxiety",),
)
ICE = [{"urls": ["stun:stun.example.test:3478"]}]

Norm = tuple[Any, ...]


def norm(effect: Effect) -> Norm:
    """An effect as a comparable tuple; request-carrying kinds keep the request."""
    if effect.kind == "user":
        return ("user", effect.to, tuple(sorted(effect.frame.items(), key=lambda kv: kv[0])))
    if effect.kind == "client_state":
        return ("client_state", effect.to, effect.request)
    if effect.kind == "gone":
        return ("gone", effect.request, effect.reason)
    if effect.kind == "new":
        return ("new", effect.request)
    if effect.kind == "positions":
        return ("positions",)
    raise AssertionError(f"unknown effect kind {effect.kind!r}")


def frame(to: str, **fields: Any) -> Norm:
    return ("user", to, tuple(sorted(fields.items(), key=lambda kv: kv[0])))


def same(got: list[Effect], expected: list[Norm]) -> None:
    """Equal as multisets: every expected effect once, nothing else."""
    assert sorted(map(norm, got), key=repr) == sorted(expected, key=repr)


def waiting() -> Request:
    draft = Draft(region="GB-ENG", language="en", topics=("anxiety",), notes="n")
    return rules.new_request(draft, "r1", "c1", T0, T)


def claimed() -> Request:
    return rules.claim(waiting(), TH, None, T0 + 5, T)


def test_create_announces_the_request() -> None:
    req = waiting()
    got = effects(Change(before=None, after=req))
    same(got, [("client_state", "c1", req), ("new", req)])


def test_a_creation_hands_its_place_to_the_announcement_only() -> None:
    req = waiting()
    got = effects(Change(before=None, after=req, position=3))
    assert [(e.kind, e.position) for e in got] == [("client_state", None), ("new", 3)]
    new = got[1]
    assert Effect.from_wire(new.to_wire()) == new  # across the bus
    # Back to waiting after a decline: the place is the servers' to read.
    back = rules.back_to_waiting(claimed(), Reason.DECLINED, T0 + 9, T)
    again = effects(Change(before=claimed(), after=back, position=1))
    assert [e.position for e in again if e.kind == "new"] == [None]


def test_claim_tells_the_pool_the_therapist_and_the_client() -> None:
    before, after = waiting(), claimed()
    got = effects(Change(before=before, after=after, therapist=TH))
    expires = "2023-11-14T22:14:25.000Z"  # T0 + 5 + 60
    same(
        got,
        [
            ("gone", after, "claimed"),
            ("positions",),
            frame("t1", type="claim.ok", request_id="r1", expires_at=expires),
            ("client_state", "c1", after),
            frame(
                "c1",
                type="request.offer",
                request_id="r1",
                therapist=TH.public(),
                expires_at=expires,
            ),
        ],
    )
    offer = next(e.frame for e in got if e.frame.get("type") == "request.offer")
    assert "declined" not in offer["therapist"]
    assert set(offer["therapist"]) >= {"id", "name", "bio", "photo_url"}


def test_decline_returns_the_request_and_tells_the_therapist() -> None:
    before = claimed()
    after = rules.decline(before, "c1", T0 + 10, T)
    got = effects(Change(before=before, after=after))
    same(
        got,
        [
            frame("t1", type="claim.declined", request_id="r1"),
            ("client_state", "c1", after),
            ("new", after),
            ("positions",),
        ],
    )
    # The broadcast carries the declined list so servers can filter t1 out.
    new = next(e for e in got if e.kind == "new")
    assert new.request is not None and new.request.declined == frozenset({"t1"})
    assert not rules.may_see(TH, new.request)


def test_release_returns_the_request() -> None:
    before = claimed()
    after = rules.release(before, "t1", T0 + 10, T)
    got = effects(Change(before=before, after=after))
    # "claim.released" is this project's answer to the therapist's
    # claim.release (PROTOCOL.md names no answer frame; an addition).
    same(
        got,
        [
            frame("t1", type="claim.released", request_id="r1"),
            ("client_state", "c1", after),
            ("new", after),
            ("positions",),
        ],
    )


def test_therapist_lost_expires_the_claim_and_returns_the_request() -> None:
    before = claimed()
    after = rules.on_therapist_lost(before, "t1", T0 + 30, T)
    assert after is not None
    got = effects(Change(before=before, after=after, lost_therapist="t1"))
    same(
        got,
        [
            frame("t1", type="claim.expired", request_id="r1", reason="therapist_lost"),
            ("client_state", "c1", after),
            ("new", after),
            ("positions",),
        ],
    )


def test_cancel_while_waiting() -> None:
    before = waiting()
    after = rules.cancel(before, "c1", T0 + 3)
    got = effects(Change(before=before, after=after))
    same(got, [("gone", after, "cancelled"), ("positions",), ("client_state", "c1", after)])


def test_cancel_while_claimed_tells_the_therapist() -> None:
    before = claimed()
    after = rules.cancel(before, "c1", T0 + 7)
    got = effects(Change(before=before, after=after))
    same(
        got,
        [
            frame("t1", type="claim.cancelled", request_id="r1"),
            ("client_state", "c1", after),
        ],
    )


def test_waiting_deadline() -> None:
    before = waiting()
    after = rules.on_deadline(before, T0 + 600)
    assert after is not None and after.reason == Reason.NO_THERAPIST
    got = effects(Change(before=before, after=after))
    same(got, [("gone", after, "expired"), ("positions",), ("client_state", "c1", after)])


def test_claim_deadline_tells_the_therapist() -> None:
    before = claimed()
    after = rules.on_deadline(before, T0 + 65)
    assert after is not None and after.reason == Reason.CLIENT_NO_RESPONSE
    got = effects(Change(before=before, after=after))
    same(
        got,
        [
            frame("t1", type="claim.expired", request_id="r1", reason="client_no_response"),
            ("client_state", "c1", after),
        ],
    )


def test_accept_sends_session_ready_to_both() -> None:
    before = claimed()
    after = rules.accept(before, "c1", "s1", T0 + 20)
    session = Session(
        id="s1",
        request_id="r1",
        client_id="c1",
        therapist_id="t1",
        state=SessionState.READY,
        created_at=T0 + 20,
    )
    got = effects(Change(before=before, after=after, session=session), ice_servers=ICE)
    s = {
        "id": "s1",
        "request_id": "r1",
        "booking_id": None,
        "client_id": "c1",
        "therapist_id": "t1",
        "state": "ready",
        "ice_servers": ICE,
        "started_at": None,
        "ended_at": None,
    }
    same(
        got,
        [
            ("client_state", "c1", after),
            frame("t1", type="session.ready", session=s),
            frame("c1", type="session.ready", session=s),
        ],
    )
    assert after.state is State.MATCHED


def test_no_state_change_means_no_effects() -> None:
    req = waiting()
    later = req.replace(updated_at=T0 + 1)
    assert effects(Change(before=req, after=later)) == []


def test_gone_reasons_are_the_protocols() -> None:
    """Whatever moves a request out of waiting, request.gone says claimed,
    cancelled or expired, nothing else (PROTOCOL.md §5)."""
    before = waiting()
    outs = [
        claimed(),
        rules.cancel(before, "c1", T0 + 1),
        rules.on_deadline(before, T0 + 600),
    ]
    reasons = set()
    for after in outs:
        assert after is not None
        for e in effects(Change(before=before, after=after, therapist=TH)):
            if e.kind == "gone":
                reasons.add(e.reason)
    assert reasons == {"claimed", "cancelled", "expired"}
