"""Identity: HS256 JWTs signed with ``DISPATCH_SECRET`` (PROTOCOL.md §2).

Claims: ``sub`` (1..64 chars of ``[A-Za-z0-9_.-]``), ``role`` (``client``,
``therapist``, ``operator``), ``exp``, ``iat`` and optionally ``name``.
:func:`verify` accepts HS256 alone (never ``none``, never an asymmetric
algorithm whose public key could be confused with the secret) and turns every
way a token can be wrong into :class:`dispatch.errors.Unauthorized`, whose
message never repeats the token.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Final

import jwt

from dispatch.errors import Unauthorized
from pool.model import Role

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
    return User(id=sub, role=role, name=name or None)


def bearer(header_value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value (scheme
    case-insensitive), or ``None`` when absent or of another shape."""
    if not header_value:
        return None
    m = _BEARER_RE.fullmatch(header_value)
    return m.group(1) if m else None
