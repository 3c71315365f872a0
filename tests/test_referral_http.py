"""Referral codes (PROTOCOL.md §10) through the whole app on SQLite and
PostgreSQL: a therapist's code and share link, a client linked once by it,
the booking a referred client may make while its therapist takes no new
clients, and the head start its quick-connect requests get when its
therapist is there to see them (``DISPATCH_REFERRAL_HEAD_START_S``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from test_booking_http import C1, C2, OP, PROFILE, T0, T1, T2, TUE_10, World, auth, serve, z

from care.referral import ALPHABET, CODE_LENGTH, Referrals
from core.identity import Role

BODY = {"region": "GB-ENG", "language": "en", "topics": ["anxiety"]}


@pytest_asyncio.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    async with serve(database_url) as w:
        await w.ok("PUT", "/v1/therapists/t2", OP, 201, json={**PROFILE, "name": "Bob"})
        yield w


async def code_of(world: World, who: dict[str, str] = T1) -> str:
    got = await world.ok("GET", "/v1/me/referral", who)
    code: str = got["code"]
    assert got == {"code": code, "link": f"/r/{code}"}
    return code


async def test_a_therapist_has_one_code_and_a_share_link(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await code_of(world)
    assert len(code) == CODE_LENGTH and set(code) <= set(ALPHABET)
    assert await code_of(world) == code  # made once, kept
    assert await code_of(world, T2) != code
    await world.error("GET", "/v1/me/referral", C1, 403, "forbidden")
    await world.error("GET", "/v1/me/referral", OP, 403, "forbidden")
    await world.error("GET", "/v1/me/referral", {}, 401, "unauthorized")
    out, err = capsys.readouterr()
    assert code not in out + err
    # The share page: served for any code (the page itself checks nothing).
    page = await world.http.get(f"/r/{code}")
    assert page.status_code == 200 and "referral_page.js" in page.text


async def test_first_asks_at_once_get_the_same_code(world: World) -> None:
    referrals = Referrals(world.ctx.db)
    codes = await asyncio.gather(*(referrals.code_of("t9", T0) for _ in range(5)))
    assert len(set(codes)) == 1


async def test_a_client_is_linked_once(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    code, other = await code_of(world), await code_of(world, T2)
    world.clock.now = T0 + 5
    linked = await world.ok("POST", "/v1/me/referral", C1, json={"code": code})
    assert linked == {"therapist_id": "t1", "linked_at": z(T0 + 5), "therapist_name": "Alice"}
    # The same code again (in lowercase, with spaces): the first link, unchanged.
    world.clock.now = T0 + 50
    again = await world.ok("POST", "/v1/me/referral", C1, json={"code": f" {code.lower()} "})
    assert again == linked
    err = await world.error("POST", "/v1/me/referral", C1, 409, "conflict", json={"code": other})
    assert err["therapist_id"] == "t1"
    assert await Referrals(world.ctx.db).therapist_of("c1") == "t1"
    # Unknown, malformed, or not a client.
    await world.error("POST", "/v1/me/referral", C2, 404, "not_found", json={"code": "ABCDEFGH"})
    for bad in ({"code": "ABC"}, {"code": "ABCDEFG0"}, {"code": 12345678}, {}):
        err = await world.error("POST", "/v1/me/referral", C2, 422, "invalid_field", json=bad)
        assert err["field"] == "code"
    await world.error("POST", "/v1/me/referral", C2, 400, "bad_message", json=["x"])
    await world.error("POST", "/v1/me/referral", T2, 403, "forbidden", json={"code": code})
    assert await Referrals(world.ctx.db).therapist_of("c2") is None
    out, err_out = capsys.readouterr()
    assert code not in out + err_out


async def test_a_referred_client_books_its_therapist_while_it_is_paused(world: World) -> None:
    paused = {**PROFILE, "accepting_new_clients": False}
    await world.ok("PUT", "/v1/therapists/t1", OP, json=paused)
    await world.error(
        "POST",
        "/v1/bookings",
        C2,
        422,
        "paused",
        json={"therapist_id": "t1", "type": "intro", "start": z(TUE_10)},
    )
    await world.ok("POST", "/v1/me/referral", C1, json={"code": await code_of(world)})
    made = await world.book(C1, type="intro", start=z(TUE_10))
    assert made["bookings"][0]["client_id"] == "c1"
    # The link is to t1 alone: t2, paused too, still takes c1 for new.
    await world.ok("PUT", "/v1/therapists/t2", OP, json={**paused, "name": "Bob"})
    await world.ok(
        "PUT",
        "/v1/therapists/t2/availability",
        T2,
        json={
            "timezone": "Europe/London",
            "weekly": [{"day": "tue", "start": "09:00", "end": "17:00"}],
        },
    )
    await world.error(
        "POST",
        "/v1/bookings",
        C1,
        422,
        "paused",
        json={"therapist_id": "t2", "type": "intro", "start": z(TUE_10)},
    )


async def _available(world: World, tid: str) -> None:
    store = world.ctx.store
    await store.connect(tid, Role.THERAPIST, f"conn-{tid}", world.ctx.settings.server_id, T0)
    assert await store.set_available(tid, True)


async def test_a_referred_clients_request_is_its_therapists_first(world: World) -> None:
    await world.ok("POST", "/v1/me/referral", C1, json={"code": await code_of(world)})
    # t1 is not there to see it: no head start (nobody waits for it unseen).
    made = await world.ok("POST", "/v1/requests", C1, 201, json=BODY)
    req = await world.ctx.store.get(made["request"]["id"])
    assert req is not None and req.head_start_until is None
    assert "referred_to" not in made["request"]
    await world.ok("DELETE", f"/v1/requests/{req.id}", C1)
    # t1 available: the request is its alone for the head start (20 s).
    await _available(world, "t1")
    world.clock.now = T0 + 30
    made = await world.ok("POST", "/v1/requests", C1, 201, json=BODY)
    req = await world.ctx.store.get(made["request"]["id"])
    assert req is not None
    assert (req.referred_to, req.head_start_until) == ("t1", T0 + 50)
    # A client with no link: none, whatever its body says.
    await _available(world, "t2")
    forged = {**BODY, "referred_to": "t2", "head_start_s": 500, "head_start_until": T0 + 999}
    made = await world.ok("POST", "/v1/requests", C2, 201, json=forged)
    plain = await world.ctx.store.get(made["request"]["id"])
    assert plain is not None and plain.head_start_until is None


async def test_no_head_start_with_the_setting_at_zero(database_url: str) -> None:
    async with serve(database_url, referral_head_start_s=0) as world:
        await world.ok("POST", "/v1/me/referral", C1, json={"code": await code_of(world)})
        await _available(world, "t1")
        made = await world.ok("POST", "/v1/requests", C1, 201, json=BODY)
        req = await world.ctx.store.get(made["request"]["id"])
        assert req is not None and req.head_start_until is None


async def test_links_are_per_client_and_therapist(world: World) -> None:
    """Links are per client id: another client's link does not carry over."""
    await world.ok(
        "POST", "/v1/me/referral", auth("client", "c7"), json={"code": await code_of(world)}
    )
    assert await Referrals(world.ctx.db).refers("t1", "c7")
    assert not await Referrals(world.ctx.db).refers("t1", "c1")
    assert not await Referrals(world.ctx.db).refers("t2", "c7")
