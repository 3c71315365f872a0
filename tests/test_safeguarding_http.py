"""Safeguarding alerts (PROTOCOL.md §10) through the whole app on SQLite and
PostgreSQL: the session's therapist raises a concern (any other: 404), every
connected operator gets ``safeguarding.alert`` at once, an operator reads the
concern and acknowledges it once (a second ack answers the first); the
concern is encrypted at rest, never logged, never in a frame, a list or the
email, which goes once per alert to ``DISPATCH_SAFEGUARDING_EMAIL`` over a
real SMTP server on loopback."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from integration.harness import free_port
from sqlalchemy import select
from test_booking_http import C1, OP, T1, T2, TUE_10, World, auth, serve, z
from test_notify_email import Inbox, smtp_server

from care.safeguarding import Safeguarding
from care.tables import safeguarding_alerts
from core.identity import Role, User
from core.wire import JSON_CODEC
from dispatch.hub import Conn
from dispatch.settings import ConfigError, load_settings
from pool.model import Session
from signaling.crypto import Cipher, DataKeyError, new_key

CONCERN = "The client said they have stopped eating and mentioned a plan to hurt themself"
SG_ADDRESS = "safeguarding.lead@example.org"
MAIL = {
    "smtp_url": "smtp://127.0.0.1:9",
    "mail_from": "care@example.com",
    "public_url": "https://care.example.com",
    "safeguarding_email": SG_ADDRESS,
}


@pytest_asyncio.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    async with serve(database_url) as w:
        yield w


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    box = Inbox()
    with smtp_server(box, free_port()) as url:
        box.url = url
        yield box


@contextlib.asynccontextmanager
async def mailing(database_url: str, **overrides: Any) -> AsyncIterator[World]:
    """The app with emails on and the loops stopped (the test sends)."""
    async with serve(database_url, **{**MAIL, **overrides}) as w:
        await w.ctx.loops.stop()
        yield w


async def a_session(world: World, client: str = "c1", therapist: str = "t1") -> str:
    """A booked call of ``client`` with ``therapist``, live, as the pool records it."""
    sid = f"s_{client}_{therapist}"
    booking = f"bk_{client}_{therapist}"
    start = TUE_10
    session = Session(sid, booking, client, therapist, created_at=start - 60, booking_id=booking)
    records = world.ctx.signaling.records
    await records.session_booked(session, client_name=None, therapist_name="Alice", now=start - 60)
    await records.session_live(sid, start)
    world.clock.now = start + 300
    return sid


def operator_console(world: World, user_id: str = "op1") -> Conn:
    """An operator's console as the hub holds it (no socket: what it is sent stays pending)."""

    async def closer(code: int, reason: str) -> None:
        world.ctx.hub.remove(conn)  # as the websocket's end does

    conn = Conn(f"conn-{user_id}", User(user_id, Role.OPERATOR), JSON_CODEC, 64, closer)
    world.ctx.hub.add(conn)
    return conn


def frames(conn: Conn) -> list[dict[str, Any]]:
    out = []
    while conn.pending:
        item = conn.pending.popleft()
        assert isinstance(item, str)
        out.append(json.loads(item))
    return out


def path(sid: str) -> str:
    return f"/v1/sessions/{sid}/safeguarding"


