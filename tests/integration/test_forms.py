"""Care forms across two server processes on one Redis and one database
(PROTOCOL.md §10), on SQLite and on PostgreSQL: a client fills its forms
through server A and books a session through server B (refused before, with
the forms named); a minor's guardian consent, recorded where the request was
made, is read by the therapist who took the request, through the other
server, and that read is on the audit trail."""

from __future__ import annotations

from typing import Any

import pytest
from test_forms import FORM_ANSWERS

from care.audit import AuditTrail
from core.db import Database

from .harness import TERMS_VERSION, Cluster, ServerProcess, StartCluster, about, token, with_ref

pytestmark = pytest.mark.integration

ALL_DAY = [
    {"day": d, "start": "00:00", "end": "23:59"}
    for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
]
MARKER = "marker-f0rm: panic attacks on the train"


async def _ok(
    c: Cluster, server: ServerProcess, method: str, path: str, tok: str, body: Any = None
) -> Any:
    resp = await c.call(server, method, path, tok, body)
    assert resp.status_code in (200, 201), resp.text
    return resp.json()


async def test_forms_filled_on_one_server_let_a_session_be_booked_on_the_other(
    start_cluster: StartCluster, database_url: str
) -> None:
    c = await start_cluster(2, database_url=database_url)
    a, b = c[0], c[1]
    client = token("client", "c-forms")
    await c.put_therapist(a, "t1", name="Dr Forms")
    await _ok(
        c, b, "PUT", "/v1/therapists/t1/availability", token("therapist", "t1"),
        {"timezone": "UTC", "weekly": ALL_DAY},
    )  # fmt: skip
    assert await c.fund(a, "c-forms")
    slots = await _ok(c, b, "GET", "/v1/therapists/t1/slots?type=session&days=3", client)
    body = {"therapist_id": "t1", "type": "session", "start": slots["slots"][0]["start"]}

    refused = await c.call(b, "POST", "/v1/bookings", client, body)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "intake_required"
    assert refused.json()["error"]["forms"] == ["intake", "consent", "billing"]

    for name, answers in FORM_ANSWERS.items():
        if name == "intake":
            answers = {**answers, "reason": MARKER}
        put = await _ok(c, a, "PUT", f"/v1/me/forms/{name}", client, answers)
        assert put["form"]["state"] == "done"
    status = await _ok(c, b, "GET", "/v1/me/forms", client)
    assert status["complete"] is True
    mine = await _ok(c, b, "GET", "/v1/me/forms/intake", client)
    assert mine["form"]["answers"]["reason"] == MARKER  # one client key, both servers

    made = await _ok(c, b, "POST", "/v1/bookings", client, body)
    assert [x["type"] for x in made["bookings"]] == ["session"]
    # The therapist it booked reads the forms through the other server.
    read = await _ok(c, a, "GET", "/v1/clients/c-forms/forms", token("therapist", "t1"))
    assert read["forms"][0]["answers"]["reason"] == MARKER
    for server in (a, b):
        assert MARKER not in server.log_tail(10_000)


async def test_a_minors_guardian_consent_is_seen_by_the_therapist_who_takes_it(
    start_cluster: StartCluster, database_url: str
) -> None:
    c = await start_cluster(2, database_url=database_url)
    a, b = c[0], c[1]
    await c.put_therapist(b, "t-minors", works_with_minors=True)
    therapist = await c.therapist(b, "t-minors")
    tok = token("client", "c-minor")
    ws = await c.ws(a, "c-minor@A")
    await ws.auth(tok)
    assert await c.fund(a, "c-minor")
    draft = {"region": "GB-ENG", "language": "en", "age": 15, "guardian_consent": True}
    made = await c.call(a, "POST", "/v1/requests", tok, draft, {"Idempotency-Key": "minor-it"})
    assert made.status_code == 201, made.text
    rid = made.json()["request"]["id"]
    # Replayed through the other server: still one record.
    again = await c.call(b, "POST", "/v1/requests", tok, draft, {"Idempotency-Key": "minor-it"})
    assert again.status_code == 201 and again.json()["request"]["id"] == rid

    # Before taking it, the therapist may not read the client's forms.
    t_tok = token("therapist", "t-minors")
    early = await c.call(a, "GET", "/v1/clients/c-minor/forms", t_tok)
    assert early.status_code == 403, early.text

    await therapist.send({"type": "claim", "request_id": rid, "ref": "claim"})
    ok = await therapist.expect(("claim.ok", "error"), 10, with_ref("claim"))
    assert ok["type"] == "claim.ok", ok
    await ws.expect("request.offer", 10, about(rid))
    await ws.send(
        {"type": "offer.accept", "request_id": rid, "terms_version": TERMS_VERSION, "ref": "acc"}
    )
    await therapist.expect("session.ready", 10)

    read = await _ok(c, a, "GET", "/v1/clients/c-minor/forms", t_tok)
    [guardian] = read["consents"]
    assert (guardian["kind"], guardian["version"], guardian["about_id"]) == ("guardian", 1, rid)
    assert guardian["given_at"].endswith("Z")

    db = Database.from_url(database_url)
    try:
        entries = await AuditTrail(db).of_subject("c-minor")
    finally:
        await db.aclose()
    assert [(e.actor_id, e.record) for e in entries] == [("t-minors", "forms")]
