"""dispatch.frames: inbound frame parsing, the role table, error frames."""

from __future__ import annotations

from typing import Any

import pytest

from core import errors
from core.identity import Role
from core.wire import JSON_CODEC, MSGPACK_CODEC
from dispatch.frames import (
    ALLOWED_ROLES,
    Auth,
    ChatSend,
    Claim,
    ClaimRelease,
    Inbound,
    NoteSave,
    OfferAccept,
    OfferDecline,
    Ping,
    RtcSignal,
    SessionEnd,
    SessionJoin,
    Status,
    allowed,
    error_frame,
    error_from,
    parse,
    pong_frame,
    ref_of,
)

ID_MSG = "must be a string of 1..64 characters [A-Za-z0-9_.-]"


def bad(obj: Any) -> errors.BadInput:
    with pytest.raises(errors.BadInput) as info:
        parse(obj)
    exc = info.value
    assert type(exc) is errors.BadInput
    assert exc.code == "bad_message"
    return exc


# -- every frame type parses ---------------------------------------------------------------

VALID: list[tuple[dict[str, Any], Inbound]] = [
    ({"type": "auth", "token": "a.b.c"}, Auth("a.b.c")),
    ({"type": "status", "available": True}, Status(True)),
    ({"type": "status", "available": False}, Status(False)),
    ({"type": "claim", "request_id": "r-1"}, Claim("r-1")),
    ({"type": "claim.release", "request_id": "r_1"}, ClaimRelease("r_1")),
    (
        {"type": "offer.accept", "request_id": "r.1", "terms_version": "2024-05 v3"},
        OfferAccept("r.1", "2024-05 v3"),
    ),
    ({"type": "offer.decline", "request_id": "R1"}, OfferDecline("R1")),
    ({"type": "session.join", "session_id": "s1"}, SessionJoin("s1")),
    (
        {"type": "rtc.signal", "session_id": "s1", "data": {"type": "offer", "sdp": "v=0"}},
        RtcSignal("s1", {"type": "offer", "sdp": "v=0"}),
    ),
    ({"type": "rtc.signal", "session_id": "s1", "data": {}}, RtcSignal("s1", {})),
    (
        {"type": "chat.send", "session_id": "s1", "text": "hi ✓", "client_msg_id": "m:1"},
        ChatSend("s1", "hi ✓", "m:1"),
    ),
    ({"type": "note.save", "session_id": "s1", "text": "n"}, NoteSave("s1", "n")),
    ({"type": "note.save", "session_id": "s1", "text": ""}, NoteSave("s1", "")),
    ({"type": "session.end", "session_id": "s1"}, SessionEnd("s1")),
    ({"type": "ping"}, Ping()),
]


@pytest.mark.parametrize(("obj", "expected"), VALID)
def test_parse_valid(obj: dict[str, Any], expected: Inbound) -> None:
    assert parse(obj) == expected
    assert parse(obj).ref is None
    with_ref = parse({**obj, "ref": "r-42"})
    assert with_ref.ref == "r-42"
    assert type(with_ref) is type(expected)
    assert obj["type"] == type(expected).TYPE


@pytest.mark.parametrize(("obj", "expected"), VALID)
def test_parse_through_both_codecs(obj: dict[str, Any], expected: Inbound) -> None:
    for codec in (JSON_CODEC, MSGPACK_CODEC):
        assert parse(codec.decode(codec.encode(obj))) == expected


def test_unknown_extra_fields_are_ignored() -> None:
    assert parse({"type": "claim", "request_id": "r1", "future": [1, 2], "x": None}) == Claim("r1")


def test_frames_are_frozen() -> None:
    frame = parse({"type": "claim", "request_id": "r1"})
    assert isinstance(frame, Claim)
    with pytest.raises(AttributeError):
        frame.request_id = "r2"  # type: ignore[misc]


def test_secrets_stay_out_of_repr() -> None:
    assert "sekrit" not in repr(parse({"type": "auth", "token": "sekrit"}))
    chat = {"type": "chat.send", "session_id": "s", "text": "sekrit", "client_msg_id": "m"}
    assert "sekrit" not in repr(parse(chat))
    assert "sekrit" not in repr(parse({"type": "note.save", "session_id": "s", "text": "sekrit"}))


# -- frame shape ---------------------------------------------------------------------------


@pytest.mark.parametrize("obj", [None, [], "claim", 3, [{"type": "ping"}]])
def test_not_a_map(obj: Any) -> None:
    assert "must be a map" in bad(obj).message


@pytest.mark.parametrize("obj", [{}, {"type": None}, {"type": 1}, {"type": ["ping"]}])
def test_missing_or_non_string_type(obj: Any) -> None:
    assert bad(obj).message == 'a frame must have a string "type"'


@pytest.mark.parametrize("name", ["pong", "Claim", "claim ", "", "welcome", "error"])
def test_unknown_type(name: str) -> None:
    assert bad({"type": name}).message == f"unknown frame type {name!r}"


