"""Websocket codecs: the two subprotocols of PROTOCOL.md §5. Pure: no I/O.

``qc.v1.json`` carries text frames of JSON, ``qc.v1.msgpack`` binary frames of
MessagePack. Both carry the same data model, JSON's: maps with string keys,
lists, strings, finite numbers (integers within 64 bits), booleans and null.
:meth:`Codec.decode` rejects anything outside it (msgpack ``bin`` and ext
values, non-string keys; JSON ``NaN``/``Infinity``), so that any frame one
client sends can be relayed to a peer on the other codec without failing to
encode there. It also rejects nesting deeper than :data:`MAX_DEPTH` (both
encoders recurse) and strings holding lone surrogates (no UTF-8 encoder takes
them).

A broadcast wraps its frame in :class:`Encoded`, which encodes it at most once
per codec however many connections it goes to.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from core.errors import BadInput

#: Deepest nesting a decoded frame may have (the top-level map is depth 1).
#: Signalling data (SDP, ICE candidates) needs 3; the encoders recurse.
MAX_DEPTH = 32

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")

_JSON_NAME = "qc.v1.json"
_MSGPACK_NAME = "qc.v1.msgpack"


@dataclass(frozen=True, slots=True)
class Codec:
    """One subprotocol: how frames become websocket messages and back.

    ``binary`` tells which kind of websocket message the codec sends and
    expects: text frames (``False``) or binary frames (``True``).
    """

    name: str
    binary: bool

    def encode(self, frame: Mapping[str, Any]) -> str | bytes:
        """One outbound frame as a websocket message (``str`` for text, ``bytes`` for binary).

        Frames are built by the server, so a value neither codec can carry
        (a NaN, a set, ...) is a bug: it raises ``ValueError``/``TypeError``.
        """
        obj = frame if isinstance(frame, dict) else dict(frame)
        if self.binary:
            packed: bytes = msgpack.packb(obj, use_bin_type=True)
            return packed
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    def decode(self, data: str | bytes) -> dict[str, Any]:
        """One inbound websocket message as a map.

        Raises :class:`~core.errors.BadInput` (``bad_message``) for a
        message of the wrong kind (text on msgpack, binary on JSON), for data
        that does not parse, for a top-level value that is not a map, and for
        a value outside the shared data model (see the module docstring).
        The message never quotes the data.
        """
        if self.binary:
            if isinstance(data, str):
                raise BadInput(
                    f"text frame received on {self.name}; this subprotocol takes binary frames"
                )
            obj = _unpack(bytes(data))
        else:
            if not isinstance(data, str):
                raise BadInput(
                    f"binary frame received on {self.name}; this subprotocol takes text frames"
                )
            obj = loads_json(data, what="frame")
        if not isinstance(obj, dict):
            raise BadInput(f"a frame must be a map, got {_kind(obj)}")
        check_data_model(obj)
        return obj


JSON_CODEC = Codec(name=_JSON_NAME, binary=False)
MSGPACK_CODEC = Codec(name=_MSGPACK_NAME, binary=True)

#: The subprotocols we speak, in our order of preference.
SUBPROTOCOLS: tuple[str, ...] = (JSON_CODEC.name, MSGPACK_CODEC.name)

#: Codec by subprotocol name.
CODECS: Mapping[str, Codec] = {c.name: c for c in (JSON_CODEC, MSGPACK_CODEC)}


def negotiate(offered: Sequence[str]) -> Codec | None:
    """The codec for a websocket upgrade that offered ``offered`` subprotocols.

    - The first of the client's offers that we speak (the client's order wins:
      it lists what it prefers first).
    - JSON when the client offered none (PROTOCOL.md §5: "with neither
      offered, JSON").
    - ``None`` when the client offered only subprotocols we do not speak. The
      endpoint then still accepts the connection and speaks JSON, but without
      echoing a subprotocol (RFC 6455 §4.2.2 forbids echoing one the client
      did not offer): a client that insists on its subprotocol will fail the
      connection itself, and a lax one gets the protocol's default.
    """
    if not offered:
        return JSON_CODEC
    for name in offered:
        codec = CODECS.get(name)
        if codec is not None:
            return codec
    return None


class Encoded:
    """One outbound frame, encoded lazily and at most once per codec.

    A broadcast to many connections wraps its frame once and calls
    :meth:`for_codec` per connection; the frame is encoded once per codec,
    not once per connection. The frame must not be mutated after wrapping.
    """

    __slots__ = ("_cache", "_payloads", "frame")

    def __init__(self, frame: Mapping[str, Any]) -> None:
        self.frame = frame
        self._cache: dict[Codec, str | bytes] = {}
        self._payloads: dict[Codec, bytes] = {}

    def payload(self, codec: Codec) -> bytes:
        """The frame's bytes on the wire for ``codec`` (a text frame's UTF-8),
        computed once per codec."""
        try:
            return self._payloads[codec]
        except KeyError:
            data = self.for_codec(codec)
            raw = self._payloads[codec] = data if isinstance(data, bytes) else data.encode()
            return raw

    def for_codec(self, codec: Codec) -> str | bytes:
        """The frame as ``codec`` sends it (computed on the first call for that codec)."""
        try:
            return self._cache[codec]
        except KeyError:
            data = self._cache[codec] = codec.encode(self.frame)
            return data


class _Reject(Exception):
    """Raised inside parser hooks; turned into BadInput by the caller."""


def loads_json(text: str, *, what: str = "body") -> Any:
    """Strict ``json.loads``: no ``NaN``/``Infinity`` (nor numbers that overflow to it).

    Raises :class:`~core.errors.BadInput` naming ``what`` for text that is
    not one JSON value. Shared with the HTTP body parser.
    """
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except _Reject as exc:
        raise BadInput(f"{what} is not valid JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"{what} is not valid JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise BadInput(f"{what} is nested too deeply") from None
    except ValueError:
        # e.g. an integer literal longer than Python's int-parsing digit limit
        raise BadInput(f"{what} is not valid JSON: a number is too long") from None


def _reject_constant(name: str) -> Any:
    raise _Reject(f"{name} is not allowed; numbers must be finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Reject("a number overflows to Infinity; numbers must be finite")
    return value


def _reject_ext(code: int, data: bytes) -> Any:
    raise _Reject(f"msgpack ext type {code} is not allowed")


def _unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_reject_ext)
    except _Reject as exc:
        raise BadInput(f"frame is not allowed: {exc}") from None
    except msgpack.ExtraData:
        raise BadInput("frame is not valid MessagePack: extra data after the first value") from None
    except UnicodeDecodeError:
        raise BadInput("frame is not valid MessagePack: a string is not valid UTF-8") from None
    except TypeError:
        # a map or list used as a map key: unhashable
        raise BadInput("frame is not allowed: map keys must be strings") from None
    except (ValueError, RecursionError):
        raise BadInput("frame is not valid MessagePack") from None


def check_data_model(root: Any) -> None:
    """Reject anything outside the shared data model (module docstring).

    Raises :class:`~core.errors.BadInput`. Shared with the HTTP body
    parser, so that text no encoder can write back is refused on the way in.
    """
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            if depth > MAX_DEPTH:
                raise BadInput(f"data is nested deeper than {MAX_DEPTH} levels")
            for key, item in value.items():
                if type(key) is not str:
                    raise BadInput(f"map keys must be strings, got {_kind(key)}")
                _check_str(key)
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            if depth > MAX_DEPTH:
                raise BadInput(f"data is nested deeper than {MAX_DEPTH} levels")
            stack.extend((item, depth + 1) for item in value)
        elif type(value) is str:
            _check_str(value)
        elif type(value) is int:
            if not _INT_MIN <= value <= _INT_MAX:
                raise BadInput("an integer is out of range (it must fit in 64 bits)")
        elif type(value) is float:
            if not math.isfinite(value):
                raise BadInput("NaN and Infinity are not allowed; numbers must be finite")
        elif value is None or type(value) is bool:
            pass
        elif isinstance(value, msgpack.Timestamp):
            raise BadInput("frame is not allowed: msgpack ext type -1 (timestamp) is not allowed")
        else:
            raise BadInput(f"frame is not allowed: {_kind(value)} values are not allowed")


def _check_str(value: str) -> None:
    if _SURROGATE.search(value):
        raise BadInput("a string holds a lone surrogate (not encodable as UTF-8)")


def _kind(value: Any) -> str:
    """A value's kind in protocol words, for messages (never the value itself)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a map"
    if isinstance(value, bytes | bytearray):
        return "binary (bin)"
    return type(value).__name__
