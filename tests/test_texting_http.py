"""POST /v1/twilio/status (signed by Twilio) and GET /v1/texts (operators), on the
embedded app with the outbox in its SQLite file."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from starlette.testclient import TestClient
from twilio.request_validator import RequestValidator

from core.db import Database
from core.identity import mint
from dispatch.app import create_app
from dispatch.settings import load_settings
from notify.outbox import NewMessage, Outbox

SECRET = "texting-test-secret-" + "x" * 32
TOKEN = "twilio-auth-token-for-tests"
PUBLIC = "https://care.example.com"
URL = PUBLIC + "/v1/twilio/status"
T0 = 1_780_000_000.0


def _db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'dispatch.db'}"


def _app(tmp_path: Path, **overrides: Any) -> TestClient:
    settings: dict[str, Any] = {
        "dev": True,
        "secret": SECRET,
        "database_url": _db_url(tmp_path),
        "twilio_account_sid": "AC" + "0" * 32,
        "twilio_auth_token": TOKEN,
        "twilio_from": "+15005550006",
        "public_url": PUBLIC,
        **overrides,
    }
    return TestClient(create_app(load_settings(settings, env={})))


async def _sent_text(url: str, request_id: str, therapist_id: str, sid: str) -> None:
    db = Database.from_url(url)
    await db.migrate()
    outbox = Outbox(db)
    try:
        message = NewMessage(
            channel="sms",
            dedupe_key=f"sms:{request_id}:{therapist_id}",
            recipient_id=therapist_id,
            about_id=request_id,
            template="someone_waiting",
        )
        async with db.writing() as conn:
            await outbox.queue(conn, [message], T0)
        [m] = await outbox.take("sms", "w", T0)
        await outbox.sent(m.id, "w", sid, T0)
    finally:
        await db.aclose()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    asyncio.run(_sent_text(_db_url(tmp_path), "r1", "t1", "SM1"))
    with _app(tmp_path) as c:
        yield c


def _post_status(client: TestClient, form: dict[str, str], signature: str | None = None) -> Any:
    if signature is None:
        signature = RequestValidator(TOKEN).compute_signature(URL, form)
    return client.post(
        "/v1/twilio/status",
        content=urlencode(form),
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "x-twilio-signature": signature,
        },
    )


def _texts(client: TestClient, request_id: str, role: str = "operator") -> Any:
    token = mint(SECRET, role, "op" if role == "operator" else "someone")
    return client.get(
        f"/v1/texts?request_id={request_id}", headers={"Authorization": f"Bearer {token}"}
    )


def test_a_signed_status_is_recorded_and_listed(client: TestClient) -> None:
    [text] = _texts(client, "r1").json()["texts"]
    assert (text["therapist_id"], text["state"], text["sid"]) == ("t1", "sent", "SM1")
    assert set(text) == {"id", "request_id", "therapist_id", "state", "sid", "created_at"}
    form = {"MessageSid": "SM1", "MessageStatus": "delivered", "AccountSid": "AC" + "0" * 32}
    assert _post_status(client, form).status_code == 204
    assert _texts(client, "r1").json()["texts"][0]["state"] == "delivered"
    # A late "sent", and a repeat: nothing moves backwards; still 204 for Twilio.
    assert _post_status(client, {**form, "MessageStatus": "sent"}).status_code == 204
    assert _post_status(client, form).status_code == 204
    assert _texts(client, "r1").json()["texts"][0]["state"] == "delivered"
    assert _texts(client, "r-other").json() == {"texts": []}


@pytest.mark.parametrize(
    "signature",
    [
        "",
        "not-a-signature",
        RequestValidator("another-token").compute_signature(
            URL, {"MessageSid": "SM1", "MessageStatus": "failed"}
        ),
    ],
)
def test_a_wrong_signature_is_403_and_changes_nothing(client: TestClient, signature: str) -> None:
    r = _post_status(client, {"MessageSid": "SM1", "MessageStatus": "failed"}, signature)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert _texts(client, "r1").json()["texts"][0]["state"] == "sent"


def test_a_signature_for_other_fields_is_403(client: TestClient) -> None:
    signed = RequestValidator(TOKEN).compute_signature(
        URL, {"MessageSid": "SM1", "MessageStatus": "delivered"}
    )
    r = _post_status(client, {"MessageSid": "SM1", "MessageStatus": "failed"}, signed)
    assert r.status_code == 403


def test_bad_forms(client: TestClient) -> None:
    assert _post_status(client, {"MessageSid": "SM1"}).status_code == 422
    big = {"MessageSid": "SM1", "MessageStatus": "sent", "pad": "x" * 70_000}
    assert _post_status(client, big).status_code == 400
    r = client.post(
        "/v1/twilio/status",
        content=b"\xff\xfe",
        headers={"x-twilio-signature": "x", "content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_message"


def test_texts_are_for_operators_with_a_request_id(client: TestClient) -> None:
    assert _texts(client, "r1", role="therapist").status_code == 403
    assert _texts(client, "r1", role="client").status_code == 403
    assert client.get("/v1/texts?request_id=r1").status_code == 401
    token = mint(SECRET, "operator", "op")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/texts", headers=headers).status_code == 422
    assert client.get("/v1/texts?request_id=a%20b", headers=headers).status_code == 422


def test_without_twilio_settings_the_callback_is_404(tmp_path: Path) -> None:
    with _app(tmp_path, twilio_from=None) as c:
        r = _post_status(c, {"MessageSid": "SM1", "MessageStatus": "sent"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
