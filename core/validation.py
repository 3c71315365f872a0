"""Validation primitives shared by every floor: ids, request bodies, headers. Pure.

- :func:`is_id` / :func:`validate_id`: ids of users, requests, sessions
  (PROTOCOL.md §2);
- :func:`parse_json_body`: an HTTP body as one JSON value inside the wire data
  model (:mod:`core.wire`);
- :func:`parse_idempotency_key`: the ``Idempotency-Key`` header.

They raise :class:`~core.errors.BadInput` (400) or
:class:`~core.errors.InvalidField` (422) naming the field, never the value.
"""

from __future__ import annotations

import re
from typing import Any

from core.errors import BadInput, InvalidField
from core.wire import check_data_model, loads_json

#: Ids of users, requests and sessions (PROTOCOL.md §2).
ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
ID_RULE = "1..64 characters [A-Za-z0-9_.-]"
BODY_LIMIT = 65536
_IDEMPOTENCY_KEY_RE = re.compile(r"[\x20-\x7e]{1,128}")


def is_id(value: object) -> bool:
    """Whether ``value`` is a well-formed id: a string of 1..64 ``[A-Za-z0-9_.-]``."""
    return type(value) is str and ID_RE.fullmatch(value) is not None


def validate_id(value: str, what: str) -> str:
    """A path id, checked; ``what`` names it in the message (e.g. ``"request id"``).

    Raises :class:`InvalidField` with ``field="id"``.
    """
    if not is_id(value):
        raise InvalidField(f"{what} must be {ID_RULE}", field="id")
    return value


def parse_json_body(raw: bytes, limit: int = BODY_LIMIT) -> Any:
    """The JSON value of a request body, or :class:`BadInput`.

    Rejects bodies over ``limit`` bytes, bodies that are not UTF-8, and text
    that is not exactly one JSON value (``NaN``/``Infinity`` included), and
    values outside the data model the websocket codecs share
    (:func:`~core.wire.check_data_model`): a string holding a lone
    surrogate escape (``"\\ud800"``) is valid JSON but no encoder can write it
    back, so it is refused here, before anything is stored. In an object, such
    a value is :class:`InvalidField` naming its top-level field; a bad key, or
    a bad value in a body that is not an object, is :class:`BadInput`.
    """
    if len(raw) > limit:
        raise BadInput(f"request body is over the limit of {limit} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput("request body is not valid UTF-8") from None
    if not text.strip():
        raise BadInput("request body is empty; expected a JSON object")
    body = loads_json(text, what="request body")
    if isinstance(body, dict):
        for key, value in body.items():
            check_data_model(key)
            try:
                check_data_model(value)
            except BadInput as exc:
                raise InvalidField(f"{key}: {exc.message}", field=key) from None
    else:
        check_data_model(body)
    return body


def parse_idempotency_key(value: str | None) -> str | None:
    """The ``Idempotency-Key`` header: absent, or 1..128 printable ASCII characters."""
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY_RE.fullmatch(value):
        raise InvalidField(
            "Idempotency-Key must be 1..128 printable ASCII characters",
            field="Idempotency-Key",
        )
    return value