async def test_the_therapist_raises_and_an_operator_reads_and_acknowledges(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    sid = await a_session(world)
    ops = [operator_console(world, "op1"), operator_console(world, "op2")]
    raised = await world.ok("POST", path(sid), T1, 201, json={"concern": CONCERN})
    alert = raised["alert"]
    assert alert == {
        "id": alert["id"],
        "session_id": sid,
        "therapist_id": "t1",
        "client_id": "c1",
        "raised_at": z(TUE_10 + 300),
        "acked_by": None,
        "acked_at": None,
    }
    aid = alert["id"]
    # Every operator's console, at once, without the concern.
    for conn in ops:
        assert frames(conn) == [
            {
                "type": "safeguarding.alert",
                "id": aid,
                "session_id": sid,
                "therapist_id": "t1",
                "client_id": "c1",
                "raised_at": z(TUE_10 + 300),
            }
        ]
    # The list: without the concern; the alert itself: with it.
    listed = await world.ok("GET", "/v1/safeguarding?open=true", OP)
    assert listed == {"alerts": [alert]}
    assert await world.ok("GET", "/v1/safeguarding?open=false", OP) == {"alerts": []}
    read = await world.ok("GET", f"/v1/safeguarding/{aid}", OP)
    assert read == {"alert": {**alert, "concern": CONCERN}}

    world.clock.now = TUE_10 + 600
    acked = await world.ok("POST", f"/v1/safeguarding/{aid}/ack", OP)
    expected = {**alert, "acked_by": "op1", "acked_at": z(TUE_10 + 600)}
    assert acked == {"alert": expected}
    for conn in ops:
        assert frames(conn) == [
            {
                "type": "safeguarding.acked",
                "id": aid,
                "acked_by": "op1",
                "acked_at": z(TUE_10 + 600),
            }
        ]
    # A second ack (another operator, later) answers the first, and tells nobody.
    world.clock.now = TUE_10 + 900
    again = await world.ok("POST", f"/v1/safeguarding/{aid}/ack", auth("operator", "op2"))
    assert again == {"alert": expected}
    assert all(frames(conn) == [] for conn in ops)
    assert await world.ok("GET", "/v1/safeguarding?open=true", OP) == {"alerts": []}
    assert await world.ok("GET", "/v1/safeguarding?open=false", OP) == {"alerts": [expected]}
    assert await world.ok("GET", "/v1/safeguarding", OP) == {"alerts": [expected]}

    out, err = capsys.readouterr()
    assert "hurt themself" not in out + err
    assert "safeguarding.raised" in out + err  # the ids are logged


async def test_open_alerts_come_first_then_the_newest(world: World) -> None:
    sid = await a_session(world)
    ids = []
    for i in range(3):
        world.clock.now = TUE_10 + 400 + i
        ids.append(
            (await world.ok("POST", path(sid), T1, 201, json={"concern": f"c{i}"}))["alert"]["id"]
        )
    await world.ok("POST", f"/v1/safeguarding/{ids[2]}/ack", OP)
    listed = await world.ok("GET", "/v1/safeguarding", OP)
    assert [a["id"] for a in listed["alerts"]] == [ids[1], ids[0], ids[2]]
    await world.error("GET", "/v1/safeguarding?open=maybe", OP, 422, "invalid_field")


async def test_who_may(world: World) -> None:
    sid = await a_session(world)
    # Another therapist's session is as if it did not exist; so is an unknown one.
    await world.error("POST", path(sid), T2, 404, "not_found", json={"concern": CONCERN})
    await world.error("POST", path("s_nope"), T1, 404, "not_found", json={"concern": CONCERN})
    for who in (C1, OP):
        await world.error("POST", path(sid), who, 403, "forbidden", json={"concern": CONCERN})
    r = await world.http.post(path(sid), json={"concern": CONCERN})
    assert r.status_code == 401
    aid = (await world.ok("POST", path(sid), T1, 201, json={"concern": CONCERN}))["alert"]["id"]
    for who in (T1, C1):
        await world.error("GET", "/v1/safeguarding", who, 403, "forbidden")
        await world.error("GET", f"/v1/safeguarding/{aid}", who, 403, "forbidden")
        await world.error("POST", f"/v1/safeguarding/{aid}/ack", who, 403, "forbidden")
    await world.error("GET", "/v1/safeguarding/sg_nope", OP, 404, "not_found")
    await world.error("POST", "/v1/safeguarding/sg_nope/ack", OP, 404, "not_found")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"concern": ""},
        {"concern": "   \n "},
        {"concern": "x" * 4001},
        {"concern": 42},
        {"concern": ["text"]},
        {"concern": "a\x00b"},
    ],
)
async def test_a_bad_concern_is_refused_naming_the_field(world: World, body: Any) -> None:
    sid = await a_session(world)
    err = await world.error("POST", path(sid), T1, 422, "invalid_field", json=body)
    assert err["field"] == "concern"
    assert await world.ok("GET", "/v1/safeguarding", OP) == {"alerts": []}


