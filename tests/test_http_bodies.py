"""Arbitrary JSON in every HTTP body field: a 2xx or a 4xx, never a 5xx, never half-written.

Hypothesis puts any JSON value (strings with lone surrogate escapes such as
``"\\ud800"`` included, which are valid JSON but no UTF-8 encoder can write
back) into one field of an otherwise valid body of every call that takes a
body, on the in-process pool and on a real ``redis-server``. After each call
the test reads back what the call could have written and checks that a
refused call left nothing behind and an accepted one reads back whole.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import embedded_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient
from test_app_embedded import DRAFT, PROFILE
from test_forms import FORM_ANSWERS

from care.forms import check_answers, form_named, load_forms
from core.identity import mint, verify
from dispatch.app import create_app
from dispatch.settings import load_settings

SECRET = "test-secret-" + "x" * 40

# Text from all of Unicode, lone surrogates (category Cs) included on purpose.
_TEXT = st.text(
    st.one_of(st.characters(), st.characters(categories=["Cs"])),
    max_size=12,
)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)
# The field to spoil: one the call reads, or a stray one it should ignore.
_EXTRA_FIELD = st.sampled_from(["extra", "\ud800", "x\udfff"])

_PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_ids = itertools.count()


def _auth(role: str, sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(SECRET, role, sub, ttl_s=600)}"}


def _send(client: TestClient, method: str, path: str, body: Any, role: str, sub: str) -> Any:
    # json.dumps escapes a lone surrogate as \\udXXX: valid JSON, as a client sends it.
    raw = json.dumps(body).encode("ascii")
    headers = {**_auth(role, sub), "content-type": "application/json"}
    r = client.request(method, path, content=raw, headers=headers)
    assert r.status_code < 500, (r.status_code, r.text)
    if r.status_code >= 400:
        error = r.json()["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str)
        error["message"].encode("utf-8")  # the answer itself is always encodable
    return r


@pytest.fixture(params=["memory", "redis"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    overrides = embedded_settings(
        request,
        tmp_path,
        secret=SECRET,
        # Hundreds of calls by one operator: the HTTP rate limit is not under test.
        http_rate_per_s=1e6,
        http_rate_burst=1_000_000,
    )
    with TestClient(create_app(load_settings(overrides, env={}))) as c:
        yield c


def _spoil(base: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    return {**base, field: value}


@_PROPERTY
@given(field=st.sampled_from([*PROFILE, "id"]) | _EXTRA_FIELD, value=_JSON)
def test_put_therapist(client: TestClient, field: str, value: Any) -> None:
    tid = f"t-prop-{next(_ids)}"
    r = _send(
        client, "PUT", f"/v1/therapists/{tid}", _spoil(PROFILE, field, value), "operator", "op"
    )
    got = client.get(f"/v1/therapists/{tid}", headers=_auth("client", "c-reader"))
    if r.status_code < 300:
        assert got.status_code == 200, got.text
        assert got.json() == r.json()
    else:
        assert got.status_code == 404, got.text  # nothing was stored


_PATCH_FIELDS = [
    "name",
    "bio",
    "phone",
    "email",
    "sms_opt_in",
    "timezone",
    "quiet_hours",
    "regions",
    "works_with_minors",
]


@_PROPERTY
@given(
    field=st.sampled_from(_PATCH_FIELDS) | _EXTRA_FIELD,
    value=_JSON,
    role=st.sampled_from(["therapist", "operator"]),
)
def test_patch_therapist(client: TestClient, field: str, value: Any, role: str) -> None:
    tid = f"t-patch-{next(_ids)}"
    client.put(
        f"/v1/therapists/{tid}", json=PROFILE, headers=_auth("operator", "op")
    ).raise_for_status()
    before = client.get(f"/v1/therapists/{tid}", headers=_auth("operator", "op")).json()
    sub = tid if role == "therapist" else "op"
    body = {"bio": "changed", field: value}
    r = _send(client, "PATCH", f"/v1/therapists/{tid}", body, role, sub)
    after = client.get(f"/v1/therapists/{tid}", headers=_auth("operator", "op")).json()
    if r.status_code < 300:
        assert after == r.json()
    else:
        assert after == before  # nothing half-written: neither the profile nor the contact


def _waiting(client: TestClient) -> int:
    stats = client.get("/v1/pool/stats", headers=_auth("operator", "op")).json()
    waiting: int = stats["waiting"]
    return waiting


@_PROPERTY
@given(field=st.sampled_from([*DRAFT, "age", "guardian_consent"]) | _EXTRA_FIELD, value=_JSON)
def test_post_request(client: TestClient, field: str, value: Any) -> None:
    cid = f"c-prop-{next(_ids)}"
    client.post(
        "/v1/wallet/topups",
        json={"client_id": cid, "amount_minor": 10_000, "reference": f"fund-{cid}"},
        headers=_auth("operator", "op"),
    ).raise_for_status()
    before = _waiting(client)
    r = _send(client, "POST", "/v1/requests", _spoil(DRAFT, field, value), "client", cid)
    if r.status_code < 300:
        rid = r.json()["request"]["id"]
        got = client.get(f"/v1/requests/{rid}", headers=_auth("client", cid))
        assert (
            got.status_code == 200
            and got.json()["request"]["notes"] == r.json()["request"]["notes"]
        )
        assert client.delete(f"/v1/requests/{rid}", headers=_auth("client", cid)).status_code == 200
    else:
        assert _waiting(client) == before  # no request was made


_FORM_KEYS = sorted({f.key for form in load_forms() for f in form.fields})


@_PROPERTY
@given(
    form=st.sampled_from(sorted(FORM_ANSWERS)),
    field=st.sampled_from(_FORM_KEYS) | _EXTRA_FIELD,
    value=_JSON,
)
def test_put_form(client: TestClient, form: str, field: str, value: Any) -> None:
    cid = f"c-form-{next(_ids)}"
    body = _spoil(FORM_ANSWERS[form], field, value)
    r = _send(client, "PUT", f"/v1/me/forms/{form}", body, "client", cid)
    got = client.get(f"/v1/me/forms/{form}", headers=_auth("client", cid))
    if r.status_code < 300:
        assert got.status_code == 200
        assert got.json()["form"]["answers"] == check_answers(form_named(form), body)
    else:
        assert got.status_code == 404  # nothing stored


@_PROPERTY
@given(field=st.sampled_from(["code"]) | _EXTRA_FIELD, value=_JSON)
def test_post_referral(client: TestClient, field: str, value: Any) -> None:
    codes = [
        client.get("/v1/me/referral", headers=_auth("therapist", tid)).json()["code"]
        for tid in ("t-ref", "t-ref-other")
    ]
    cid = f"c-ref-{next(_ids)}"
    body = _spoil({"code": codes[0]}, field, value)
    r = _send(client, "POST", "/v1/me/referral", body, "client", cid)
    # Another therapist's code next: refused when the first linked, taken when not.
    again = client.post("/v1/me/referral", json={"code": codes[1]}, headers=_auth("client", cid))
    if r.status_code < 300:
        assert r.json()["therapist_id"] == "t-ref" and again.status_code == 409, again.text
    else:
        assert again.status_code == 200, again.text  # nothing was linked


def _balance(client: TestClient, cid: str) -> int:
    balance: int = client.get("/v1/wallet", headers=_auth("client", cid)).json()["balance_minor"]
    return balance


@_PROPERTY
@given(
    field=st.sampled_from(["client_id", "amount_minor", "reference"]) | _EXTRA_FIELD,
    value=_JSON,
)
def test_post_topup(client: TestClient, field: str, value: Any) -> None:
    cid = f"c-top-{next(_ids)}"
    body = {"client_id": cid, "amount_minor": 500, "reference": f"ref-{cid}"}
    r = _send(client, "POST", "/v1/wallet/topups", _spoil(body, field, value), "operator", "op")
    if r.status_code < 300:
        target = r.json()["transaction"]["client_id"]
        assert _balance(client, target) == r.json()["transaction"]["amount_minor"]
    else:
        assert _balance(client, cid) == 0  # no money moved


@_PROPERTY
@given(field=st.sampled_from(["amount_minor"]) | _EXTRA_FIELD, value=_JSON)
def test_post_withdrawal(client: TestClient, field: str, value: Any) -> None:
    tid = f"t-wd-{next(_ids)}"
    body = _spoil({"amount_minor": 100}, field, value)
    r = _send(client, "POST", "/v1/withdrawals", body, "therapist", tid)
    assert r.status_code >= 400  # nothing earned, nothing to withdraw
    listed = client.get("/v1/withdrawals", headers=_auth("therapist", tid)).json()
    assert listed["withdrawals"] == []


@_PROPERTY
@given(field=st.sampled_from(["role", "sub", "name"]) | _EXTRA_FIELD, value=_JSON)
def test_post_dev_token(client: TestClient, field: str, value: Any) -> None:
    body = _spoil({"role": "client", "sub": "c-dev", "name": "Dev"}, field, value)
    r = _send(client, "POST", "/dev/token", body, "client", "anyone")
    if r.status_code < 300:
        user = verify(SECRET, r.json()["token"])
        assert user.id == r.json()["user"]["id"]


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (b'{"bio": "\\ud800"}', 422, "invalid_field", "bio"),
        (b'{"bio": ["ok", {"deep": "\\udfff"}]}', 422, "invalid_field", "bio"),
        (b'{"\\ud800": 1}', 400, "bad_message", None),
    ],
)
def test_lone_surrogate_is_refused_before_anything_is_stored(
    client: TestClient, body: bytes, status: int, code: str, field: str | None
) -> None:
    full = json.loads(body)
    spoiled = json.dumps({**PROFILE, **full}).encode("ascii")
    headers = {**_auth("operator", "op"), "content-type": "application/json"}
    r = client.put("/v1/therapists/t-sur", content=spoiled, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert r.json()["error"].get("field") == field
    assert "surrogate" in r.json()["error"]["message"]
    # Nothing stored: the profile is absent, and the connection still serves.
    assert client.get("/v1/therapists/t-sur", headers=_auth("client", "c")).status_code == 404
