"""Session feedback (PROTOCOL.md §10) through the whole app on SQLite and
PostgreSQL: the session's client gives it once, after a session that went
live has ended and within 7 days of its end (by the app's clock); the
therapist and operators read the count, the average and the comments, the
therapist without the client's id; comments are encrypted at rest and never
logged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select
from test_booking_http import C1, C2, C3, OP, T1, T2, TUE_10, World, serve, z

from care.feedback import FeedbackStore
from care.tables import feedback as feedback_table
from pool.model import Session
from signaling.crypto import Cipher, DataKeyError, new_key

COMMENT = "Kind and patient; the breathing exercise helped a lot"
DAY = 86400.0


@pytest_asyncio.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    async with serve(database_url) as w:
        yield w


async def booked_session(world: World, client: str, start: float) -> str:
    """A booked call of ``client`` with t1 opened just before ``start``, as
    the pool records it (:meth:`Records.session_booked`); its id."""
    sid = f"s_{client}_{int(start)}"
    booking = f"bk_{client}_{int(start)}"
    session = Session(sid, booking, client, "t1", created_at=start - 60, booking_id=booking)
    await world.ctx.signaling.records.session_booked(
        session, client_name=None, therapist_name="Alice", now=start - 60
    )
    return sid


async def ended_session(world: World, client: str, start: float) -> str:
    """A session that went live at ``start`` and ended 15 minutes later; the
    clock 100 s after its end."""
    sid = await booked_session(world, client, start)
    records = world.ctx.signaling.records
    await records.session_live(sid, start)
    await records.session_ended(sid, start + 900, "ended_by_client", 900)
    world.clock.now = start + 1000
    return sid


def path(sid: str) -> str:
    return f"/v1/sessions/{sid}/feedback"


async def test_the_client_gives_feedback_once_and_the_therapist_reads_it(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    sid = await ended_session(world, "c1", TUE_10)
    assert await world.ok("GET", path(sid), C1) == {"feedback": None}
    given = await world.ok("POST", path(sid), C1, 201, json={"rating": 4, "comment": COMMENT})
    expected = {
        "session_id": sid,
        "therapist_id": "t1",
        "client_id": "c1",
        "rating": 4,
        "comment": COMMENT,
        "created_at": z(TUE_10 + 1000),
    }
    assert given == {"feedback": expected}
    assert await world.ok("GET", path(sid), C1) == {"feedback": expected}
    assert await world.ok("GET", path(sid), OP) == {"feedback": expected}
    # Once: again (also with another rating) is a conflict, the first stays.
    await world.error("POST", path(sid), C1, 409, "conflict", json={"rating": 1})
    assert await world.ok("GET", path(sid), C1) == {"feedback": expected}

    # The therapist: the average and the comment, not who wrote it.
    mine = await world.ok("GET", "/v1/therapists/t1/feedback", T1)
    assert mine == {
        "count": 1,
        "average": 4.0,
        "items": [{"rating": 4, "comment": COMMENT, "created_at": z(TUE_10 + 1000)}],
    }
    # Operators see everything.
    assert await world.ok("GET", "/v1/therapists/t1/feedback", OP) == {
        "count": 1,
        "average": 4.0,
        "items": [expected],
    }
    out, err = capsys.readouterr()
    assert COMMENT not in out + err


async def test_count_average_order_and_limit(world: World) -> None:
    empty = await world.ok("GET", "/v1/therapists/t1/feedback", T1)
    assert empty == {"count": 0, "average": None, "items": []}
    s1 = await booked_session(world, "c1", TUE_10)
    s2 = await booked_session(world, "c2", TUE_10 + 7200)
    s3 = await booked_session(world, "c3", TUE_10 + 4 * 3600)
    records = world.ctx.signaling.records
    for i, sid in enumerate((s1, s2, s3)):
        start = TUE_10 + i * 7200
        await records.session_live(sid, start)
        await records.session_ended(sid, start + 600, "ended_by_client", 600)
    world.clock.now = TUE_10 + DAY
    await world.ok("POST", path(s1), C1, 201, json={"rating": 5})
    world.clock.now += 60
    await world.ok("POST", path(s2), C2, 201, json={"rating": 4, "comment": "  "})
    world.clock.now += 60
    await world.ok("POST", path(s3), C3, 201, json={"rating": 4, "comment": "fine"})
    got = await world.ok("GET", "/v1/therapists/t1/feedback", T1)
    assert (got["count"], got["average"]) == (3, 4.33)
    assert [(i["rating"], i["comment"]) for i in got["items"]] == [
        (4, "fine"),
        (4, None),
        (5, None),
    ]
    assert all(set(i) == {"rating", "comment", "created_at"} for i in got["items"])
    two = await world.ok("GET", "/v1/therapists/t1/feedback?limit=2", OP)
    assert (two["count"], two["average"]) == (3, 4.33)  # over all of it
    assert [i["session_id"] for i in two["items"]] == [s3, s2]
    assert [i["client_id"] for i in two["items"]] == ["c3", "c2"]
    for bad in ("0", "201", "x", "-1", "1.5"):
        err = await world.error(
            "GET", f"/v1/therapists/t1/feedback?limit={bad}", T1, 422, "invalid_field"
        )
        assert err["field"] == "limit"
    # Another therapist has none of it.
    assert (await world.ok("GET", "/v1/therapists/t2/feedback", OP))["count"] == 0


async def test_who_may(world: World) -> None:
    sid = await ended_session(world, "c1", TUE_10)
    body = {"rating": 3}
    # Not its client: as if the session did not exist.
    await world.error("POST", path(sid), C2, 404, "not_found", json=body)
    await world.error("GET", path(sid), C2, 404, "not_found")
    await world.error("POST", "/v1/sessions/nope/feedback", C1, 404, "not_found", json=body)
    for who in (T1, T2, OP):
        await world.error("POST", path(sid), who, 403, "forbidden", json=body)
    await world.error("GET", path(sid), T1, 403, "forbidden")
    # Only that therapist and operators read a therapist's feedback.
    for who in (T2, C1):
        await world.error("GET", "/v1/therapists/t1/feedback", who, 403, "forbidden")
    for r in (
        await world.http.post(path(sid), json=body),
        await world.http.get("/v1/therapists/t1/feedback"),
    ):
        assert r.status_code == 401
    assert (await world.ok("GET", path(sid), C1))["feedback"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "rating"),
        ({"rating": 0}, "rating"),
        ({"rating": 6}, "rating"),
        ({"rating": "5"}, "rating"),
        ({"rating": 4.5}, "rating"),
        ({"rating": True}, "rating"),
        ({"rating": 5, "comment": "x" * 2001}, "comment"),
        ({"rating": 5, "comment": 7}, "comment"),
        ({"rating": 5, "comment": "a\x00b"}, "comment"),
    ],
)
async def test_bad_fields_are_refused(world: World, body: dict[str, Any], field: str) -> None:
    sid = await ended_session(world, "c1", TUE_10)
    err = await world.error("POST", path(sid), C1, 422, "invalid_field", json=body)
    assert err["field"] == field
    assert (await world.ok("GET", path(sid), C1))["feedback"] is None


async def test_the_longest_comment_and_a_bad_body(world: World) -> None:
    sid = await ended_session(world, "c1", TUE_10)
    for content in (b"[1]", b"nope", b""):
        await world.error("POST", path(sid), C1, 400, "bad_message", content=content)
    longest = "é" * 2000
    given = await world.ok("POST", path(sid), C1, 201, json={"rating": 1, "comment": longest})
    assert given["feedback"]["comment"] == longest


async def test_its_time_not_before_the_end_nor_after_7_days(world: World) -> None:
    sid = await booked_session(world, "c1", TUE_10)
    body = {"rating": 5}
    await world.error("POST", path(sid), C1, 422, "too_early", json=body)
    records = world.ctx.signaling.records
    await records.session_live(sid, TUE_10)
    world.clock.now = TUE_10 + 300
    await world.error("POST", path(sid), C1, 422, "too_early", json=body)  # still live
    await records.session_ended(sid, TUE_10 + 900, "ended_by_therapist", 900)
    world.clock.now = TUE_10 + 900 + 7 * DAY + 1
    await world.error("POST", path(sid), C1, 409, "too_late", json=body)
    world.clock.now = TUE_10 + 900 + 7 * DAY  # the last moment
    await world.ok("POST", path(sid), C1, 201, json=body)


async def test_a_session_that_never_went_live_takes_none(world: World) -> None:
    sid = await booked_session(world, "c1", TUE_10)
    await world.ctx.signaling.records.session_ended(sid, TUE_10 + 600, "no_show", 0)
    world.clock.now = TUE_10 + 700
    await world.error("POST", path(sid), C1, 409, "conflict", json={"rating": 2})


async def test_two_at_once_store_one(world: World) -> None:
    sid = await ended_session(world, "c1", TUE_10)
    answers = await asyncio.gather(
        *(
            world.http.post(path(sid), headers=C1, json={"rating": r, "comment": f"try {r}"})
            for r in (1, 2, 3, 4)
        )
    )
    assert sorted(r.status_code for r in answers) == [201, 409, 409, 409]
    assert (await world.ok("GET", "/v1/therapists/t1/feedback", T1))["count"] == 1


async def test_comments_are_encrypted_at_rest(world: World, database_url: str) -> None:
    sid = await ended_session(world, "c1", TUE_10)
    await world.ok("POST", path(sid), C1, 201, json={"rating": 5, "comment": COMMENT})
    async with world.ctx.db.reading() as conn:
        stored = (await conn.execute(select(feedback_table.c.comment))).scalar_one()
    assert COMMENT.encode() not in bytes(stored)
    assert b"breathing" not in bytes(stored)
    if database_url.startswith("sqlite"):
        file = Path(database_url.split("///", 1)[1])
        for part in file.parent.glob(file.name + "*"):  # with its WAL
            assert b"breathing" not in part.read_bytes()


async def test_dispatch_keys_rotate_covers_comments(world: World) -> None:
    sid = await ended_session(world, "c1", TUE_10)
    await world.ok("POST", path(sid), C1, 201, json={"rating": 5, "comment": COMMENT})
    other = await ended_session(world, "c2", TUE_10 + 7200)
    await world.ok("POST", path(other), C2, 201, json={"rating": 3})  # no comment
    old, new = world.ctx.settings.data_key, new_key()
    both = FeedbackStore(world.ctx.db, Cipher.from_setting(f"{new},{old}"))
    assert await both.rotate_keys(batch=1) == 1
    only_new = FeedbackStore(world.ctx.db, Cipher([new]))
    given = await only_new.get(sid)
    assert given is not None and given.comment == COMMENT
    with pytest.raises(DataKeyError):
        await FeedbackStore(world.ctx.db, Cipher.from_setting(old)).get(sid)
