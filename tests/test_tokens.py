"""Tokens: HS256 only, every defect is Unauthorized, and the Bearer header."""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

import jwt
import pytest

from core.errors import Unauthorized
from core.identity import Role, User, bearer, mint, verify

SECRET = secrets.token_urlsafe(48)  # 64 bytes: long enough for HS512 too
OTHER = secrets.token_urlsafe(32)
NOW = 1_700_000_000.0


def raw(claims: dict[str, Any], key: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, key.encode(), algorithm=alg)


def good_claims(**changes: Any) -> dict[str, Any]:
    return {"sub": "alice", "role": "client", "exp": int(NOW) + 60, **changes}


def test_round_trip() -> None:
    token = mint(SECRET, Role.THERAPIST, "dr.who_1-x", name="Dr Who", ttl_s=60, now=NOW)
    assert verify(SECRET, token, now=NOW + 1) == User(
        id="dr.who_1-x", role=Role.THERAPIST, name="Dr Who"
    )
    claims = jwt.decode(token, SECRET.encode(), algorithms=["HS256"], options={"verify_exp": False})
    assert claims == {
        "sub": "dr.who_1-x",
        "role": "therapist",
        "name": "Dr Who",
        "iat": int(NOW),
        "exp": int(NOW) + 60,
    }
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_round_trip_at_the_current_time_without_name() -> None:
    user = verify(SECRET, mint(SECRET, "operator", "op"))
    assert user == User(id="op", role=Role.OPERATOR, name=None)


def test_expired() -> None:
    token = mint(SECRET, Role.CLIENT, "alice", ttl_s=10, now=NOW)
    assert verify(SECRET, token, now=NOW + 9).id == "alice"
    with pytest.raises(Unauthorized, match="expired"):
        verify(SECRET, token, now=NOW + 10)
    # And against the real clock: a token minted an hour ago for a minute.
    old = mint(SECRET, Role.CLIENT, "alice", ttl_s=60, now=time.time() - 3600)
    with pytest.raises(Unauthorized):
        verify(SECRET, old)


def test_forged_with_another_secret() -> None:
    token = mint(SECRET, Role.OPERATOR, "mallory", now=NOW)
    with pytest.raises(Unauthorized):
        verify(OTHER, token, now=NOW)


def test_tampered_payload() -> None:
    header, _payload, sig = mint(SECRET, Role.CLIENT, "alice", now=NOW).split(".")
    forged = base64.urlsafe_b64encode(json.dumps(good_claims(role="operator")).encode())
    token = ".".join([header, forged.decode().rstrip("="), sig])
    with pytest.raises(Unauthorized):
        verify(SECRET, token, now=NOW)


def test_alg_none_is_rejected() -> None:
    unsigned = jwt.encode(good_claims(), "", algorithm="none")
    assert unsigned.endswith(".")  # really unsigned
    with pytest.raises(Unauthorized):
        verify(SECRET, unsigned, now=NOW)
    # Hand-made, with the signature of a genuine token glued on.
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=")
    _h, payload, sig = mint(SECRET, Role.CLIENT, "alice", now=NOW).split(".")
    with pytest.raises(Unauthorized):
        verify(SECRET, f"{header}.{payload}.{sig}", now=NOW)


def test_other_hmac_algorithms_are_rejected() -> None:
    for alg in ("HS384", "HS512"):
        with pytest.raises(Unauthorized):
            verify(SECRET, raw(good_claims(), alg=alg), now=NOW)


@pytest.mark.parametrize("sub", ["", "a b", "x" * 65, "ünïcode", "a/b", 42, None])
def test_bad_sub(sub: Any) -> None:
    with pytest.raises(Unauthorized):
        verify(SECRET, raw(good_claims(sub=sub)), now=NOW)
    if isinstance(sub, str):
        with pytest.raises(ValueError, match="sub"):
            mint(SECRET, Role.CLIENT, sub)


def test_longest_sub_is_fine() -> None:
    assert verify(SECRET, raw(good_claims(sub="x" * 64)), now=NOW).id == "x" * 64


@pytest.mark.parametrize("role", ["admin", "", "Client", None, ["client"]])
def test_bad_role(role: Any) -> None:
    with pytest.raises(Unauthorized):
        verify(SECRET, raw(good_claims(role=role)), now=NOW)


def test_mint_refuses_unknown_role_and_short_secret() -> None:
    with pytest.raises(ValueError, match="role"):
        mint(SECRET, "admin", "alice")
    with pytest.raises(ValueError, match="32 bytes"):
        mint("short", Role.CLIENT, "alice")
    with pytest.raises(ValueError, match="ttl"):
        mint(SECRET, Role.CLIENT, "alice", ttl_s=0)


@pytest.mark.parametrize("missing", ["sub", "role", "exp"])
def test_required_claims(missing: str) -> None:
    claims = good_claims()
    del claims[missing]
    with pytest.raises(Unauthorized):
        verify(SECRET, raw(claims), now=NOW)


def test_bad_name_and_bad_exp() -> None:
    with pytest.raises(Unauthorized):
        verify(SECRET, raw(good_claims(name=["x"])), now=NOW)
    with pytest.raises(Unauthorized):
        verify(SECRET, raw(good_claims(exp="tomorrow")), now=NOW)


@pytest.mark.parametrize("token", [None, "", "abc", "a.b.c", "Bearer x.y.z", "...."])
def test_missing_or_malformed(token: str | None) -> None:
    with pytest.raises(Unauthorized) as info:
        verify(SECRET, token, now=NOW)
    assert info.value.status == 401 and info.value.code == "unauthorized"


def test_error_never_repeats_the_token() -> None:
    token = mint(SECRET, Role.CLIENT, "alice", ttl_s=1, now=NOW)
    with pytest.raises(Unauthorized) as info:
        verify(SECRET, token, now=NOW + 5)
    assert token not in str(info.value) and token not in json.dumps(info.value.as_body())


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc", "abc"),
        ("BEARER   abc  ", "abc"),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Bearer a b", None),
        ("abc.def.ghi", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer(header: str | None, expected: str | None) -> None:
    assert bearer(header) == expected
