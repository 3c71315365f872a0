"""Inbound websocket frames (PROTOCOL.md §5), parsed and checked. Pure: no I/O.

:func:`parse` turns a decoded map (see :mod:`core.wire`) into one of the
frozen dataclasses below, or raises :class:`~core.errors.BadInput`
(``bad_message``) whose message names the frame type and field, e.g.
``"claim.request_id must be a string of 1..64 characters [A-Za-z0-9_.-]"``.
Messages never quote a value (it may be a token or chat text).

Unknown extra fields are ignored, so clients may send fields of later
versions. ``ref`` is optional: a string of at most 128 characters; ``null``
counts as absent.

:data:`ALLOWED_ROLES` says who may send what; :func:`error_frame` and
:func:`error_from` build the outbound ``error`` frame.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, TypeAlias

from core.errors import BadInput, DispatchError
from core.identity import Role
from core.validation import ID_RULE, is_id

REF_MAX = 128
TOKEN_MAX = 8192
TERMS_VERSION_MAX = 64
CHAT_TEXT_MAX = 4000
NOTE_TEXT_MAX = 20000
_CLIENT_MSG_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@dataclass(frozen=True, slots=True)
class Auth:
    TYPE: ClassVar[str] = "auth"
    token: str = field(repr=False)  # never in logs or reprs
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Status:
    TYPE: ClassVar[str] = "status"
    available: bool
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    TYPE: ClassVar[str] = "claim"
    request_id: str
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class ClaimRelease:
    TYPE: ClassVar[str] = "claim.release"
    request_id: str
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class OfferAccept:
    TYPE: ClassVar[str] = "offer.accept"
    request_id: str
    terms_version: str
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class OfferDecline:
    TYPE: ClassVar[str] = "offer.decline"
    request_id: str
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class SessionJoin:
    TYPE: ClassVar[str] = "session.join"
    session_id: str
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class RtcSignal:
    """``data`` is opaque and relayed as is; its size is bounded by the frame limit."""

    TYPE: ClassVar[str] = "rtc.signal"
    session_id: str
    data: dict[str, Any]
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class ChatSend:
    TYPE: ClassVar[str] = "chat.send"
    session_id: str
    text: str = field(repr=False)  # never in logs or reprs
    client_msg_id: str
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class NoteSave:
    TYPE: ClassVar[str] = "note.save"
    session_id: str
    text: str = field(repr=False)  # never in logs or reprs
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class SessionEnd:
    TYPE: ClassVar[str] = "session.end"
    session_id: str
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    """Extension: an application-level keepalive; the server answers :func:`pong_frame`."""

    TYPE: ClassVar[str] = "ping"
    ref: str | None = None


Inbound: TypeAlias = (
    Auth
    | Status
    | Claim
    | ClaimRelease
    | OfferAccept
    | OfferDecline
    | SessionJoin
    | RtcSignal
    | ChatSend
    | NoteSave
    | SessionEnd
    | Ping
)

_C, _T = Role.CLIENT, Role.THERAPIST
_EVERYONE = frozenset(Role)

#: Which roles may send each frame type; anyone else gets ``forbidden``.
ALLOWED_ROLES: Mapping[type, frozenset[Role]] = MappingProxyType(
    {
        Auth: _EVERYONE,
        Ping: _EVERYONE,
        Status: frozenset({_T}),
        Claim: frozenset({_T}),
        ClaimRelease: frozenset({_T}),
        OfferAccept: frozenset({_C}),
        OfferDecline: frozenset({_C}),
        SessionJoin: frozenset({_C, _T}),
        RtcSignal: frozenset({_C, _T}),
        ChatSend: frozenset({_C, _T}),
        SessionEnd: frozenset({_C, _T}),
        NoteSave: frozenset({_T}),
    }
)


def allowed(frame: Inbound, role: Role) -> bool:
    """Whether a user of ``role`` may send ``frame`` at all (session membership aside)."""
    return role in ALLOWED_ROLES[type(frame)]


def ref_of(obj: Any) -> str | None:
    """The valid ``ref`` of any decoded value, else ``None``: for echoing in errors."""
    if isinstance(obj, dict):
        ref = obj.get("ref")
        if isinstance(ref, str) and len(ref) <= REF_MAX:
            return ref
    return None


def parse(obj: Any) -> Inbound:
    """One decoded inbound frame, checked; :class:`BadInput` names what is wrong."""
    if not isinstance(obj, dict):
        raise BadInput('a frame must be a map with a string "type"')
    frame_type = obj.get("type")
    if not isinstance(frame_type, str):
        raise BadInput('a frame must have a string "type"')
    parser = _PARSERS.get(frame_type)
    if parser is None:
        shown = frame_type if len(frame_type) <= 64 else frame_type[:64] + "..."
        raise BadInput(f"unknown frame type {shown!r}", field="type")
    ref = obj.get("ref")
    if ref is not None and not (isinstance(ref, str) and len(ref) <= REF_MAX):
        raise BadInput(
            f"{frame_type}.ref must be a string of at most {REF_MAX} characters",
            field=f"{frame_type}.ref",
        )
    return parser(_Fields(frame_type, obj), ref)


def error_frame(code: str, message: str, ref: str | None) -> dict[str, Any]:
    """The outbound ``error`` frame; ``ref`` is always present (``null`` when none)."""
    return {"type": "error", "code": code, "message": message, "ref": ref}


def error_from(exc: DispatchError, ref: str | None) -> dict[str, Any]:
    """The ``error`` frame for ``exc``, with its structured fields (e.g. ``field``) added."""
    frame = error_frame(exc.code, exc.message, ref)
    for key, value in exc.fields.items():
        frame.setdefault(key, value)
    return frame


def pong_frame(ref: str | None) -> dict[str, Any]:
    """The answer to :class:`Ping`."""
    return {"type": "pong", "ref": ref}


# -- field checks --------------------------------------------------------------------------


class _Fields:
    """One frame's fields, checked one by one with messages naming ``type.field``."""

    __slots__ = ("obj", "type")

    def __init__(self, frame_type: str, obj: dict[str, Any]) -> None:
        self.type = frame_type
        self.obj = obj

    def _get(self, name: str, rule: str) -> Any:
        if name not in self.obj or self.obj[name] is None:
            raise BadInput(f"{self.type}.{name} is required; it {rule}", field=self._f(name))
        return self.obj[name]

    def _bad(self, name: str, rule: str) -> BadInput:
        return BadInput(f"{self.type}.{name} {rule}", field=self._f(name))

    def _f(self, name: str) -> str:
        return f"{self.type}.{name}"

    def id(self, name: str) -> str:
        rule = f"must be a string of {ID_RULE}"
        value = self._get(name, rule)
        if not is_id(value):
            raise self._bad(name, rule)
        result: str = value
        return result

    def string(
        self, name: str, low: int, high: int, rule: str, ok: Callable[[str], bool] = lambda _: True
    ) -> str:
        """A string of ``low..high`` code points for which ``ok`` holds."""
        full = f"must be a string of {low}..{high} {rule}"
        value = self._get(name, full)
        if not (isinstance(value, str) and low <= len(value) <= high and ok(value)):
            raise self._bad(name, full)
        return value

    def boolean(self, name: str) -> bool:
        rule = "must be a boolean (true or false)"
        value = self._get(name, rule)
        if type(value) is not bool:
            raise self._bad(name, rule)
        return value

    def map(self, name: str) -> dict[str, Any]:
        rule = "must be a map"
        value = self._get(name, rule)
        if not isinstance(value, dict):
            raise self._bad(name, rule)
        return value


