"""Validation of the pool's HTTP bodies (PROTOCOL.md §3). Pure: no I/O.

The primitives (ids, the JSON body, the ``Idempotency-Key`` header) are
:mod:`core.validation`'s. Every parser here takes the decoded JSON body and
returns a value of :mod:`pool.model`, or raises:

- :class:`~core.errors.BadInput` (400) when the body is not a JSON object;
- :class:`~core.errors.InvalidField` (422) naming the bad ``field``;
- :class:`~core.errors.ConsentRequired` (422) for a minor without a
  guardian's consent.

Unknown fields are ignored (forward compatibility). An optional field that is
``null`` counts as absent. Messages name the field and the rule, never the
value (it may be private).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from core.errors import BadInput, ConsentRequired, Forbidden, InvalidField
from core.validation import validate_id
from dispatch.frames import NOTE_TEXT_MAX
from notify.phone import normalize_phone
from notify.texts import QuietHours, check_timezone
from pool.model import Draft, TherapistProfile

REGION_RE = re.compile(r"[A-Z]{2}(-[A-Z0-9]{1,8})?")
LANGUAGE_RE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*")
TOPIC_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
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

_REGION_RULE = (
    'a string like "GB-ENG" or "US-CA"'
    ' (two capital letters, then optionally "-" and 1..8 capital letters or digits)'
)
_LANGUAGE_RULE = f'a language tag like "en" or "pt-BR" (at most {LANGUAGE_MAX} characters)'
_TOPIC_RULE = f"a string of 1..{TOPIC_MAX} characters [a-z0-9_-] starting with a letter or digit"


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
        photo_url=_photo_url(therapist_id, obj),
        regions=_list(obj, "regions", REGION_RE, REGION_MAX, _REGION_RULE, PROFILE_REGIONS_MAX),
        languages=_list(
            obj, "languages", LANGUAGE_RE, LANGUAGE_MAX, _LANGUAGE_RULE, PROFILE_LANGUAGES_MAX
        ),
        topics=_list(obj, "topics", TOPIC_RE, TOPIC_MAX, _TOPIC_RULE, PROFILE_TOPICS_MAX),
        works_with_minors=bool(_bool(obj, "works_with_minors")),
        accepting_new_clients=_bool(obj, "accepting_new_clients") is not False,
        session_price_minor=_price(obj),
    )


#: Fields only an operator may set (a therapist sending one gets 403).
CREDENTIALS = ("regions", "languages", "topics", "works_with_minors")
#: The highest session price a profile may ask, in minor units (10 000.00).
PRICE_MAX_MINOR = 1_000_000
_EMAIL_RE = re.compile(r"[^@\s\x00-\x1f]+@[^@\s\x00-\x1f]+\.[^@\s\x00-\x1f]+")
EMAIL_MAX = 254


def parse_profile_patch(body: Any, *, operator: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The body of ``PATCH /v1/therapists/{id}`` (PROTOCOL.md §7), checked:
    ``(profile changes, contact changes)``, each holding only the fields sent.

    Profile: ``name``, ``bio``, ``accepting_new_clients``, ``session_price_minor``
    (or ``null``), and for an operator the credentials. Contact:
    ``phone`` (E.164, or ``null`` to remove; 422 ``invalid_phone``), ``email``
    (or ``null``), ``sms_opt_in``, ``timezone`` (IANA), ``quiet_hours``
    (``"HH:MM-HH:MM"`` or ``null``). A credential from a therapist is
    :class:`~core.errors.Forbidden`.
    """
    obj = _object(body)
    for name in CREDENTIALS:
        if name in obj and not operator:
            raise Forbidden(f"{name} is a credential: only an operator may change it")
    profile: dict[str, Any] = {}
    if "name" in obj:
        name = _text(obj, "name", NAME_MAX, required=True)
        if not name.strip():
            raise InvalidField(f"name must be 1..{NAME_MAX} characters, not blank", field="name")
        profile["name"] = name
    if "bio" in obj:
        profile["bio"] = _text(obj, "bio", BIO_MAX)
    if "accepting_new_clients" in obj:
        if type(obj["accepting_new_clients"]) is not bool:
            raise InvalidField(
                "accepting_new_clients must be true or false", field="accepting_new_clients"
            )
        profile["accepting_new_clients"] = obj["accepting_new_clients"]
    if "session_price_minor" in obj:
        profile["session_price_minor"] = _price(obj)
    if operator:
        if "regions" in obj:
            profile["regions"] = _list(
                obj, "regions", REGION_RE, REGION_MAX, _REGION_RULE, PROFILE_REGIONS_MAX
            )
        if "languages" in obj:
            profile["languages"] = _list(
                obj, "languages", LANGUAGE_RE, LANGUAGE_MAX, _LANGUAGE_RULE, PROFILE_LANGUAGES_MAX
            )
        if "topics" in obj:
            profile["topics"] = _list(
                obj, "topics", TOPIC_RE, TOPIC_MAX, _TOPIC_RULE, PROFILE_TOPICS_MAX
            )
        if "works_with_minors" in obj:
            profile["works_with_minors"] = bool(_bool(obj, "works_with_minors"))
    contact: dict[str, Any] = {}
    if "phone" in obj:
        contact["phone"] = None if obj["phone"] is None else normalize_phone(obj["phone"])
    if "email" in obj:
        contact["email"] = parse_email(obj["email"])
    if "sms_opt_in" in obj:
        if type(obj["sms_opt_in"]) is not bool:
            raise InvalidField("sms_opt_in must be true or false", field="sms_opt_in")
        contact["sms_opt_in"] = obj["sms_opt_in"]
    if "timezone" in obj:
        try:
            contact["timezone"] = check_timezone(obj["timezone"]).key
        except ValueError as exc:
            raise InvalidField(str(exc), field="timezone") from None
    if "quiet_hours" in obj:
        raw = obj["quiet_hours"]
        try:
            contact["quiet_hours"] = None if raw is None else QuietHours.parse(raw)
        except ValueError as exc:
            raise InvalidField(str(exc), field="quiet_hours") from None
    return profile, contact