def test_unknown_type_long_name_is_truncated() -> None:
    msg = bad({"type": "x" * 10_000}).message
    assert len(msg) < 100


# -- ref -----------------------------------------------------------------------------------


def test_ref_boundary() -> None:
    assert parse({"type": "ping", "ref": "r" * 128}).ref == "r" * 128
    assert parse({"type": "ping", "ref": ""}).ref == ""
    assert parse({"type": "ping", "ref": None}).ref is None
    exc = bad({"type": "ping", "ref": "r" * 129})
    assert exc.message == "ping.ref must be a string of at most 128 characters"
    assert exc.fields == {"field": "ping.ref"}


@pytest.mark.parametrize("ref", [1, True, ["a"], {"a": 1}, 1.5])
def test_ref_wrong_type(ref: Any) -> None:
    assert bad({"type": "claim", "request_id": "r", "ref": ref}).message.startswith("claim.ref ")


def test_ref_of() -> None:
    assert ref_of({"type": "claim", "ref": "abc"}) == "abc"
    # an invalid frame still gives its ref
    assert ref_of({"type": "nope", "request_id": 5, "ref": "abc"}) == "abc"
    assert ref_of({"ref": "x" * 128}) == "x" * 128
    assert ref_of({"ref": "x" * 129}) is None
    assert ref_of({"ref": 7}) is None
    assert ref_of({"type": "ping"}) is None
    assert ref_of(["ref"]) is None
    assert ref_of(None) is None
    assert ref_of("ref") is None


# -- id fields -----------------------------------------------------------------------------

ID_FIELDS = [
    ("claim", "request_id", {}),
    ("claim.release", "request_id", {}),
    ("offer.accept", "request_id", {"terms_version": "v1"}),
    ("offer.decline", "request_id", {}),
    ("session.join", "session_id", {}),
    ("rtc.signal", "session_id", {"data": {}}),
    ("chat.send", "session_id", {"text": "hi", "client_msg_id": "m1"}),
    ("note.save", "session_id", {"text": "n"}),
    ("session.end", "session_id", {}),
]


@pytest.mark.parametrize(("ftype", "name", "rest"), ID_FIELDS)
def test_id_field_boundaries(ftype: str, name: str, rest: dict[str, Any]) -> None:
    ok = "A" * 64
    assert getattr(parse({"type": ftype, name: ok, **rest}), name) == ok
    assert getattr(parse({"type": ftype, name: "a", **rest}), name) == "a"
    assert getattr(parse({"type": ftype, name: "aZ09_.-", **rest}), name) == "aZ09_.-"
    expected = f"{ftype}.{name} {ID_MSG}"
    for value in ["A" * 65, "", "a b", "a/b", "a:b", "é", "a\n", "\na", "a\x00", 5, True, None]:
        exc = bad({"type": ftype, name: value, **rest})
        if value is None:
            assert exc.message == f"{ftype}.{name} is required; it {ID_MSG}"
        else:
            assert exc.message == expected, value
        assert exc.fields == {"field": f"{ftype}.{name}"}


@pytest.mark.parametrize(("ftype", "name", "rest"), ID_FIELDS)
def test_id_field_missing(ftype: str, name: str, rest: dict[str, Any]) -> None:
    exc = bad({"type": ftype, **rest})
    assert exc.message == f"{ftype}.{name} is required; it {ID_MSG}"


# -- other fields --------------------------------------------------------------------------


def test_auth_token() -> None:
    assert parse({"type": "auth", "token": "t" * 8192}) == Auth("t" * 8192)
    for value in ["", "t" * 8193, 5, None, ["t"]]:
        assert bad({"type": "auth", "token": value}).message.startswith("auth.token ")
    assert bad({"type": "auth"}).message.startswith("auth.token is required")


@pytest.mark.parametrize("value", [1, 0, "true", None, [], "false"])
def test_status_available_must_be_bool(value: Any) -> None:
    msg = bad({"type": "status", "available": value}).message
    assert msg.startswith("status.available ")
    assert "boolean" in msg


def test_status_available_missing() -> None:
    assert "status.available is required" in bad({"type": "status"}).message


def test_terms_version() -> None:
    base = {"type": "offer.accept", "request_id": "r1"}
    assert parse({**base, "terms_version": "v" * 64}) == OfferAccept("r1", "v" * 64)
    assert parse({**base, "terms_version": "Bedingungen é 1"}) == OfferAccept(
        "r1", "Bedingungen é 1"
    )
    for value in ["", "v" * 65, "v1\n", "v\x00", "tab\there", "\x7f", 1, True]:
        msg = bad({**base, "terms_version": value}).message
        assert msg == "offer.accept.terms_version must be a string of 1..64 printable characters"
    assert "terms_version is required" in bad(base).message


def _chat(**fields: Any) -> dict[str, Any]:
    return {"type": "chat.send", "session_id": "s1", "text": "hi", "client_msg_id": "m1", **fields}


