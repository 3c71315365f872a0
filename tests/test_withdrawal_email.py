"""The "withdrawal scheduled" email (PROTOCOL.md §7, §6) through the whole app:
an operator schedules a therapist's withdrawal, and the email, queued in the
same transaction, arrives once at a real SMTP server on loopback with the
amount and the payout date, in a plain-text part and an HTML one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import embedded_settings
from starlette.testclient import TestClient
from test_app_embedded import PROFILE
from test_notify_email import Inbox, inbox

from core.identity import mint
from dispatch.app import create_app
from dispatch.settings import load_settings

__all__ = ["inbox"]  # the SMTP server fixture, used by name below

SECRET = "withdrawal-email-secret-" + "x" * 40
PUBLIC = "https://care.example.com"


def _h(role: str, sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(SECRET, role, sub)}"}


@pytest.fixture(params=["memory", "redis"])
def client(request: pytest.FixtureRequest, tmp_path: Path, inbox: Inbox) -> Iterator[TestClient]:
    overrides = embedded_settings(
        request,
        tmp_path,
        secret=SECRET,
        smtp_url=inbox.url,
        mail_from="Quick connect <care@example.com>",
        public_url=PUBLIC,
        currency="GBP",
    )
    with TestClient(create_app(load_settings(overrides, env={}))) as c:
        yield c


def _wait_for(inbox: Inbox, count: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(inbox.received) < count:
        assert time.monotonic() < deadline, f"{len(inbox.received)} of {count} emails arrived"
        time.sleep(0.05)


def test_scheduling_a_withdrawal_emails_the_therapist_once(
    client: TestClient, inbox: Inbox
) -> None:
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    r = client.put("/v1/therapists/t1", json=PROFILE, headers=_h("operator", "op"))
    assert r.status_code == 201
    r = client.patch(
        "/v1/therapists/t1", json={"email": "t1@example.com"}, headers=_h("therapist", "t1")
    )
    assert r.status_code == 200
    # t1 earned from a session (the ledger directly: this test is about the email).
    now = time.time()
    assert client.portal is not None
    client.portal.call(ctx.ledger.topup, "c1", 10_000, "seed", now)
    assert client.portal.call(ctx.ledger.charge_session, "ses1", "c1", "t1", 5000, now)
    r = client.post("/v1/withdrawals", json={"amount_minor": 1250}, headers=_h("therapist", "t1"))
    assert r.status_code == 201, r.text
    wid = r.json()["withdrawal"]["id"]
    r = client.post(f"/v1/withdrawals/{wid}/invoice", headers=_h("operator", "op"))
    assert r.status_code == 200, r.text
    payout_date = r.json()["withdrawal"]["payout_date"]
    _wait_for(inbox, 1)
    sender, recipients, message = inbox.received[0]
    assert (sender, recipients) == ("care@example.com", ["t1@example.com"])
    assert message["To"] == "t1@example.com"
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    for part in (text.get_content(), html.get_content()):
        assert "£12.50" in part and payout_date in part
        assert f"{PUBLIC}/console" in part
    # A second try at the same step is refused and sends nothing more.
    r = client.post(f"/v1/withdrawals/{wid}/invoice", headers=_h("operator", "op"))
    assert r.status_code == 409
    time.sleep(1.5)
    assert len(inbox.received) == 1
