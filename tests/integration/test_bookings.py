"""Scheduled care across two server processes on one Redis and one database
(PROTOCOL.md §8), on SQLite and on PostgreSQL: many clients racing for one
slot through both servers (exactly one wins, the ledger stays balanced), a
weekly series at one wall-clock time, and a booked call joined from both
servers that marks its booking ``occurred`` when it ends."""

from __future__ import annotations

import asyncio
import datetime as dt
import zoneinfo
from typing import Any

import pytest
from test_forms import FORM_ANSWERS

from .harness import Cluster, ServerProcess, StartCluster, token, with_ref

pytestmark = pytest.mark.integration

ALL_DAY = [
    {"day": d, "start": "00:00", "end": "23:59"}
    for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
]
OPERATOR = token("operator", "op-book")


async def _ok(
    c: Cluster, server: ServerProcess, method: str, path: str, tok: str, body: Any = None
) -> Any:
    resp = await c.call(server, method, path, tok, body)
    assert resp.status_code in (200, 201), resp.text
    return resp.json()


async def _fund(c: Cluster, server: ServerProcess, client_id: str, amount: int) -> None:
    body = {"client_id": client_id, "amount_minor": amount, "reference": f"fund-{client_id}"}
    await _ok(c, server, "POST", "/v1/wallet/topups", OPERATOR, body)


async def _fill_forms(c: Cluster, server: ServerProcess, client_id: str) -> None:
    """``client_id`` fills every care form, as it must before a session is
    booked for it (PROTOCOL.md §10)."""
    for name, answers in FORM_ANSWERS.items():
        await _ok(c, server, "PUT", f"/v1/me/forms/{name}", token("client", client_id), answers)


async def _set_up(c: Cluster, timezone: str = "UTC") -> None:
    await c.put_therapist(c[0], "t1", name="Dr Book")
    await _ok(
        c,
        c[1],
        "PUT",
        "/v1/therapists/t1/availability",
        token("therapist", "t1"),
        {"timezone": timezone, "weekly": ALL_DAY},
    )


async def _first_slot(c: Cluster, server: ServerProcess, kind: str = "session") -> str:
    today = dt.datetime.now(dt.UTC).date().isoformat()
    got = await _ok(
        c, server, "GET", f"/v1/therapists/t1/slots?type={kind}&from={today}&days=2", OPERATOR
    )
    start: str = got["slots"][0]["start"]
    return start


async def test_many_clients_race_for_one_slot_through_two_servers(
    start_cluster: StartCluster, database_url: str
) -> None:
    c = await start_cluster(2, database_url=database_url)
    await _set_up(c)
    clients = [f"c-race-{i}" for i in range(16)]
    await asyncio.gather(*(_fund(c, c[i % 2], cid, 10_000) for i, cid in enumerate(clients)))
    await asyncio.gather(*(_fill_forms(c, c[i % 2], cid) for i, cid in enumerate(clients)))
    start = await _first_slot(c, c[0])
    body = {"therapist_id": "t1", "type": "session", "start": start}
    answers = await asyncio.gather(
        *(
            c.call(c[i % 2], "POST", "/v1/bookings", token("client", cid), body)
            for i, cid in enumerate(clients)
        )
    )
    codes = sorted(r.status_code for r in answers)
    assert codes == [201] + [409] * (len(clients) - 1), [r.text for r in answers]
    assert all(r.json()["error"]["code"] == "slot_taken" for r in answers if r.status_code == 409)
    [winner] = [cid for cid, r in zip(clients, answers, strict=True) if r.status_code == 201]
    for i, cid in enumerate(clients):
        wallet = await _ok(c, c[(i + 1) % 2], "GET", "/v1/wallet", token("client", cid))
        assert wallet["balance_minor"] == 10_000
        assert wallet["held_minor"] == (6000 if cid == winner else 0)
    listed = await _ok(c, c[1], "GET", "/v1/bookings", OPERATOR)
    assert [b["client_id"] for b in listed["bookings"]] == [winner]
    check = await _ok(c, c[0], "GET", "/v1/ledger/check", OPERATOR)
    assert check["balanced"] is True


