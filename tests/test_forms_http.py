"""Care forms over HTTP (PROTOCOL.md §10) through the whole app, on SQLite and
PostgreSQL: the definitions; a client fills its forms (every bad field named,
answers sealed by its own data key, never logged); a session cannot be
booked for it until they are complete (an older consent must be agreed
again); who reads a client's forms, each read by another written to the
audit trail first; a minor's guardian consent recorded once per request;
the welcome email, once."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select, update
from test_booking_http import C1, C2, OP, T1, T2, TUE_10, World, auth, fill_forms, serve, z
from test_client_contact import ADDRESS, mailing
from test_forms import BILLING, CONSENT, FORM_ANSWERS, INTAKE

from care.audit import Record
from care.consents import Consents
from care.tables import consents, form_answers
from core.errors import Unavailable
from dispatch.demo import seed
from dispatch.intake import forms_of
from pool.model import Session

C5 = auth("client", "c5")
SECRET_REASON = "marker-7d41: I cannot sleep since the accident"


@pytest_asyncio.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    # No client has filled its forms here.
    async with serve(database_url, forms=False) as w:
        yield w


async def _session_with(world: World, client: str, therapist: str) -> str:
    sid = f"s_{client}_{therapist}"
    booking = f"bk_{sid}"
    session = Session(sid, booking, client, therapist, created_at=TUE_10 - 60, booking_id=booking)
    await world.ctx.signaling.records.session_booked(
        session, client_name=None, therapist_name="Alice", now=TUE_10 - 60
    )
    return sid


# -- definitions and answers ---------------------------------------------------------------


async def test_every_signed_in_user_reads_the_definitions(world: World) -> None:
    for who in (C1, T1, OP):
        got = await world.ok("GET", "/v1/forms", who)
        assert [f["name"] for f in got["forms"]] == ["intake", "consent", "billing"]
    intake = got["forms"][0]
    assert {"key", "label", "type", "required", "help"} <= set(intake["fields"][0])
    await world.error("GET", "/v1/forms", {}, 401, "unauthorized")


async def test_a_client_fills_its_forms_sealed_by_its_own_key_and_never_logged(
    world: World, log_lines: io.StringIO
) -> None:
    status = await world.ok("GET", "/v1/me/forms", C1)
    assert status["complete"] is False
    assert [(f["name"], f["state"], f["updated_at"]) for f in status["forms"]] == [
        ("intake", "missing", None),
        ("consent", "missing", None),
        ("billing", "missing", None),
    ]
    await world.error("GET", "/v1/me/forms/intake", C1, 404, "not_found")
    body = {**INTAKE, "reason": SECRET_REASON, "gp": "", "date_of_birth": "1990-04-25"}
    put = await world.ok("PUT", "/v1/me/forms/intake", C1, json=body)
    assert put == {
        "form": {"name": "intake", "version": 1, "updated_at": z(world.clock.now), "state": "done"}
    }
    mine = await world.ok("GET", "/v1/me/forms/intake", C1)
    assert mine["form"]["answers"] == {
        **INTAKE,
        "reason": SECRET_REASON,
        "emergency_contact_phone": "+447700900123",
        "date_of_birth": "1990-04-25",
    }
    assert mine["form"]["state"] == "done"
    # Answered again later: replaced, the new time.
    world.clock.now += 60
    again = await world.ok("PUT", "/v1/me/forms/intake", C1, json=body)
    assert again["form"]["updated_at"] == z(world.clock.now)
    await world.ok("PUT", "/v1/me/forms/consent", C1, json=CONSENT)
    status = await world.ok("GET", "/v1/me/forms", C1)
    assert [f["state"] for f in status["forms"]] == ["done", "done", "missing"]
    assert status["complete"] is False
    await world.ok("PUT", "/v1/me/forms/billing", C1, json=BILLING)
    assert (await world.ok("GET", "/v1/me/forms", C1))["complete"] is True

    # At rest: neither the reason nor the phone in clear; the client's key opens it.
    async with world.ctx.db.reading() as conn:
        row = (
            await conn.execute(
                select(form_answers.c.answers).where(
                    form_answers.c.client_id == "c1", form_answers.c.form == "intake"
                )
            )
        ).one()
    sealed = bytes(row.answers)
    assert b"marker-7d41" not in sealed and b"7700900123" not in sealed
    assert world.ctx.data_keys is not None
    key = await world.ctx.data_keys.cipher_for("c1", create=False)
    assert key is not None and "marker-7d41" in key.decrypt(sealed)
    # Another client's key does not.
    await world.ok("PUT", "/v1/me/forms/consent", C2, json=CONSENT)
    other = await world.ctx.data_keys.cipher_for("c2", create=False)
    assert other is not None
    with pytest.raises(Exception, match="cannot be decrypted"):
        other.decrypt(sealed)
    logged = log_lines.getvalue()
    assert "forms.answered" in logged
    assert "marker-7d41" not in logged and "7700900123" not in logged


async def test_bad_answers_are_refused_naming_each_field(world: World) -> None:
    err = await world.error(
        "PUT",
        "/v1/me/forms/intake",
        C1,
        422,
        "invalid_field",
        json={"reason": "x" * 4001, "emergency_contact_phone": "0770", "colour": "blue"},
    )
    assert err["field"] == "reason"
    assert list(err["fields"]) == [
        "reason",
        "emergency_contact_name",
        "emergency_contact_phone",
        "colour",
    ]
    assert "0770" not in str(err)
    err = await world.error(
        "PUT", "/v1/me/forms/consent", C1, 422, "invalid_field", json={"agree_therapy": True}
    )
    assert err["fields"] == {"agree_privacy": "This is required."}
    await world.error("PUT", "/v1/me/forms/intake", C1, 400, "bad_message", json=[1])
    await world.error("PUT", "/v1/me/forms/intake", C1, 400, "bad_message", content=b"{")
    await world.error("PUT", "/v1/me/forms/nope", C1, 404, "not_found", json={})
    await world.error("GET", "/v1/me/forms/nope", C1, 404, "not_found")
    for who in (T1, OP):
        await world.error("PUT", "/v1/me/forms/intake", who, 403, "forbidden", json=INTAKE)
        await world.error("GET", "/v1/me/forms", who, 403, "forbidden")
    # Nothing stored by any of it.
    assert (await world.ok("GET", "/v1/me/forms", C1))["forms"][0]["state"] == "missing"


# -- intake_required ------------------------------------------------------------------------


async def test_a_session_is_booked_only_once_the_forms_are_complete(world: World) -> None:
    err = await world.error(
        "POST",
        "/v1/bookings",
        C1,
        422,
        "intake_required",
        json={"therapist_id": "t1", "type": "session", "start": z(TUE_10)},
    )
    assert err["forms"] == ["intake", "consent", "billing"]
    # Nor may an operator book one on its behalf; an intro needs no forms.
    body = {"therapist_id": "t1", "type": "session", "start": z(TUE_10), "client_id": "c1"}
    err = await world.error("POST", "/v1/bookings", OP, 422, "intake_required", json=body)
    assert err["forms"] == ["intake", "consent", "billing"]
    await world.book(C1, type="intro", start=z(TUE_10 + 86400))
    await world.ok("PUT", "/v1/me/forms/intake", C1, json=INTAKE)
    await world.ok("PUT", "/v1/me/forms/billing", C1, json=BILLING)
    err = await world.error("POST", "/v1/bookings", OP, 422, "intake_required", json=body)
    assert err["forms"] == ["consent"]
    await world.ok("PUT", "/v1/me/forms/consent", C1, json=CONSENT)
    await world.book(C1, start=z(TUE_10))

    # A new consent version (here: the stored one made older) must be agreed
    # again; an older intake still counts.
    async with world.ctx.db.writing() as conn:
        await conn.execute(
            update(form_answers)
            .where(form_answers.c.client_id == "c1", form_answers.c.form.in_(["consent", "intake"]))
            .values(version=0)
        )
    status = await world.ok("GET", "/v1/me/forms", C1)
    assert [f["state"] for f in status["forms"]] == ["outdated", "outdated", "done"]
    assert status["complete"] is False
    err = await world.error(
        "POST",
        "/v1/bookings",
        C1,
        422,
        "intake_required",
        json={"therapist_id": "t1", "type": "session", "start": z(TUE_10 + 7200)},
    )
    assert err["forms"] == ["consent"]
    await world.ok("PUT", "/v1/me/forms/consent", C1, json=CONSENT)
    await world.book(C1, start=z(TUE_10 + 7200))
    # Each agreement is kept.
    got = await world.ok("GET", "/v1/clients/c1/forms", C1)
    assert [(c["kind"], c["version"]) for c in got["consents"]] == [("consent", 1)] * 2


async def test_a_therapist_booking_a_follow_up_needs_the_forms_too(world: World) -> None:
    await _session_with(world, "c2", "t1")
    body = {"therapist_id": "t1", "type": "session", "start": z(TUE_10), "client_id": "c2"}
    err = await world.error("POST", "/v1/bookings", T1, 422, "intake_required", json=body)
    assert err["forms"] == ["intake", "consent", "billing"]
    await fill_forms(world, C2)
    await world.ok("POST", "/v1/bookings", T1, 201, json=body)


# -- who reads a client's forms ---------------------------------------------------------------


async def test_who_reads_a_clients_forms_and_the_audit_trail(
    world: World, log_lines: io.StringIO
) -> None:
    await world.ok("PUT", "/v1/me/forms/intake", C1, json={**INTAKE, "reason": SECRET_REASON})
    await world.ok("PUT", "/v1/me/forms/consent", C1, json=CONSENT)
    path = "/v1/clients/c1/forms"
    audit = world.ctx.audit
    assert audit is not None

    # The client itself: no audit entry.
    own = await world.ok("GET", path, C1)
    assert own["client_id"] == "c1"
    assert [f["name"] for f in own["forms"]] == ["intake", "consent"]
    assert own["forms"][0]["answers"]["reason"] == SECRET_REASON
    assert own["consents"] == [
        {"kind": "consent", "version": 1, "given_at": z(world.clock.now), "about_id": None}
    ]
    assert await audit.of_subject("c1") == []

    # A therapist with neither a booking nor a session, another client: 403, no entry.
    await world.error("GET", path, T1, 403, "forbidden")
    await world.error("GET", path, C2, 403, "forbidden")
    assert await audit.of_subject("c1") == []

    # A therapist who had a session with it; an operator: answered, audited.
    await _session_with(world, "c1", "t1")
    assert (await world.ok("GET", path, T1))["forms"] == own["forms"]
    world.clock.now += 5
    assert (await world.ok("GET", path, OP))["consents"] == own["consents"]
    entries = await audit.of_subject("c1")
    assert [(e.actor_id, e.actor_role, e.record) for e in entries] == [
        ("t1", "therapist", Record.FORMS.value),
        ("op1", "operator", Record.FORMS.value),
    ]
    assert entries[1].at == world.clock.now

    # A therapist who has a booking with it (no session yet).
    await world.ok(
        "PUT",
        "/v1/therapists/t2",
        OP,
        201,
        json={"name": "Bob", "regions": ["GB-ENG"], "languages": ["en"]},
    )
    await world.error("GET", path, T2, 403, "forbidden")
    await world.ok(
        "PUT",
        "/v1/therapists/t2/availability",
        T2,
        json={"timezone": "UTC", "weekly": [{"day": "tue", "start": "09:00", "end": "17:00"}]},
    )
    await world.book(C1, therapist_id="t2", type="intro", start=z(TUE_10))
    assert (await world.ok("GET", path, T2))["client_id"] == "c1"
    assert len(await audit.of_subject("c1")) == 3

    # A client with nothing: empty lists.
    assert await world.ok("GET", "/v1/clients/c-none/forms", OP) == {
        "client_id": "c-none",
        "forms": [],
        "consents": [],
    }
    await world.error("GET", "/v1/clients/bad%20id/forms", OP, 422, "invalid_field")
    assert "marker-7d41" not in log_lines.getvalue()


# -- guardian consent and the welcome email ---------------------------------------------------


def _draft(**extra: Any) -> dict[str, Any]:
    return {"region": "GB-ENG", "language": "en", **extra}


async def test_a_minors_guardian_consent_is_recorded_once_per_request(world: World) -> None:
    headers = {**C1, "Idempotency-Key": "minor-1"}
    r = await world.http.post(
        "/v1/requests", headers=headers, json=_draft(age=15, guardian_consent=True)
    )
    assert r.status_code == 201, r.text
    request_id = r.json()["request"]["id"]
    again = await world.http.post(
        "/v1/requests", headers=headers, json=_draft(age=15, guardian_consent=True)
    )
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    got = await world.ok("GET", "/v1/clients/c1/forms", C1)
    assert got["consents"] == [
        {"kind": "guardian", "version": 1, "given_at": z(world.clock.now), "about_id": request_id}
    ]
    # An adult's request records none.
    await world.ok("DELETE", f"/v1/requests/{request_id}", C1)
    await world.ok("POST", "/v1/requests", C2, 201, json=_draft(age=30))
    async with world.ctx.db.reading() as conn:
        rows = (await conn.execute(select(consents.c.client_id))).scalars().all()
    assert rows == ["c1"]


async def _guardian_rows(world: World) -> list[tuple[str, str | None]]:
    async with world.ctx.db.reading() as conn:
        rows = (await conn.execute(select(consents.c.client_id, consents.c.about_id))).all()
    return [(r[0], r[1]) for r in rows]


async def test_no_minors_request_exists_without_its_guardian_consent(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consent is written before the request enters the pool: when it
    cannot be, the request is not made (the error is answered, a retry makes
    both)."""

    async def down(*_: Any, **__: Any) -> None:
        raise Unavailable("the database is down")

    real = Consents.give
    monkeypatch.setattr(Consents, "give", down)
    await world.error(
        "POST", "/v1/requests", C1, 503, "unavailable", json=_draft(age=15, guardian_consent=True)
    )
    assert await world.ctx.store.active_request_of("c1") is None
    assert await _guardian_rows(world) == []
    monkeypatch.setattr(Consents, "give", real)
    made = await world.ok(
        "POST", "/v1/requests", C1, 201, json=_draft(age=15, guardian_consent=True)
    )
    assert await _guardian_rows(world) == [("c1", made["request"]["id"])]