def parse_email(value: Any) -> str | None:
    """An email address as a therapist's profile (``PATCH
    /v1/therapists/{id}``) and a client's contact (``PATCH /v1/me/contact``)
    take it: a string like ``name@example.com`` of at most :data:`EMAIL_MAX`
    characters, or ``None`` (remove it); else 422 ``invalid_field`` ``email``
    (the message never quotes the value)."""
    if value is not None and (
        not isinstance(value, str) or len(value) > EMAIL_MAX or not _EMAIL_RE.fullmatch(value)
    ):
        raise InvalidField(
            f"email must be an address like name@example.com (at most {EMAIL_MAX}), or null",
            field="email",
        )
    return value


def parse_client_contact(body: Any) -> str | None:
    """The body of ``PATCH /v1/me/contact``: ``{"email": "..." | null}``;
    ``email`` must be there (null removes the address)."""
    obj = _object(body)
    if "email" not in obj:
        raise InvalidField("email is required: an address, or null to remove it", field="email")
    return parse_email(obj["email"])


def parse_note(body: Any) -> str:
    """The body of ``POST /v1/sessions/{id}/notes``: ``text``, 1..20000
    characters (the websocket's limit), not blank, without NUL."""
    text = _text(_object(body), "text", NOTE_TEXT_MAX, required=True)
    if not text.strip():
        raise InvalidField("text must not be blank", field="text")
    return text


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


def _price(obj: dict[str, Any]) -> int | None:
    value = _get(obj, "session_price_minor", required=False)
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= PRICE_MAX_MINOR:
        raise InvalidField(
            f"session_price_minor must be a whole number of minor units 0..{PRICE_MAX_MINOR},"
            " or null",
            field="session_price_minor",
        )
    return value


def _age(obj: dict[str, Any]) -> int | None:
    value = _get(obj, "age", required=False)
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= AGE_MAX:
        raise InvalidField(f"age must be a whole number 0..{AGE_MAX}, or null", field="age")
    return value


def _photo_url(therapist_id: str, obj: dict[str, Any]) -> str:
    rule = (
        'photo_url must be "", an http(s) URL, a data:image/ URI or this profile\'s own'
        f" uploaded photo, of at most {PHOTO_URL_MAX} characters"
    )
    value = _get(obj, "photo_url", required=False)
    if value is None or value == "":
        return ""
    if type(value) is str and value.startswith("/"):
        # A profile read back with its uploaded photo (PUT /v1/therapists/{id}/photo).
        if re.fullmatch(
            rf"/v1/therapists/{re.escape(therapist_id)}/photo\?v=[0-9a-f]{{8,64}}", value
        ):
            return value
        raise InvalidField(rule, field="photo_url")
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