def _parse_chat(obj: dict[str, Any]) -> ChatSend:
    frame = parse(obj)
    assert isinstance(frame, ChatSend)
    return frame


def test_chat_text_boundaries() -> None:
    assert _parse_chat(_chat(text="x" * 4000)).text == "x" * 4000
    # code points, not bytes nor UTF-16 units
    assert _parse_chat(_chat(text="\U0001f600" * 4000)).text == "\U0001f600" * 4000
    assert _parse_chat(_chat(text=" ")).text == " "
    assert _parse_chat(_chat(text="a\nb\tc")).text == "a\nb\tc"
    rule = "chat.send.text must be a string of 1..4000 characters without NUL"
    for value in ["x" * 4001, "\U0001f600" * 4001, "", "a\x00b", 5, ["hi"]]:
        assert bad(_chat(text=value)).message == rule


def test_chat_text_missing() -> None:
    obj = _chat()
    del obj["text"]
    assert bad(obj).message.startswith("chat.send.text is required")


def test_client_msg_id() -> None:
    assert _parse_chat(_chat(client_msg_id="a:b.c_d-e")).client_msg_id == "a:b.c_d-e"
    assert _parse_chat(_chat(client_msg_id="m" * 64)).client_msg_id == "m" * 64
    rule = "chat.send.client_msg_id must be a string of 1..64 characters [A-Za-z0-9_.:-]"
    for value in ["m" * 65, "", "a b", "a/b", "m\n", 7]:
        assert bad(_chat(client_msg_id=value)).message == rule
    obj = _chat()
    del obj["client_msg_id"]
    assert bad(obj).message.startswith("chat.send.client_msg_id is required")


def test_note_text_boundaries() -> None:
    base = {"type": "note.save", "session_id": "s1"}
    assert parse({**base, "text": "n" * 20000}) == NoteSave("s1", "n" * 20000)
    rule = "note.save.text must be a string of 0..20000 characters without NUL"
    for value in ["n" * 20001, "a\x00", 0, False]:
        assert bad({**base, "text": value}).message == rule
    assert bad(base).message.startswith("note.save.text is required")


@pytest.mark.parametrize("data", [[], "sdp", 1, True, [{"sdp": "x"}]])
def test_rtc_signal_data_must_be_map(data: Any) -> None:
    msg = bad({"type": "rtc.signal", "session_id": "s1", "data": data}).message
    assert msg == "rtc.signal.data must be a map"


def test_rtc_signal_data_missing() -> None:
    msg = bad({"type": "rtc.signal", "session_id": "s1"}).message
    assert msg.startswith("rtc.signal.data is required")


# -- roles ---------------------------------------------------------------------------------

C, T, OP = Role.CLIENT, Role.THERAPIST, Role.OPERATOR
ROLE_TABLE = {
    "auth": {C, T, OP},
    "ping": {C, T, OP},
    "status": {T},
    "claim": {T},
    "claim.release": {T},
    "offer.accept": {C},
    "offer.decline": {C},
    "session.join": {C, T},
    "rtc.signal": {C, T},
    "chat.send": {C, T},
    "session.end": {C, T},
    "note.save": {T},
}


@pytest.mark.parametrize(("obj", "_expected"), VALID)
def test_role_table(obj: dict[str, Any], _expected: Inbound) -> None:
    frame = parse(obj)
    for role in Role:
        assert allowed(frame, role) is (role in ROLE_TABLE[obj["type"]]), (obj["type"], role)


def test_role_table_covers_every_frame() -> None:
    assert set(ALLOWED_ROLES) == {type(parse(obj)) for obj, _ in VALID}
    assert {parse(obj).TYPE for obj, _ in VALID} == set(ROLE_TABLE)


# -- outbound frames -----------------------------------------------------------------------


def test_error_frame() -> None:
    assert error_frame("taken", "gone", "r1") == {
        "type": "error",
        "code": "taken",
        "message": "gone",
        "ref": "r1",
    }
    frame = error_frame("busy", "m", None)
    assert "ref" in frame and frame["ref"] is None


def test_error_from_exception() -> None:
    assert error_from(errors.Taken(), "x") == {
        "type": "error",
        "code": "taken",
        "message": "the request is no longer waiting",
        "ref": "x",
    }
    exc = bad({"type": "claim", "request_id": 5, "ref": "q"})
    assert error_from(exc, ref_of({"ref": "q"})) == {
        "type": "error",
        "code": "bad_message",
        "message": f"claim.request_id {ID_MSG}",
        "ref": "q",
        "field": "claim.request_id",
    }


def test_error_from_never_overrides_reserved_keys() -> None:
    exc = errors.Forbidden("no", code="sneaky", type="x", ref="y")
    assert error_from(exc, None) == {
        "type": "error",
        "code": "forbidden",
        "message": "no",
        "ref": None,
    }


def test_pong_frame() -> None:
    assert pong_frame("p1") == {"type": "pong", "ref": "p1"}
    assert pong_frame(None) == {"type": "pong", "ref": None}
