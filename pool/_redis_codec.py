"""How the pool's values look in Redis hashes and script replies.

A request is a hash of strings, one field per :meth:`Request.to_record`
entry; a ``None`` field is absent. ``topics``, ``declined`` and ``offered``
are JSON arrays (the scripts append to ``declined`` with cjson; ``offered``
absent: everyone). Times travel as
``repr(float)`` from Python and ``%.17g`` from Lua: both round-trip a double
exactly, so a time read back equals the one written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pool.model import Hold, Request, Session

Flat = Sequence[Any]


def text(value: Any) -> str:
    """A reply element as ``str`` (the client may or may not decode replies)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def num(value: float) -> str:
    """A time or duration for Redis: exact, and readable by ``float`` and Lua ``tonumber``."""
    return repr(float(value))


def as_map(fields: Mapping[Any, Any] | Flat) -> dict[str, str]:
    """A hash as ``dict[str, str]``, from a dict (``HGETALL``) or a flat
    ``[k1, v1, k2, v2, ...]`` list (an ``HGETALL`` returned by a script)."""
    if isinstance(fields, Mapping):
        return {text(k): text(v) for k, v in fields.items()}
    items = [text(v) for v in fields]
    return dict(zip(items[0::2], items[1::2], strict=True))


def request_fields(req: Request) -> dict[str, str]:
    rec = req.to_record()
    out: dict[str, str] = {}
    for name, value in rec.items():
        if value is None:
            continue
        if name in ("topics", "declined", "offered"):
            out[name] = json.dumps(value)
        elif name == "guardian_consent":
            out[name] = "1" if value else "0"
        elif isinstance(value, float):
            out[name] = num(value)
        else:
            out[name] = str(value)
    return out


def decode_request(fields: Mapping[Any, Any] | Flat) -> Request | None:
    """The request of a hash (see :func:`as_map`), or None for an empty one."""
    m = as_map(fields)
    if not m:
        return None
    rec: dict[str, Any] = dict(m)
    rec["topics"] = json.loads(m.get("topics") or "[]")
    rec["declined"] = json.loads(m.get("declined") or "[]")
    rec["offered"] = json.loads(m["offered"]) if "offered" in m else None
    rec["guardian_consent"] = m.get("guardian_consent") == "1"
    rec["age"] = int(m["age"]) if m.get("age") else None
    return Request.from_record(rec)


def decode_session(fields: Mapping[Any, Any] | Flat) -> Session | None:
    """The session of a hash, or None for an empty one. ``joined`` is a JSON
    array (the scripts append to it with cjson); absent until someone joins."""
    m = as_map(fields)
    if not m:
        return None
    rec: dict[str, Any] = dict(m)
    rec["joined"] = json.loads(m.get("joined") or "[]")
    return Session.from_record(rec)


def raw(value: Any) -> bytes:
    """A reply element as ``bytes`` (a held frame, msgpack)."""
    return value.encode() if isinstance(value, str) else bytes(value)


def decode_hold(value: Any) -> Hold | None:
    """``"claim:<request id>"`` or ``"session:<session id>"``."""
    if value is None:
        return None
    kind, _, ident = text(value).partition(":")
    return Hold(kind, ident)