async def test_the_longest_concern_is_taken_and_a_non_object_is_bad_message(
    world: World,
) -> None:
    sid = await a_session(world)
    await world.ok("POST", path(sid), T1, 201, json={"concern": "é" * 4000})
    for content in (b"[1]", b"nope", b""):
        await world.error("POST", path(sid), T1, 400, "bad_message", content=content)


async def test_the_concern_is_encrypted_at_rest(world: World, database_url: str) -> None:
    sid = await a_session(world)
    await world.ok("POST", path(sid), T1, 201, json={"concern": CONCERN})
    async with world.ctx.db.reading() as conn:
        stored = (await conn.execute(select(safeguarding_alerts.c.concern))).scalar_one()
    assert b"stopped eating" not in bytes(stored)
    if database_url.startswith("sqlite"):
        file = Path(database_url.split("///", 1)[1])
        parts = list(file.parent.glob(file.name + "*"))  # with its WAL
        assert parts
        for part in parts:
            assert b"stopped eating" not in part.read_bytes()


async def test_the_email_goes_once_without_the_concern(
    database_url: str, inbox: Inbox, capsys: pytest.CaptureFixture[str]
) -> None:
    async with mailing(database_url, smtp_url=inbox.url) as world:
        sid = await a_session(world)
        aid = (await world.ok("POST", path(sid), T1, 201, json={"concern": CONCERN}))["alert"]["id"]
        [queued] = await world.ctx.outbox.about(aid)
        assert (queued.template, queued.dedupe_key, queued.recipient_id) == (
            "safeguarding_alert",
            f"email:safeguarding_alert:{aid}",
            "safeguarding",
        )
        # Acknowledging queues nothing more.
        await world.ok("POST", f"/v1/safeguarding/{aid}/ack", OP)
        assert len(await world.ctx.outbox.about(aid)) == 1
        mailer = world.ctx.mail
        assert mailer is not None
        assert await mailer.run_once(world.clock()) == 1
        assert await mailer.run_once(world.clock()) == 0
        [(_, rcpt, msg)] = inbox.received
        assert rcpt == [SG_ADDRESS]
        assert msg["Subject"] == f"Safeguarding alert {aid}"
        part = msg.get_body(("plain",))
        assert part is not None
        text = str(part.get_content())
        assert aid in text and sid in text and "https://care.example.com/ops" in text
        assert "stopped eating" not in msg.as_string()
    out, err = capsys.readouterr()
    assert "stopped eating" not in out + err


async def test_no_address_no_email_said_once_at_start_up(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with mailing(database_url, safeguarding_email=None) as world:
        sid = await a_session(world)
        raised = await world.ok("POST", path(sid), T1, 201, json={"concern": CONCERN})
        assert await world.ctx.outbox.about(raised["alert"]["id"]) == []
    out, err = capsys.readouterr()
    assert (out + err).count("safeguarding_email.off") == 1


@pytest.mark.parametrize(
    "value", ["not-an-address", "Lead <lead@example.org>", "a b@example.org", "two@x.org,c@y.org"]
)
def test_the_setting_takes_one_bare_address(value: str) -> None:
    with pytest.raises(ConfigError, match="DISPATCH_SAFEGUARDING_EMAIL"):
        load_settings({"dev": True, "safeguarding_email": value}, env={})
    ok = load_settings({"dev": True, "safeguarding_email": SG_ADDRESS}, env={})
    assert ok.safeguarding_email == SG_ADDRESS


async def test_dispatch_keys_rotate_re_encrypts_concerns(world: World) -> None:
    sid = await a_session(world)
    aid = (await world.ok("POST", path(sid), T1, 201, json={"concern": CONCERN}))["alert"]["id"]
    old = world.ctx.settings.data_key
    new = new_key()
    both = Safeguarding(world.ctx.db, Cipher.from_setting(f"{new},{old}"))
    assert await both.rotate_keys(batch=1) == 1
    only_new = Safeguarding(world.ctx.db, Cipher.from_setting(new))
    alert, concern = await only_new.concern(aid)
    assert (alert.id, concern) == (aid, CONCERN)
    with pytest.raises(DataKeyError):
        await Safeguarding(world.ctx.db, Cipher.from_setting(old)).concern(aid)
