"""Audit, export and erasure (PROTOCOL.md §10) through the whole app on
SQLite and PostgreSQL: reads of transcripts, notes and safeguarding concerns
are on the client's trail before they are answered, and only operators read
it; ``GET /v1/me/export`` is one JSON document of everything held about the
caller (a client's never holds notes); ``POST /v1/users/{id}/erase`` deletes
or shreds a client's care data, keeps its ledger, is recorded and audited,
and answers the same again."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy import insert, select
from test_booking_http import C1, C2, OP, T1, T2, TUE_10, World, auth, serve
from test_feedback_http import booked_session, ended_session
from test_forms import FORM_ANSWERS

from care.tables import consents, data_keys, erasures, form_answers, referrals
from signaling.crypto import DataKeyError
from signaling.tables import sessions as sessions_table

NAME = "Carol Marker-7Q"
EMAIL = "carol.marker7q@example.org"
CHAT_C = "chat-marker-client-r2d2"
CHAT_T = "chat-marker-therapist-c3po"
NOTE = "note-marker-xwing"
ANSWER = "answer-marker-tie"
COMMENT = "comment-marker-falcon"
CONCERN = "concern-marker-endor"


@pytest_asyncio.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    async with serve(database_url, forms=False) as w:
        yield w


async def fill_forms(world: World) -> None:
    """c1 fills every form through the forms routes, its intake's reason a
    marker (the consent form also records a consent)."""
    for name, answers in FORM_ANSWERS.items():
        body = {**answers, "reason": ANSWER} if name == "intake" else answers
        await world.ok("PUT", f"/v1/me/forms/{name}", C1, json=body)


async def full_client(world: World) -> str:
    """c1 with everything: a named session with chat both ways, a note, a
    concern, feedback, forms, a consent, an email, a referral; the session id."""
    sid = await booked_session(world, "c1", TUE_10)
    records = world.ctx.signaling.records
    async with world.ctx.db.session() as s, s.begin():
        await s.execute(
            sessions_table.update().where(sessions_table.c.id == sid).values(client_name=NAME)
        )
    await records.session_live(sid, TUE_10)
    await records.add_chat(sid, "c1", "m1", CHAT_C, TUE_10 + 10)
    await records.add_chat(sid, "t1", "m2", CHAT_T, TUE_10 + 20)
    await records.add_note(sid, "t1", NOTE, TUE_10 + 30)
    await records.session_ended(sid, TUE_10 + 900, "ended_by_client", 900)
    world.clock.now = TUE_10 + 1000
    await world.ok(
        "POST", f"/v1/sessions/{sid}/feedback", C1, 201, json={"rating": 5, "comment": COMMENT}
    )
    await world.ok("POST", f"/v1/sessions/{sid}/safeguarding", T1, 201, json={"concern": CONCERN})
    await fill_forms(world)
    now = dt.datetime.fromtimestamp(world.clock.now, tz=dt.UTC)
    async with world.ctx.db.session() as s, s.begin():
        await s.execute(insert(referrals).values(client_id="c1", therapist_id="t1", linked_at=now))
    await world.ctx.client_contacts.set_email("c1", EMAIL, world.clock.now)
    return sid


async def trail(world: World, subject: str) -> list[tuple[str, str, str, str | None]]:
    got = await world.ok("GET", f"/v1/audit?subject={subject}", OP)
    return [(e["actor_id"], e["actor_role"], e["record"], e["about_id"]) for e in got["entries"]]


# -- the audit trail -------------------------------------------------------------------


async def test_reads_of_records_are_on_the_clients_trail(world: World) -> None:
    sid = await ended_session(world, "c1", TUE_10)
    await world.ctx.signaling.records.add_note(sid, "t1", NOTE, TUE_10 + 950)
    assert await trail(world, "c1") == []
    for who in (C1, T1, OP):
        await world.ok("GET", f"/v1/sessions/{sid}/transcript", who)
    await world.ok("GET", f"/v1/sessions/{sid}/notes", T1)
    alert = await world.ok(
        "POST", f"/v1/sessions/{sid}/safeguarding", T1, 201, json={"concern": CONCERN}
    )
    aid = alert["alert"]["id"]
    await world.ok("GET", f"/v1/safeguarding/{aid}", OP)
    # Refused reads leave no entry.
    await world.error("GET", f"/v1/sessions/{sid}/transcript", C2, 404, "not_found")
    await world.error("GET", f"/v1/sessions/{sid}/notes", T2, 404, "not_found")
    assert await trail(world, "c1") == [
        ("c1", "client", "transcript", sid),
        ("t1", "therapist", "transcript", sid),
        ("op1", "operator", "transcript", sid),
        ("t1", "therapist", "notes", sid),
        ("op1", "operator", "safeguarding", aid),
    ]
    entry = (await world.ok("GET", "/v1/audit?subject=c1", OP))["entries"][0]
    assert set(entry) == {"id", "actor_id", "actor_role", "record", "subject_id", "about_id", "at"}
    assert entry["subject_id"] == "c1" and entry["at"].endswith("Z")
    assert await trail(world, "c2") == []


async def test_the_trail_is_for_operators_and_pages(world: World) -> None:
    sid = await ended_session(world, "c1", TUE_10)
    for _ in range(5):
        await world.ok("GET", f"/v1/sessions/{sid}/transcript", C1)
    first = await world.ok("GET", "/v1/audit?subject=c1&limit=2", OP)
    assert len(first["entries"]) == 2 and first["next"] == first["entries"][-1]["id"]
    ids = [e["id"] for e in first["entries"]]
    after = first["next"]
    while after is not None:
        page = await world.ok("GET", f"/v1/audit?subject=c1&limit=2&after={after}", OP)
        ids += [e["id"] for e in page["entries"]]
        after = page["next"]
    assert len(ids) == 5 and ids == sorted(ids)
    whole = await world.ok("GET", "/v1/audit?subject=c1", OP)
    assert [e["id"] for e in whole["entries"]] == ids and whole["next"] is None
    for who in (C1, T1):
        await world.error("GET", "/v1/audit?subject=c1", who, 403, "forbidden")
    assert (await world.http.get("/v1/audit?subject=c1")).status_code == 401
    for query, field in (
        ("", "subject"),
        ("?subject=", "subject"),
        ("?subject=a%20b", "subject"),
        ("?subject=c1&after=x", "after"),
        ("?subject=c1&limit=0", "limit"),
        ("?subject=c1&limit=501", "limit"),
    ):
        err = await world.error("GET", f"/v1/audit{query}", OP, 422, "invalid_field")
        assert err["field"] == field


# -- export ----------------------------------------------------------------------------


async def test_a_clients_export_holds_its_data_and_never_notes(
    world: World, log_lines: io.StringIO
) -> None:
    sid = await full_client(world)
    # (The set-up's own writes are in aiosqlite's debug lines: skip them.)
    start = len(log_lines.getvalue())
    r = await world.http.get("/v1/me/export", headers=C1)
    assert r.status_code == 200, r.text
    assert r.headers["content-disposition"] == 'attachment; filename="dispatch-export-c1.json"'
    doc = r.json()
    assert (doc["format"], doc["version"]) == ("dispatch-export", 1)
    assert doc["user"] == {"id": "c1", "role": "client", "name": None, "email": EMAIL}
    (session,) = doc["sessions"]
    assert session["id"] == sid and session["client_name"] == NAME
    assert [(m["from"], m["text"]) for m in session["chat"]] == [("c1", CHAT_C), ("t1", CHAT_T)]
    forms = {f["name"]: f for f in doc["forms"]}
    assert sorted(forms) == ["billing", "consent", "intake"]
    assert forms["intake"]["answers"]["reason"] == ANSWER
    assert forms["billing"]["answers"]["postcode"] == "LS1 1AA"
    assert [(c["kind"], c["version"]) for c in doc["consents"]] == [("consent", 1)]
    assert [(f["rating"], f["comment"]) for f in doc["feedback_given"]] == [(5, COMMENT)]
    assert doc["referral"]["therapist_id"] == "t1"
    assert [t["kind"] for t in doc["ledger"]] == ["topup"]
    assert doc["request"] is None and doc["bookings"] == []
    text = r.text
    assert NOTE not in text and CONCERN not in text
    # The export is on the client's own trail, and its content in no log line.
    assert ("c1", "client", "export", None) in await trail(world, "c1")
    for marker in (CHAT_C, CHAT_T, ANSWER, COMMENT, NAME, EMAIL):
        assert marker not in log_lines.getvalue()[start:]
    assert (await world.http.get("/v1/me/export")).status_code == 401


async def test_a_therapists_export_holds_its_notes_and_audits_them(world: World) -> None:
    sid = await full_client(world)
    doc = await world.ok("GET", "/v1/me/export", T1)
    assert doc["user"] == {"id": "t1", "role": "therapist", "name": None}
    assert doc["profile"]["name"] == "Alice"
    assert doc["availability"]["timezone"] == "Europe/London"
    (session,) = doc["sessions"]
    assert session["id"] == sid and "client_name" not in session and "chat" not in session
    assert [n["text"] for n in session["notes"]] == [NOTE]
    assert [(f["rating"], f["comment"]) for f in doc["feedback_received"]] == [(5, COMMENT)]
    assert "client_id" not in doc["feedback_received"][0]
    assert doc["withdrawals"] == [] and doc["referral_code"] is None
    assert ("t1", "therapist", "notes", sid) in await trail(world, "c1")
    assert ("t1", "therapist", "export", None) in await trail(world, "t1")
    # An operator's: its own actions.
    await world.ok("GET", "/v1/audit?subject=c1", OP)
    await world.ok("GET", f"/v1/sessions/{sid}/transcript", OP)
    mine = await world.ok("GET", "/v1/me/export", OP)
    assert mine["user"]["role"] == "operator"
    assert [(a["record"], a["subject_id"]) for a in mine["actions"]] == [
        ("export", "op1"),
        ("transcript", "c1"),
    ]


# -- erasure ---------------------------------------------------------------------------


async def test_erasing_a_client(world: World, log_lines: io.StringIO) -> None:
    sid = await full_client(world)
    start = len(log_lines.getvalue())
    keys = world.ctx.data_keys
    assert keys is not None
    old_cipher = await keys.cipher_for("c1", create=False)
    assert old_cipher is not None
    async with world.ctx.db.reading() as conn:
        sealed = (
            await conn.execute(
                select(form_answers.c.answers).where(form_answers.c.form == "intake")
            )
        ).scalar_one()
    world.clock.now += 60
    got = await world.ok("POST", "/v1/users/c1/erase", OP)
    assert got == {
        "user_id": "c1",
        "erased": {
            "chat_messages": 2,
            "notes": 1,
            "form_answers": 3,
            "data_key": True,
            "names": 1,
            "feedback_comments": 1,
            "contact": True,
            "referral": True,
            "request_cancelled": False,
            "consents_kept": 1,
            "safeguarding_kept": 1,
        },
        "erased_at": got["erased_at"],
        "erased_by": "op1",
    }
    records = world.ctx.signaling.records
    assert await records.transcript(sid) == [] and await records.notes(sid) == []
    rec = await records.get_session(sid)
    assert rec is not None and rec.client_name is None and rec.therapist_id == "t1"
    assert await keys.cipher_for("c1", create=False) is None
    async with world.ctx.db.reading() as conn:
        assert (await conn.execute(select(form_answers))).first() is None
        assert (await conn.execute(select(data_keys))).first() is None
        assert (await conn.execute(select(consents.c.kind))).scalars().all() == ["consent"]
        assert (await conn.execute(select(erasures.c.erased_by))).scalars().all() == ["op1"]
    # Only the old key opened the answers, and it is gone (a backup's copy too).
    assert json.loads(old_cipher.decrypt(bytes(sealed)))["reason"] == ANSWER
    fresh = await keys.cipher_for("c1", create=True)  # a new key opens nothing old
    assert fresh is not None
    with pytest.raises(DataKeyError):
        fresh.decrypt(bytes(sealed))
    assert await world.ctx.client_contacts.email("c1") is None
    # The ledger stays, by id; the feedback's rating stays, its comment not.
    assert [t["kind"] for t in await world.ctx.ledger.transactions("c1", "client")] == ["topup"]
    fb = await world.ok("GET", f"/v1/sessions/{sid}/feedback", C1)
    assert (fb["feedback"]["rating"], fb["feedback"]["comment"]) == (5, None)
    # The export now holds none of it.
    doc = await world.ok("GET", "/v1/me/export", C1)
    assert doc["sessions"][0]["chat"] == [] and doc["forms"] == [] and doc["referral"] is None
    assert doc["sessions"][0]["client_name"] is None and doc["user"]["email"] is None
    # Audited, and logged by ids alone.
    assert ("op1", "operator", "erase", None) in await trail(world, "c1")
    logged = log_lines.getvalue()[start:]
    assert '"client.erased"' in logged
    for marker in (CHAT_C, CHAT_T, NOTE, ANSWER, COMMENT, NAME, EMAIL, CONCERN):
        assert marker not in logged

    # Again: the first erasure's record, nothing more to erase.
    world.clock.now += 3600
    again = await world.ok("POST", "/v1/users/c1/erase", auth("operator", "op2"))
    assert again == got
    assert [e[2] for e in await trail(world, "c1")].count("erase") == 2
    # New data since is erased too, and counted.
    await records.add_chat(sid, "t1", "m3", CHAT_T, world.clock.now)
    third = await world.ok("POST", "/v1/users/c1/erase", OP)
    assert third["erased"]["chat_messages"] == 3 and third["erased_at"] == got["erased_at"]


async def test_who_and_what_may_be_erased(world: World) -> None:
    sid = await ended_session(world, "c1", TUE_10)
    for who in (C1, T1):
        await world.error("POST", "/v1/users/c1/erase", who, 403, "forbidden")
    assert (await world.http.post("/v1/users/c1/erase")).status_code == 401
    # A therapist (a profile, sessions), an operator (audit entries as one).
    await world.ok("GET", f"/v1/sessions/{sid}/transcript", auth("operator", "op9"))
    for uid in ("t1", "op9"):
        err = await world.error("POST", f"/v1/users/{uid}/erase", OP, 422, "invalid_field")
        assert err["field"] == "id"
    await world.error("POST", "/v1/users/a%20b/erase", OP, 422, "invalid_field")
    # An id the service never saw: nothing to erase.
    got = await world.ok("POST", "/v1/users/nobody-here/erase", OP)
    assert got["erased"]["chat_messages"] == 0 and got["erased"]["data_key"] is False
