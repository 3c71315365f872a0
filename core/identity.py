"""Identity: HS256 JWTs signed with ``DISPATCH_SECRET`` (PROTOCOL.md §2).

Claims: ``sub`` (1..64 chars of ``[A-Za-z0-9_.-]``), ``role`` (``client``,
``therapist``, ``operator``), ``exp``, ``iat`` and optionally ``name`` and
``auth_time`` (when the person signed in; :func:`refresh` keeps it, so a chain
of refreshed tokens ends ``max_age_s`` after the sign-in).
:func:`verify` accepts HS256 alone (never ``none``, never an asymmetric
algorithm whose public key could be confused with the secret) and turns every
way a token can be wrong into :class:`core.errors.Unauthorized`, whose
message never repeats the token.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

import jwt

from core.errors import Unauthorized


class Role(StrEnum):
    """Who a user is to the service (PROTOCOL.md §2)."""

    CLIENT = "client"
    THERAPIST = "therapist"
    OPERATOR = "operator"


ALGORITHM: Final = "HS256"
SUB_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_NAME_CHARS: Final = 200
#: HS256 wants a key at least as long as its hash (RFC 7518 §3.2); PyJWT warns below it.
MIN_SECRET_BYTES: Final = 32

_BEARER_RE: Final = re.compile(r"\s*bearer\s+(\S+)\s*", re.IGNORECASE)


@dataclass(frozen=True)
class User:
    """Who a verified token speaks for."""

    id: str
    role: Role
    name: str | None = None
    #: The token's ``exp`` (seconds since the epoch); None for a user no token made.
    expires_at: float | None = field(default=None, compare=False)
    #: When the person signed in: the token's ``auth_time``, else its ``iat``.
    auth_time: float | None = field(default=None, compare=False)


def _check_secret(secret: str) -> bytes:
    key = secret.encode()
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"the token secret must be at least {MIN_SECRET_BYTES} bytes")
    return key


def mint(
    secret: str,
    role: Role | str,
    sub: str,
    name: str | None = None,
    ttl_s: float = 3600,
    now: float | None = None,
    auth_time: float | None = None,
) -> str:
    """A signed token for ``sub`` acting as ``role``, valid for ``ttl_s`` seconds
    from ``now`` (default: the current time).

    Raises ``ValueError`` for a bad ``sub``, ``role``, ``name``, ``ttl_s`` or a
    secret shorter than 32 bytes: minting is the caller's own doing, not a user's.
    """
    key = _check_secret(secret)
    if not SUB_RE.fullmatch(sub):
        raise ValueError("sub must be 1..64 characters of A-Z, a-z, 0-9, '_', '.', '-'")
    try:
        role = Role(role)
    except ValueError:
        raise ValueError(f"role must be one of {', '.join(r.value for r in Role)}") from None
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    if name is not None and not 1 <= len(name) <= MAX_NAME_CHARS:
        raise ValueError(f"name must be 1..{MAX_NAME_CHARS} characters")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": sub,
        "role": role.value,
        "iat": issued,
        "exp": issued + int(ttl_s),
    }
    if name is not None:
        claims["name"] = name
    if auth_time is not None:
        claims["auth_time"] = int(auth_time)
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify(secret: str, token: str | None, now: float | None = None) -> User:
    """The user a token speaks for, or ``Unauthorized`` when the token is
    missing, malformed, forged, signed with another algorithm than HS256,
    expired (at ``now``, default the current time), or carries a bad ``sub``,
    ``role`` or ``name``.
    """
    key = _check_secret(secret)
    if not token or not isinstance(token, str):
        raise Unauthorized("missing token")
    try:
        # exp is checked below against ``now`` so that tests can drive the clock;
        # iat carries no security weight, and a skewed issuer must not break login.
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            options={"require": ["sub", "role", "exp"], "verify_exp": False, "verify_iat": False},
        )
    except jwt.PyJWTError:
        raise Unauthorized("invalid token") from None
    exp = claims["exp"]
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise Unauthorized("invalid token")
    if exp <= (time.time() if now is None else now):
        raise Unauthorized("token expired")
    sub = claims["sub"]
    if not isinstance(sub, str) or not SUB_RE.fullmatch(sub):
        raise Unauthorized("invalid token subject")
    try:
        role = Role(claims["role"])
    except (ValueError, TypeError):
        raise Unauthorized("invalid token role") from None
    name = claims.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME_CHARS):
        raise Unauthorized("invalid token name")
    auth_time = claims.get("auth_time", claims.get("iat"))
    if isinstance(auth_time, bool) or not isinstance(auth_time, int | float | None):
        raise Unauthorized("invalid token")
    return User(
        id=sub,
        role=role,
        name=name or None,
        expires_at=float(exp),
        auth_time=None if auth_time is None else float(auth_time),
    )


def refresh(secret: str, token: str, max_age_s: float, now: float | None = None) -> str:
    """A new token for the user ``token`` speaks for (which must still be valid).

    The new token lives as long as the old one did (``exp - iat``, an hour when
    that cannot be read), but never past ``auth_time + max_age_s``: a refreshed
    token cannot outlive the sign-in it came from by more than ``max_age_s``.
    Raises :class:`Unauthorized` for a bad token, or one whose sign-in is
    already that old (the person must sign in again).
    """
    now = time.time() if now is None else now
    user = verify(secret, token, now=now)
    claims = jwt.decode(token, options={"verify_signature": False})
    iat = claims.get("iat")
    lifetime = 3600.0
    if isinstance(iat, int | float) and not isinstance(iat, bool) and user.expires_at:
        lifetime = max(user.expires_at - iat, 1.0)
    signed_in_at = user.auth_time if user.auth_time is not None else now
    expires = min(now + lifetime, signed_in_at + max_age_s)
    if expires - now < 1:
        raise Unauthorized("this sign-in is too old to refresh; sign in again")
    return mint(
        secret,
        user.role,
        user.id,
        name=user.name,
        ttl_s=expires - now,
        now=now,
        auth_time=signed_in_at,
    )


def bearer(header_value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value (scheme
    case-insensitive), or ``None`` when absent or of another shape."""
    if not header_value:
        return None
    m = _BEARER_RE.fullmatch(header_value)
    return m.group(1) if m else None