async def test_a_weekly_series_made_on_one_server_is_seen_on_the_other(
    start_cluster: StartCluster, database_url: str
) -> None:
    c = await start_cluster(2, database_url=database_url)
    await _set_up(c, "Europe/London")
    await _fund(c, c[0], "c-series", 50_000)
    await _fill_forms(c, c[1], "c-series")
    start = await _first_slot(c, c[0])
    made = await _ok(
        c,
        c[0],
        "POST",
        "/v1/bookings",
        token("client", "c-series"),
        {"therapist_id": "t1", "type": "session", "start": start, "repeat_weekly": 4},
    )
    assert len(made["bookings"]) == 4
    listed = await _ok(c, c[1], "GET", "/v1/bookings", token("therapist", "t1"))
    assert [b["id"] for b in listed["bookings"]] == [b["id"] for b in made["bookings"]]
    london = zoneinfo.ZoneInfo("Europe/London")
    walls = {
        dt.datetime.fromisoformat(b["start"].replace("Z", "+00:00")).astimezone(london).time()
        for b in listed["bookings"]
    }
    assert len(walls) == 1  # one wall-clock time, whatever the clocks did
    assert len({b["series_id"] for b in listed["bookings"]}) == 1
    wallet = await _ok(c, c[1], "GET", "/v1/wallet", token("client", "c-series"))
    assert wallet["held_minor"] == 4 * 6000
    # The same slot again, through the other server: taken.
    again = await c.call(
        c[1],
        "POST",
        "/v1/bookings",
        token("client", "c-other"),
        {"therapist_id": "t1", "type": "intro", "start": listed["bookings"][2]["start"]},
    )
    assert again.status_code == 409, again.text


async def _join(ws: Any, session_id: str, ref: str) -> None:
    await ws.send({"type": "session.join", "session_id": session_id, "ref": ref})
    joined = await ws.expect(("session.joined", "error"), 10, with_ref(ref))
    assert joined["type"] == "session.joined", joined


@pytest.mark.timeout(180)  # it waits for the slot's start: up to a minute
async def test_a_booked_call_joined_from_both_servers(
    start_cluster: StartCluster, database_url: str
) -> None:
    # Slots every minute and no notice: the first one starts within a minute,
    # so the call may be opened now (from 10 minutes before).
    c = await start_cluster(
        2,
        database_url=database_url,
        booking_min_notice_h=0,
        slot_step_min=1,
        intro_minutes=5,
        qc_guard_min=0,
    )
    a, b = c[0], c[1]
    await _set_up(c)
    start = await _first_slot(c, a, "intro")
    booked = await _ok(
        c,
        a,
        "POST",
        "/v1/bookings",
        token("client", "c-call"),
        {"therapist_id": "t1", "type": "intro", "start": start},
    )
    booking_id = booked["bookings"][0]["id"]
    client = await c.client(a, "c-call")
    therapist = await c.therapist(b, "t1", available=False)
    path = f"/v1/bookings/{booking_id}/session"
    s_client = (await _ok(c, a, "POST", path, token("client", "c-call")))["session"]
    s_therapist = (await _ok(c, b, "POST", path, token("therapist", "t1")))["session"]
    assert s_client["id"] == s_therapist["id"]
    assert s_client["booking_id"] == booking_id
    sid = s_client["id"]
    ready_c = await client.expect("session.ready", 10)
    ready_t = await therapist.expect("session.ready", 10)
    assert ready_c["session"]["id"] == ready_t["session"]["id"] == sid
    await _join(client, sid, "jc")
    await _join(therapist, sid, "jt")
    await client.expect("session.live", 10)
    await therapist.expect("session.live", 10)
    # A booked call is not billed per minute; once its start has passed and it
    # ends, its booking is marked occurred by itself (on whichever server).
    start_ts = dt.datetime.fromisoformat(start.replace("Z", "+00:00")).timestamp()
    await asyncio.sleep(max(0.0, start_ts - dt.datetime.now(dt.UTC).timestamp()) + 0.5)
    await therapist.send({"type": "session.end", "session_id": sid, "ref": "end"})
    await client.expect("session.ended", 10)
    await therapist.expect("session.ended", 10)
    state = None
    for _ in range(100):
        got = await _ok(c, b, "GET", "/v1/bookings", token("client", "c-call"))
        state = got["bookings"][0]["state"]
        if state == "occurred":
            break
        await asyncio.sleep(0.1)
    assert state == "occurred"
    wallet = await _ok(c, a, "GET", "/v1/wallet", token("client", "c-call"))
    assert (wallet["balance_minor"], wallet["held_minor"]) == (0, 0)  # a free intro