async def test_a_request_the_pool_refuses_leaves_no_guardian_consent(world: World) -> None:
    """Written under the id the request would have had, the record goes
    again when the pool makes no request (409: one is waiting already)."""
    minor = _draft(age=15, guardian_consent=True)
    made = await world.ok("POST", "/v1/requests", C1, 201, json=minor)
    await world.error("POST", "/v1/requests", C1, 409, "request_exists", json=minor)
    assert await _guardian_rows(world) == [("c1", made["request"]["id"])]


async def test_the_welcome_email_once_and_only_with_an_address(database_url: str) -> None:
    async with mailing(database_url) as world:
        outbox = world.ctx.outbox
        topup = {"client_id": "c5", "amount_minor": 20000, "reference": "seed-c5"}
        await world.ok("POST", "/v1/wallet/topups", OP, 201, json=topup)
        await world.ok("PATCH", "/v1/me/contact", C5, json={"email": ADDRESS})
        await world.ok("PUT", "/v1/me/forms/intake", C5, json=INTAKE)
        made = await world.ok("POST", "/v1/requests", C5, 201, json=_draft())
        [welcome] = await outbox.about("c5")
        assert (welcome.template, welcome.dedupe_key, welcome.recipient_id) == (
            "welcome_client",
            "welcome:c5",
            "c5",
        )
        # The forms still to fill, by title, and the link; never an answer or the address.
        assert welcome.payload["forms_inline"] == "Your agreement, Billing details"
        assert welcome.payload["forms_url"] == "https://care.example.com/forms"
        assert ADDRESS not in str(welcome.payload) and "Sam Carter" not in str(welcome.payload)
        # Its first booking later: no second welcome.
        await world.ok("DELETE", f"/v1/requests/{made['request']['id']}", C5)
        await world.book(C5, type="intro", start=z(TUE_10))
        assert [m.template for m in await outbox.about("c5")] == ["welcome_client"]
        # A client without an address gets none.
        await world.ok("POST", "/v1/requests", C2, 201, json=_draft())
        assert await outbox.about("c2") == []


async def test_all_answers_helper_fills_every_form(world: World) -> None:
    assert set(FORM_ANSWERS) == {"intake", "consent", "billing"}
    await fill_forms(world, C5)
    assert (await world.ok("GET", "/v1/me/forms", C5))["complete"] is True


async def test_demo_clients_have_their_forms_filled(database_url: str) -> None:
    async with serve(database_url, forms=False, demo=True) as world:
        demo = auth("client", "demo-client-1")
        status = await world.ok("GET", "/v1/me/forms", demo)
        assert status["complete"] is True
        # A change the demo client made is kept over a restart's seeding.
        await world.ok("PUT", "/v1/me/forms/intake", demo, json={**INTAKE, "gp": "Dr Who"})
        ctx = world.ctx
        await seed(ctx.store, None, ctx.clock(), None, forms_of(ctx))
        mine = await world.ok("GET", "/v1/me/forms/intake", demo)
        assert mine["form"]["answers"]["gp"] == "Dr Who"
