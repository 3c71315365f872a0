"""Validation of HTTP bodies, path ids and headers (PROTOCOL.md §3). Pure: no I/O.

Every parser takes the decoded JSON body and returns a value of
:mod:`pool.model`, or raises:

- :class:`~dispatch.errors.BadInput` (400) when the body is not a JSON object
  (or, in :func:`parse_json_body`, not JSON at all);
- :class:`~dispatch.errors.InvalidField` (422) naming the bad ``field``;
- :class:`~dispatch.errors.ConsentRequired` (422) for a minor without a
  guardian's consent.

Unknown fields are ignored (forward compatibility). An optional field that is
``null`` counts as absent. Messages name the field and the rule, never the
value (it may be private).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from dispatch.codec import check_data_model, loads_json
from dispatch.errors import BadInput, ConsentRequired, InvalidField
from pool.model import Draft, TherapistProfile

#: Ids of users, requests and sessions (PROTOCOL.md §2).
ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
ID_RULE = "1..64 characters [A-Za-z0-9_.-]"

REGION_RE = re.compile(r"[A-Z]{2}(-[A-Z0-9]{1,8})?")
LANGUAGE_RE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*")
TOPIC_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
_IDEMPOTENCY_KEY_RE = re.compile(r"[\x20-\x7e]{1,128}")
_DATA_IMAGE_RE = re.compile(r"data:image/[A-Za-z0-9.+-]+(;[A-Za-z0-9=._+-]+)*,[A-Za-z0-9+/=%._~-]*")
# Characters that never belong in a URL we hand to a browser.
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\"'<>\\`]")

REGION_MAX = 16
LANGUAGE_MAX = 35
TOPIC_MAX = 40
DRAFT_TOPICS_MAX = 10
DRAFT_NOTES_MAX = 2000
AGE_MAX = 130
NAME_MAX = 100
BIO_MAX = 2000
PHOTO_URL_MAX = 2048
PROFILE_REGIONS_MAX = 50
PROFILE_LANGUAGES_MAX = 20
PROFILE_TOPICS_MAX = 50
BODY_LIMIT = 65536

_REGION_RULE = (
    'a string like "GB-ENG" or "US-CA"'
    ' (two capital letters, then optionally "-" and 1..8 capital letters or digits)'
)
_LANGUAGE_RULE = f'a language tag like "en" or "pt-BR" (at most {LANGUAGE_MAX} characters)'
_TOPIC_RULE = f"a string of 1..{TOPIC_MAX} characters [a-z0-9_-] starting with a letter or digit"


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
    (:func:`~dispatch.codec.check_data_model`): a string holding a lone
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


def parse_draft(body: Any) -> Draft:
    """The body of ``POST /v1/requests`` as a :class:`~pool.model.Draft`.

    After the fields check out, a client under 18 must send
    ``guardian_consent: true`` exactly, else :class:`ConsentRequired`.
    """
    obj = _object(body)
    region = _pattern(obj, "region", REGION_RE, REGION_MAX, _REGION_RULE, required=True)
    language = _pattern(obj, "language", LANGUAGE_RE, LANGUAGE_MAX, _LANGUAGE_RULE, required=True)
    topics = _list(obj, "topics", TOPIC_RE, TOPIC_MAX, _TOPIC_RULE, DRAFT_TOPICS_MAX)
    notes = _text(obj, "notes", DRAFT_NOTES_MAX)
    age = _age(obj)
    consent = _bool(obj, "guardian_consent")
    if age is not None and age < 18 and consent is not True:
        raise ConsentRequired(
            "a client under 18 needs guardian_consent: true", field="guardian_consent"
        )
    return Draft(
        region=region,
        language=language,
        topics=topics,
        notes=notes,
        age=age,
        guardian_consent=bool(consent),
    )


def parse_profile(therapist_id: str, body: Any) -> TherapistProfile:
    """The body of ``PUT /v1/therapists/{id}`` as a full :class:`~pool.model.TherapistProfile`.

    ``name`` is required (and must not be blank); every other field defaults
    to empty / ``false``, since a PUT replaces the whole profile.
    """
    validate_id(therapist_id, "therapist id")
    obj = _object(body)
    name = _text(obj, "name", NAME_MAX, required=True)
    if not name.strip():
        raise InvalidField(f"name must be 1..{NAME_MAX} characters, not blank", field="name")
    return TherapistProfile(
        id=therapist_id,
        name=name,
        bio=_text(obj, "bio", BIO_MAX),
        photo_url=_photo_url(obj),
        regions=_list(obj, "regions", REGION_RE, REGION_MAX, _REGION_RULE, PROFILE_REGIONS_MAX),
        languages=_list(
            obj, "languages", LANGUAGE_RE, LANGUAGE_MAX, _LANGUAGE_RULE, PROFILE_LANGUAGES_MAX
        ),
        topics=_list(obj, "topics", TOPIC_RE, TOPIC_MAX, _TOPIC_RULE, PROFILE_TOPICS_MAX),
        works_with_minors=bool(_bool(obj, "works_with_minors")),
    )


# -- helpers -------------------------------------------------------------------------------


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadInput("request body must be a JSON object")
    return body


def _get(obj: dict[str, Any], name: str, required: bool) -> Any:
    value = obj.get(name)
    if value is None and required:
        raise InvalidField(f"{name} is required", field=name)
    return value


def _pattern(
    obj: dict[str, Any],
    name: str,
    pattern: re.Pattern[str],
    max_len: int,
    rule: str,
    *,
    required: bool,
) -> str:
    value = _get(obj, name, required)
    if not _matches(value, pattern, max_len):
        raise InvalidField(f"{name} must be {rule}", field=name)
    result: str = value
    return result


def _matches(value: Any, pattern: re.Pattern[str], max_len: int) -> bool:
    return type(value) is str and len(value) <= max_len and pattern.fullmatch(value) is not None


def _list(
    obj: dict[str, Any],
    name: str,
    pattern: re.Pattern[str],
    max_len: int,
    rule: str,
    max_items: int,
) -> tuple[str, ...]:
    """An optional list of pattern-checked strings, deduplicated in order."""
    value = _get(obj, name, required=False)
    if value is None:
        return ()
    if type(value) is not list:
        raise InvalidField(f"{name} must be a list", field=name)
    if len(value) > max_items:
        raise InvalidField(f"{name} must have at most {max_items} items", field=name)
    for i, item in enumerate(value):
        if not _matches(item, pattern, max_len):
            raise InvalidField(f"{name}[{i}] must be {rule}", field=name)
    return tuple(dict.fromkeys(value))


def _text(obj: dict[str, Any], name: str, max_len: int, *, required: bool = False) -> str:
    """A string of at most ``max_len`` characters (code points), without NUL."""
    value = _get(obj, name, required)
    if value is None:
        return ""
    low = 1 if required else 0
    if type(value) is not str or not low <= len(value) <= max_len or "\x00" in value:
        raise InvalidField(
            f"{name} must be a string of {low}..{max_len} characters without NUL", field=name
        )
    return value


def _bool(obj: dict[str, Any], name: str) -> bool | None:
    value = _get(obj, name, required=False)
    if value is not None and type(value) is not bool:
        raise InvalidField(f"{name} must be a boolean (true or false)", field=name)
    return value


def _age(obj: dict[str, Any]) -> int | None:
    value = _get(obj, "age", required=False)
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= AGE_MAX:
        raise InvalidField(f"age must be a whole number 0..{AGE_MAX}, or null", field="age")
    return value


def _photo_url(obj: dict[str, Any]) -> str:
    rule = (
        'photo_url must be "", an http(s) URL or a data:image/ URI'
        f" of at most {PHOTO_URL_MAX} characters"
    )
    value = _get(obj, "photo_url", required=False)
    if value is None or value == "":
        return ""
    if type(value) is not str or len(value) > PHOTO_URL_MAX or _URL_FORBIDDEN.search(value):
        raise InvalidField(rule, field="photo_url")
    if value.startswith("data:"):
        if not _DATA_IMAGE_RE.fullmatch(value):
            raise InvalidField(rule, field="photo_url")
        return value
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError for a malformed port
    except ValueError:
        raise InvalidField(rule, field="photo_url") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidField(rule, field="photo_url")
    return value
