"""PATCH /v1/therapists/{id} (PROTOCOL.md §7): a therapist edits its own profile,
an operator any; credentials are operators' alone; contact details are shown
only to the therapist and operators."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import embedded_settings
from starlette.testclient import TestClient
from test_app_embedded import PROFILE

from core.identity import mint
from dispatch.app import create_app
from dispatch.settings import load_settings

SECRET = "patch-test-secret-" + "x" * 40
PRIVATE = {"phone", "email", "sms_opt_in", "quiet_hours"}


@pytest.fixture(params=["memory", "redis"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    overrides = embedded_settings(request, tmp_path, secret=SECRET)
    with TestClient(create_app(load_settings(overrides, env={}))) as c:
        for tid in ("t1", "t2"):
            r = c.put(f"/v1/therapists/{tid}", json=PROFILE, headers=_h("operator", "op"))
            assert r.status_code in (200, 201), r.text
        yield c


def _h(role: str, sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(SECRET, role, sub)}"}


def _patch(c: TestClient, tid: str, body: dict[str, Any], role: str = "therapist") -> Any:
    sub = tid if role == "therapist" else "op"
    return c.patch(f"/v1/therapists/{tid}", json=body, headers=_h(role, sub))


def test_a_therapist_edits_its_own_profile_and_contact(client: TestClient) -> None:
    r = _patch(
        client,
        "t1",
        {
            "name": "Dr New",
            "bio": "now with a bio",
            "phone": "+44 7700 900123",
            "email": "t1@example.com",
            "sms_opt_in": True,
            "timezone": "Europe/London",
            "quiet_hours": "22:00-07:00",
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["name"], body["bio"]) == ("Dr New", "now with a bio")
    assert body["phone"] == "+447700900123"  # E.164
    assert (body["sms_opt_in"], body["timezone"], body["quiet_hours"]) == (
        True,
        "Europe/London",
        "22:00-07:00",
    )
    assert body["regions"] == PROFILE["regions"]  # untouched
    # Only what was sent changes; null removes.
    r = _patch(client, "t1", {"phone": None, "quiet_hours": None})
    assert r.json()["phone"] is None and r.json()["quiet_hours"] is None
    assert r.json()["email"] == "t1@example.com" and r.json()["name"] == "Dr New"


def test_pausing_for_new_clients_and_a_session_price(client: TestClient) -> None:
    body = client.get("/v1/therapists/t1", headers=_h("client", "c1")).json()
    assert (body["accepting_new_clients"], body["session_price_minor"]) == (True, None)
    r = _patch(client, "t1", {"accepting_new_clients": False, "session_price_minor": 6500})
    assert r.status_code == 200, r.text
    # Both are public: a client sees whether it can be matched and the price.
    body = client.get("/v1/therapists/t1", headers=_h("client", "c1")).json()
    assert (body["accepting_new_clients"], body["session_price_minor"]) == (False, 6500)
    r = _patch(client, "t1", {"accepting_new_clients": True, "session_price_minor": None})
    assert (r.json()["accepting_new_clients"], r.json()["session_price_minor"]) == (True, None)


def test_contact_details_are_private(client: TestClient) -> None:
    _patch(client, "t1", {"phone": "+447700900123", "email": "t1@example.com"})
    for role, sub in (("therapist", "t1"), ("operator", "op")):
        body = client.get("/v1/therapists/t1", headers=_h(role, sub)).json()
        assert body["phone"] == "+447700900123" and set(body) >= PRIVATE
    for role, sub in (("client", "c1"), ("therapist", "t2")):
        body = client.get("/v1/therapists/t1", headers=_h(role, sub)).json()
        assert not PRIVATE & set(body) and body["name"] == PROFILE["name"]
        assert body["timezone"] == "UTC"  # public: bookings are shown in it


def test_role_boundaries(client: TestClient) -> None:
    # Credentials: an operator's alone.
    r = _patch(client, "t1", {"regions": ["US-CA"]})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = _patch(client, "t1", {"works_with_minors": True, "name": "x"})
    assert r.status_code == 403
    assert client.get("/v1/therapists/t1", headers=_h("client", "c")).json()["name"] == "Dr Test"
    r = _patch(client, "t1", {"regions": ["US-CA"], "phone": "+14155552671"}, role="operator")
    assert r.status_code == 200 and r.json()["regions"] == ["US-CA"]
    # Another therapist's profile, a client, nobody.
    r = client.patch("/v1/therapists/t1", json={"bio": "x"}, headers=_h("therapist", "t2"))
    assert r.status_code == 403
    r = client.patch("/v1/therapists/t1", json={"bio": "x"}, headers=_h("client", "c1"))
    assert r.status_code == 403
    assert client.patch("/v1/therapists/t1", json={"bio": "x"}).status_code == 401
    # A therapist without a profile yet.
    r = client.patch("/v1/therapists/t9", json={"bio": "x"}, headers=_h("therapist", "t9"))
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"phone": "07700900123"}, "invalid_phone", "phone"),
        ({"phone": 447700900123}, "invalid_phone", "phone"),
        ({"email": "not-an-address"}, "invalid_field", "email"),
        ({"email": "a@b.c" + "x" * 300}, "invalid_field", "email"),
        ({"sms_opt_in": "yes"}, "invalid_field", "sms_opt_in"),
        ({"timezone": "Mars/Olympus"}, "invalid_field", "timezone"),
        ({"timezone": 3}, "invalid_field", "timezone"),
        ({"quiet_hours": "22:00-22:00"}, "invalid_field", "quiet_hours"),
        ({"quiet_hours": "late"}, "invalid_field", "quiet_hours"),
        ({"name": "   "}, "invalid_field", "name"),
        ({"bio": "x" * 2001}, "invalid_field", "bio"),
        ({"accepting_new_clients": "no"}, "invalid_field", "accepting_new_clients"),
        ({"accepting_new_clients": None}, "invalid_field", "accepting_new_clients"),
        ({"session_price_minor": -1}, "invalid_field", "session_price_minor"),
        ({"session_price_minor": 12.5}, "invalid_field", "session_price_minor"),
        ({"session_price_minor": True}, "invalid_field", "session_price_minor"),
        ({"session_price_minor": 1_000_001}, "invalid_field", "session_price_minor"),
    ],
)
def test_bad_fields_are_422_and_change_nothing(
    client: TestClient, body: dict[str, Any], code: str, field: str
) -> None:
    r = _patch(client, "t1", {"bio": "should not land", **body})
    assert r.status_code == 422, r.text
    assert (r.json()["error"]["code"], r.json()["error"]["field"]) == (code, field)
    got = client.get("/v1/therapists/t1", headers=_h("therapist", "t1")).json()
    assert got["bio"] == PROFILE["bio"] and got["phone"] is None
