"""core.wire: the two subprotocols, negotiation and encode-once broadcasting."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import wire as codec_mod
from core.errors import BadInput
from core.wire import (
    JSON_CODEC,
    MAX_DEPTH,
    MSGPACK_CODEC,
    SUBPROTOCOLS,
    Codec,
    Encoded,
    loads_json,
    negotiate,
)

# -- JSON-safe values: what both codecs carry --------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
json_safe_maps = st.dictionaries(st.text(max_size=10), _values, max_size=6)


def test_names_and_kinds() -> None:
    assert JSON_CODEC.name == "qc.v1.json" and JSON_CODEC.binary is False
    assert MSGPACK_CODEC.name == "qc.v1.msgpack" and MSGPACK_CODEC.binary is True
    assert SUBPROTOCOLS == ("qc.v1.json", "qc.v1.msgpack")


def test_json_encode_is_compact_and_keeps_unicode() -> None:
    out = JSON_CODEC.encode({"type": "chat.message", "text": "héllo ✓", "n": [1, 2]})
    assert out == '{"type":"chat.message","text":"héllo ✓","n":[1,2]}'
    assert isinstance(out, str)


def test_msgpack_encode_uses_bin_type() -> None:
    out = MSGPACK_CODEC.encode({"type": "x", "s": "é"})
    assert isinstance(out, bytes)
    # str8/fixstr with raw UTF-8, decodable with raw=False
    assert msgpack.unpackb(out, raw=False) == {"type": "x", "s": "é"}
    # use_bin_type: bytes become the bin family (0xc4), not raw str
    assert MSGPACK_CODEC.encode({"b": b"\x01"}) == b"\x81\xa1b\xc4\x01\x01"


def test_encode_accepts_any_mapping() -> None:
    from types import MappingProxyType

    frame = MappingProxyType({"type": "pong", "ref": None})
    assert JSON_CODEC.encode(frame) == '{"type":"pong","ref":null}'
    assert MSGPACK_CODEC.decode(MSGPACK_CODEC.encode(frame)) == {"type": "pong", "ref": None}


def test_encode_refuses_nan() -> None:
    with pytest.raises(ValueError):
        JSON_CODEC.encode({"x": float("nan")})


@given(json_safe_maps)
def test_round_trip_json(frame: dict[str, Any]) -> None:
    assert JSON_CODEC.decode(JSON_CODEC.encode(frame)) == frame


@given(json_safe_maps)
def test_round_trip_msgpack(frame: dict[str, Any]) -> None:
    assert MSGPACK_CODEC.decode(MSGPACK_CODEC.encode(frame)) == frame


@given(json_safe_maps)
def test_cross_codec_relay(frame: dict[str, Any]) -> None:
    """Whatever one codec accepts, the other can encode: a relay never fails."""
    from_json = JSON_CODEC.decode(JSON_CODEC.encode(frame))
    assert MSGPACK_CODEC.decode(MSGPACK_CODEC.encode(from_json)) == frame
    from_msgpack = MSGPACK_CODEC.decode(MSGPACK_CODEC.encode(frame))
    assert JSON_CODEC.decode(JSON_CODEC.encode(from_msgpack)) == frame


# -- rejections ----------------------------------------------------------------------------


def _bad(codec: Codec, data: str | bytes) -> str:
    with pytest.raises(BadInput) as info:
        codec.decode(data)
    assert info.value.code == "bad_message"
    return info.value.message


def test_binary_frame_on_json_says_so() -> None:
    msg = _bad(JSON_CODEC, b'{"type":"ping"}')
    assert "binary frame" in msg and "qc.v1.json" in msg and "text frames" in msg


def test_text_frame_on_msgpack_says_so() -> None:
    msg = _bad(MSGPACK_CODEC, '{"type":"ping"}')
    assert "text frame" in msg and "qc.v1.msgpack" in msg and "binary frames" in msg


@pytest.mark.parametrize("data", ["", "{", "{'a': 1}", '{"a": 1} x', "nul", '{"a":1,}'])
def test_unparseable_json(data: str) -> None:
    assert "not valid JSON" in _bad(JSON_CODEC, data)


def test_unparseable_json_does_not_quote_data() -> None:
    msg = _bad(JSON_CODEC, '{"token": "secret-token-value"')
    assert "secret" not in msg


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", b"\x81\xa1a", msgpack.packb({"a": 1}) + b"\x01", b"\x81\xa1a\xa1\xff"],
)
def test_unparseable_msgpack(data: bytes) -> None:
    assert "not valid MessagePack" in _bad(MSGPACK_CODEC, data)


@pytest.mark.parametrize(
    ("value", "kind"),
    [([1, 2], "a list"), ("x", "a string"), (3, "a number"), (None, "null"), (True, "a boolean")],
)
def test_top_level_must_be_a_map(value: Any, kind: str) -> None:
    msg = _bad(JSON_CODEC, json.dumps(value))
    assert msg == f"a frame must be a map, got {kind}"
    msg = _bad(MSGPACK_CODEC, msgpack.packb(value))
    assert msg == f"a frame must be a map, got {kind}"


@pytest.mark.parametrize(
    "data",
    [
        '{"x": NaN}',
        '{"x": Infinity}',
        '{"x": -Infinity}',
        '{"x": [1, {"y": NaN}]}',
        '{"x": 1e400}',
        '{"x": -1e400}',
    ],
)
def test_json_nan_and_infinity_rejected(data: str) -> None:
    msg = _bad(JSON_CODEC, data)
    assert "finite" in msg


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_msgpack_nan_and_infinity_rejected(value: float) -> None:
    assert "finite" in _bad(MSGPACK_CODEC, msgpack.packb({"x": value}))


def test_msgpack_ext_type_rejected() -> None:
    msg = _bad(MSGPACK_CODEC, msgpack.packb({"x": msgpack.ExtType(5, b"abc")}))
    assert "ext type 5" in msg


def test_msgpack_timestamp_ext_rejected() -> None:
    msg = _bad(MSGPACK_CODEC, msgpack.packb({"x": msgpack.Timestamp(1, 0)}))
    assert "ext type -1" in msg


@pytest.mark.parametrize(
    "frame",
    [{1: "a"}, {b"k": 1}, {"ok": {2: 3}}, {"ok": [{None: 1}]}, {True: 1}, {1.5: 1}],
)
def test_msgpack_non_string_keys_rejected(frame: dict[Any, Any]) -> None:
    packed = msgpack.packb(frame, use_bin_type=True, strict_types=False)
    assert "map keys must be strings" in _bad(MSGPACK_CODEC, packed)


def test_msgpack_unhashable_key_rejected() -> None:
    # fixmap of 1 whose key is a fixarray [1] and value 2
    assert "map keys must be strings" in _bad(MSGPACK_CODEC, b"\x81\x91\x01\x02")


def test_msgpack_bin_value_rejected() -> None:
    assert "binary (bin)" in _bad(MSGPACK_CODEC, msgpack.packb({"x": b"\x00"}, use_bin_type=True))


def test_msgpack_invalid_utf8_string() -> None:
    # fixmap {"a": <str of one invalid byte>}
    assert "UTF-8" in _bad(MSGPACK_CODEC, b"\x81\xa1a\xa1\xff")


def test_integers_beyond_64_bits_rejected_in_json() -> None:
    assert JSON_CODEC.decode('{"x": 18446744073709551615}') == {"x": 2**64 - 1}
    assert JSON_CODEC.decode('{"x": -9223372036854775808}') == {"x": -(2**63)}
    assert "64 bits" in _bad(JSON_CODEC, '{"x": 18446744073709551616}')
    assert "64 bits" in _bad(JSON_CODEC, '{"x": -9223372036854775809}')


def test_huge_integer_literal_rejected() -> None:
    assert "too long" in _bad(JSON_CODEC, '{"x": ' + "9" * 5000 + "}")


def test_lone_surrogate_rejected() -> None:
    assert "surrogate" in _bad(JSON_CODEC, '{"x": "\\ud800"}')
    assert "surrogate" in _bad(JSON_CODEC, '{"\\udc00": 1}')
    # a proper pair is one character and fine
    assert JSON_CODEC.decode('{"x": "\\ud83d\\ude00"}') == {"x": "\U0001f600"}


def _nested(depth: int) -> dict[str, Any]:
    frame: dict[str, Any] = {}
    for _ in range(depth - 1):
        frame = {"a": frame}
    return frame


def test_depth_limit_boundary() -> None:
    ok = _nested(MAX_DEPTH)
    assert JSON_CODEC.decode(JSON_CODEC.encode(ok)) == ok
    assert MSGPACK_CODEC.decode(MSGPACK_CODEC.encode(ok)) == ok
    too_deep = _nested(MAX_DEPTH + 1)
    assert "nested deeper" in _bad(JSON_CODEC, JSON_CODEC.encode(too_deep))
    assert "nested deeper" in _bad(MSGPACK_CODEC, MSGPACK_CODEC.encode(too_deep))
    # lists count as levels too
    listy = '{"a":' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "}"
    assert "nested deeper" in _bad(JSON_CODEC, listy)


def test_pathological_nesting_is_bad_input_not_a_crash() -> None:
    deep = '{"a":' + "[" * 100_000 + "]" * 100_000 + "}"
    _bad(JSON_CODEC, deep)
    _bad(MSGPACK_CODEC, b"\x81\xa1a" + b"\x91" * 100_000 + b"\xc0")


def test_decode_accepts_bytearray() -> None:
    # outside the declared type, but some websocket libraries hand out bytearrays
    data = bytearray(msgpack.packb({"type": "ping"}))
    assert MSGPACK_CODEC.decode(data) == {"type": "ping"}  # type: ignore[arg-type]


def test_loads_json_names_what() -> None:
    with pytest.raises(BadInput, match=r"^request body is not valid JSON"):
        loads_json("{", what="request body")
    assert loads_json("[1, 2.5]") == [1, 2.5]


# -- negotiation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "expected"),
    [
        ([], JSON_CODEC),
        (["qc.v1.json"], JSON_CODEC),
        (["qc.v1.msgpack"], MSGPACK_CODEC),
        (["qc.v1.msgpack", "qc.v1.json"], MSGPACK_CODEC),
        (["qc.v1.json", "qc.v1.msgpack"], JSON_CODEC),
        (["chat", "qc.v1.msgpack"], MSGPACK_CODEC),
        (["chat"], None),
        (["QC.V1.JSON", "qc.v2.json"], None),
    ],
)
def test_negotiate(offered: list[str], expected: Codec | None) -> None:
    assert negotiate(offered) is expected
    assert negotiate(tuple(offered)) is expected


# -- Encoded -------------------------------------------------------------------------------


def test_encoded_encodes_once_per_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = Codec.encode

    def counting(self: Codec, frame: Any) -> str | bytes:
        calls.append(self.name)
        return real(self, frame)

    monkeypatch.setattr(codec_mod.Codec, "encode", counting)
    frame = {"type": "request.new", "request": {"id": "r1", "topics": ["a"]}}
    enc = Encoded(frame)
    assert calls == []  # lazy
    codecs = [JSON_CODEC, MSGPACK_CODEC] * 500
    out = [enc.for_codec(c) for c in codecs]
    assert sorted(calls) == ["qc.v1.json", "qc.v1.msgpack"]
    assert out[0] == real(JSON_CODEC, frame)
    assert out[1] == real(MSGPACK_CODEC, frame)
    # the same object every time, not a fresh copy
    assert all(o is out[0] for o in out[0::2])
    assert all(o is out[1] for o in out[1::2])


def test_encoded_only_encodes_codecs_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = Codec.encode

    def counting(self: Codec, frame: Any) -> str | bytes:
        calls.append(self.name)
        return real(self, frame)

    monkeypatch.setattr(codec_mod.Codec, "encode", counting)
    enc = Encoded({"type": "pong", "ref": None})
    for _ in range(10):
        assert MSGPACK_CODEC.decode(enc.for_codec(MSGPACK_CODEC)) == {"type": "pong", "ref": None}
    assert calls == ["qc.v1.msgpack"]