def _no_nul(text: str) -> bool:
    return "\x00" not in text


def _client_msg_id(text: str) -> bool:
    return _CLIENT_MSG_ID_RE.fullmatch(text) is not None


def _parse_auth(f: _Fields, ref: str | None) -> Auth:
    return Auth(f.string("token", 1, TOKEN_MAX, "characters"), ref=ref)


def _parse_status(f: _Fields, ref: str | None) -> Status:
    return Status(f.boolean("available"), ref=ref)


def _parse_claim(f: _Fields, ref: str | None) -> Claim:
    return Claim(f.id("request_id"), ref=ref)


def _parse_claim_release(f: _Fields, ref: str | None) -> ClaimRelease:
    return ClaimRelease(f.id("request_id"), ref=ref)


def _parse_offer_accept(f: _Fields, ref: str | None) -> OfferAccept:
    return OfferAccept(
        f.id("request_id"),
        f.string("terms_version", 1, TERMS_VERSION_MAX, "printable characters", str.isprintable),
        ref=ref,
    )


def _parse_offer_decline(f: _Fields, ref: str | None) -> OfferDecline:
    return OfferDecline(f.id("request_id"), ref=ref)


def _parse_session_join(f: _Fields, ref: str | None) -> SessionJoin:
    return SessionJoin(f.id("session_id"), ref=ref)


def _parse_rtc_signal(f: _Fields, ref: str | None) -> RtcSignal:
    return RtcSignal(f.id("session_id"), f.map("data"), ref=ref)


def _parse_chat_send(f: _Fields, ref: str | None) -> ChatSend:
    return ChatSend(
        f.id("session_id"),
        f.string("text", 1, CHAT_TEXT_MAX, "characters without NUL", _no_nul),
        f.string("client_msg_id", 1, 64, "characters [A-Za-z0-9_.:-]", _client_msg_id),
        ref=ref,
    )


def _parse_note_save(f: _Fields, ref: str | None) -> NoteSave:
    return NoteSave(
        f.id("session_id"),
        f.string("text", 0, NOTE_TEXT_MAX, "characters without NUL", _no_nul),
        ref=ref,
    )


def _parse_session_end(f: _Fields, ref: str | None) -> SessionEnd:
    return SessionEnd(f.id("session_id"), ref=ref)


def _parse_ping(f: _Fields, ref: str | None) -> Ping:
    return Ping(ref=ref)


_PARSERS: Mapping[str, Callable[[_Fields, str | None], Inbound]] = MappingProxyType(
    {
        Auth.TYPE: _parse_auth,
        Status.TYPE: _parse_status,
        Claim.TYPE: _parse_claim,
        ClaimRelease.TYPE: _parse_claim_release,
        OfferAccept.TYPE: _parse_offer_accept,
        OfferDecline.TYPE: _parse_offer_decline,
        SessionJoin.TYPE: _parse_session_join,
        RtcSignal.TYPE: _parse_rtc_signal,
        ChatSend.TYPE: _parse_chat_send,
        NoteSave.TYPE: _parse_note_save,
        SessionEnd.TYPE: _parse_session_end,
        Ping.TYPE: _parse_ping,
    }
)
