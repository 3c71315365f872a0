"""dispatch.validation: HTTP bodies, path ids and headers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core import errors
from core.validation import parse_idempotency_key, parse_json_body, validate_id
from dispatch.validation import parse_draft, parse_profile
from pool.model import Draft, TherapistProfile


def invalid(fn: Any, *args: Any) -> errors.InvalidField:
    with pytest.raises(errors.InvalidField) as info:
        fn(*args)
    exc = info.value
    assert type(exc) is errors.InvalidField
    assert (exc.code, exc.status) == ("invalid_field", 422)
    return exc


def field_of(exc: errors.DispatchError) -> object:
    return exc.fields.get("field")


DRAFT = {"region": "GB-ENG", "language": "en"}


def draft(**changes: Any) -> dict[str, Any]:
    body = {**DRAFT, **changes}
    return {k: v for k, v in body.items() if v is not _DROP}


_DROP = object()


# -- parse_json_body -----------------------------------------------------------------------


def test_json_body_ok() -> None:
    assert parse_json_body(b'{"a": [1, "\xc3\xa9"]}') == {"a": [1, "é"]}
    assert parse_json_body(b"[1]") == [1]  # shape is the parsers' business


def test_json_body_limit_boundary() -> None:
    body = b'{"n":"' + b"x" * (100 - 8) + b'"}'
    assert len(body) == 100
    assert parse_json_body(body, limit=100) == {"n": "x" * 92}
    with pytest.raises(errors.BadInput) as info:
        parse_json_body(body + b" ", limit=100)
    assert info.value.message == "request body is over the limit of 100 bytes"
    assert (info.value.code, info.value.status) == ("bad_message", 400)


def test_json_body_default_limit_is_64k() -> None:
    body = json.dumps({"n": "x" * (65536 - 9)}).encode()
    assert len(body) == 65536
    assert parse_json_body(body) == {"n": "x" * (65536 - 9)}
    with pytest.raises(errors.BadInput, match="65536 bytes"):
        parse_json_body(body + b" ")


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b'{"a": "\xff"}', "not valid UTF-8"),
        (b"", "empty"),
        (b"   ", "empty"),
        (b"{", "not valid JSON"),
        (b'{"a": 1} {"b": 2}', "not valid JSON"),
        (b'{"a": NaN}', "finite"),
        (b'{"a": Infinity}', "finite"),
        (b'{"a": 1e999}', "finite"),
        (b"\xef\xbb\xbf{}", "not valid JSON"),
    ],
)
def test_json_body_rejections(raw: bytes, words: str) -> None:
    with pytest.raises(errors.BadInput) as info:
        parse_json_body(raw)
    assert type(info.value) is errors.BadInput
    assert words in info.value.message


# -- parse_draft ---------------------------------------------------------------------------


def test_draft_minimal_and_defaults() -> None:
    assert parse_draft(DRAFT) == Draft(region="GB-ENG", language="en")


def test_draft_full() -> None:
    body = draft(
        topics=["anxiety", "couples", "anxiety", "sleep_2", "x-y"],
        notes="I'd like to talk",
        age=30,
        guardian_consent=False,
        unknown_future_field={"x": 1},
    )
    assert parse_draft(body) == Draft(
        region="GB-ENG",
        language="en",
        topics=("anxiety", "couples", "sleep_2", "x-y"),
        notes="I'd like to talk",
        age=30,
        guardian_consent=False,
    )


def test_draft_nulls_count_as_absent() -> None:
    body = draft(topics=None, notes=None, age=None, guardian_consent=None)
    assert parse_draft(body) == Draft(region="GB-ENG", language="en")


@pytest.mark.parametrize("body", [None, [], "x", 1, [DRAFT]])
def test_draft_body_must_be_object(body: Any) -> None:
    with pytest.raises(errors.BadInput) as info:
        parse_draft(body)
    assert type(info.value) is errors.BadInput
    assert info.value.status == 400


@pytest.mark.parametrize("region", ["GB", "GB-ENG", "US-CA", "DE-12345678", "FR-1"])
def test_region_ok(region: str) -> None:
    assert parse_draft(draft(region=region)).region == region


@pytest.mark.parametrize(
    "region",
    ["gb", "G", "GBR", "GB-", "GB-eng", "GB-123456789", "GB_ENG", "GB-ENG\n", " GB", 44, True],
)
def test_region_rejected(region: Any) -> None:
    exc = invalid(parse_draft, draft(region=region))
    assert field_of(exc) == "region"
    assert exc.message.startswith("region must be")


@pytest.mark.parametrize("name", ["region", "language"])
def test_required_fields(name: str) -> None:
    for body in (draft(**{name: _DROP}), draft(**{name: None})):
        exc = invalid(parse_draft, body)
        assert exc.message == f"{name} is required"
        assert field_of(exc) == name


@pytest.mark.parametrize("language", ["en", "haw", "pt-BR", "zh-Hant-TW", "en-ABCD1234"])
def test_language_ok(language: str) -> None:
    assert len(language) <= 35
    assert parse_draft(draft(language=language)).language == language


@pytest.mark.parametrize(
    "language",
    ["EN", "e", "engl", "en-", "en-a", "en_GB", "en-" + "a" * 9, "en-" + "ab-" * 11 + "ab", 1],
)
def test_language_rejected(language: Any) -> None:
    exc = invalid(parse_draft, draft(language=language))
    assert field_of(exc) == "language"


def test_language_length_boundary() -> None:
    exact = "en" + "-abcdefgh" * 3 + "-abcde"  # 2 + 27 + 6
    assert len(exact) == 35
    assert parse_draft(draft(language=exact)).language == exact
    over = exact + "f"  # still matches the pattern, but 36 characters
    assert len(over) == 36
    exc = invalid(parse_draft, draft(language=over))
    assert field_of(exc) == "language"


def test_topics_boundaries() -> None:
    ten = [f"t{i}" for i in range(10)]
    assert parse_draft(draft(topics=ten)).topics == tuple(ten)
    exc = invalid(parse_draft, draft(topics=[*ten, "t10"]))
    assert exc.message == "topics must have at most 10 items"
    assert field_of(exc) == "topics"
    assert parse_draft(draft(topics=["a" * 40])).topics == ("a" * 40,)
    assert parse_draft(draft(topics=[])).topics == ()


@pytest.mark.parametrize(
    "topic", ["", "a" * 41, "Anxiety", "-x", "_x", "a b", "a.b", "é", 1, None, ["a"]]
)
def test_topic_item_rejected(topic: Any) -> None:
    exc = invalid(parse_draft, draft(topics=["ok", topic]))
    assert exc.message.startswith("topics[1] must be")
    assert field_of(exc) == "topics"


@pytest.mark.parametrize("topics", ["anxiety", {"a": 1}, 1, True])
def test_topics_must_be_list(topics: Any) -> None:
    assert invalid(parse_draft, draft(topics=topics)).message == "topics must be a list"


def test_notes_boundaries() -> None:
    assert parse_draft(draft(notes="n" * 2000)).notes == "n" * 2000
    assert parse_draft(draft(notes="\U0001f600" * 2000)).notes == "\U0001f600" * 2000
    assert parse_draft(draft(notes="")).notes == ""
    for notes in ["n" * 2001, "a\x00b", 5, ["n"]]:
        exc = invalid(parse_draft, draft(notes=notes))
        assert exc.message == "notes must be a string of 0..2000 characters without NUL"
        assert field_of(exc) == "notes"


@pytest.mark.parametrize("age", [0, 18, 130, 45])
def test_age_ok(age: int) -> None:
    assert parse_draft(draft(age=age, guardian_consent=True)).age == age


@pytest.mark.parametrize("age", [-1, 131, 30.0, 17.5, "30", True, False, [30]])
def test_age_rejected(age: Any) -> None:
    exc = invalid(parse_draft, draft(age=age))
    assert field_of(exc) == "age"


@pytest.mark.parametrize("consent", ["true", 1, 0, "yes", []])
def test_guardian_consent_must_be_bool(consent: Any) -> None:
    exc = invalid(parse_draft, draft(age=30, guardian_consent=consent))
    assert field_of(exc) == "guardian_consent"


@pytest.mark.parametrize("consent", [_DROP, None, False])
def test_minor_without_consent(consent: Any) -> None:
    with pytest.raises(errors.ConsentRequired) as info:
        parse_draft(draft(age=17, guardian_consent=consent))
    assert (info.value.code, info.value.status) == ("consent_required", 422)
    assert field_of(info.value) == "guardian_consent"


def test_minor_with_non_bool_consent_is_invalid_field() -> None:
    invalid(parse_draft, draft(age=12, guardian_consent="true"))


def test_consent_boundary() -> None:
    assert parse_draft(draft(age=18)).guardian_consent is False
    minor = parse_draft(draft(age=17, guardian_consent=True))
    assert (minor.age, minor.guardian_consent, minor.minor) == (17, True, True)
    assert parse_draft(draft(age=0, guardian_consent=True)).minor
    # no age: no consent needed
    assert parse_draft(draft()).guardian_consent is False


# -- parse_profile -------------------------------------------------------------------------


def test_profile_minimal() -> None:
    assert parse_profile("t1", {"name": "Dr A"}) == TherapistProfile(id="t1", name="Dr A")


def test_profile_full() -> None:
    body = {
        "name": "Dr Ann Example",
        "bio": "b" * 2000,
        "photo_url": "https://cdn.example.com/a.jpg?x=1",
        "regions": ["GB-ENG", "US-CA", "GB-ENG"],
        "languages": ["en", "fr", "en"],
        "topics": ["anxiety", "couples", "couples"],
        "works_with_minors": True,
        "id": "ignored-the-path-wins",
    }
    assert parse_profile("t-1", body) == TherapistProfile(
        id="t-1",
        name="Dr Ann Example",
        bio="b" * 2000,
        photo_url="https://cdn.example.com/a.jpg?x=1",
        regions=("GB-ENG", "US-CA"),
        languages=("en", "fr"),
        topics=("anxiety", "couples"),
        works_with_minors=True,
    )


def test_profile_bad_path_id() -> None:
    exc = invalid(parse_profile, "bad id", {"name": "A"})
    assert field_of(exc) == "id"


def test_profile_body_must_be_object() -> None:
    with pytest.raises(errors.BadInput) as info:
        parse_profile("t1", ["name"])
    assert type(info.value) is errors.BadInput


def test_profile_name_boundaries() -> None:
    assert parse_profile("t1", {"name": "n" * 100}).name == "n" * 100
    for body in ({}, {"name": None}):
        exc = invalid(parse_profile, "t1", body)
        assert (exc.message, field_of(exc)) == ("name is required", "name")
    for name in ["n" * 101, "", "   ", 5, "a\x00"]:
        assert field_of(invalid(parse_profile, "t1", {"name": name})) == "name"


def test_profile_bio_boundary() -> None:
    assert parse_profile("t1", {"name": "A", "bio": ""}).bio == ""
    exc = invalid(parse_profile, "t1", {"name": "A", "bio": "b" * 2001})
    assert field_of(exc) == "bio"


@pytest.mark.parametrize(
    "url",
    [
        "",
        "http://example.com/p.png",
        "https://example.com:8443/p.png",
        "HTTPS://EXAMPLE.COM/p",
        "data:image/png;base64,iVBORw0KGgo=",
        "data:image/svg+xml;charset=utf-8,%3Csvg%3E",
        "https://example.com/" + "a" * (2048 - 20),
        "/v1/therapists/t1/photo?v=0123456789abcdef",  # its own uploaded photo
    ],
)
def test_photo_url_ok(url: str) -> None:
    assert len(url) <= 2048
    assert parse_profile("t1", {"name": "A", "photo_url": url}).photo_url == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/p.png",
        "javascript:alert(1)",
        "data:text/html,<script>",
        "data:image/png;base64,abc def",
        "data:image/png",
        "//example.com/p.png",
        "example.com/p.png",
        "/v1/therapists/t2/photo?v=0123456789abcdef",  # another's photo
        "/v1/therapists/t1/photo",
        "/v1/therapists/t1/photo?v=0123456789abcdef&x=<y>",
        "/etc/passwd",
        "https://",
        "https:///path",
        "https://example.com:99999/p",
        "https://example.com/a b",
        'https://example.com/"onerror="x',
        "https://example.com/<x>",
        "https://example.com/\n",
        "https://example.com/" + "a" * (2049 - 20),
        5,
        ["https://example.com"],
    ],
)
def test_photo_url_rejected(url: Any) -> None:
    exc = invalid(parse_profile, "t1", {"name": "A", "photo_url": url})
    assert field_of(exc) == "photo_url"


def test_profile_list_limits() -> None:
    regions = [f"GB-R{i}" for i in range(50)]
    assert parse_profile("t1", {"name": "A", "regions": regions}).regions == tuple(regions)
    exc = invalid(parse_profile, "t1", {"name": "A", "regions": [*regions, "GB"]})
    assert (exc.message, field_of(exc)) == ("regions must have at most 50 items", "regions")

    languages = [f"x{chr(97 + i)}" for i in range(20)]
    assert parse_profile("t1", {"name": "A", "languages": languages}).languages == tuple(languages)
    exc = invalid(parse_profile, "t1", {"name": "A", "languages": [*languages, "en"]})
    assert field_of(exc) == "languages"

    topics = [f"t{i}" for i in range(50)]
    assert parse_profile("t1", {"name": "A", "topics": topics}).topics == tuple(topics)
    exc = invalid(parse_profile, "t1", {"name": "A", "topics": [*topics, "x"]})
    assert field_of(exc) == "topics"


@pytest.mark.parametrize(
    ("name", "item"),
    [("regions", "gb-eng"), ("languages", "EN"), ("topics", "Anxiety"), ("regions", 1)],
)
def test_profile_list_items_checked(name: str, item: Any) -> None:
    exc = invalid(
        parse_profile, "t1", {"name": "A", name: ["ok" if name != "regions" else "GB", item]}
    )
    assert exc.message.startswith(f"{name}[1] must be")
    assert field_of(exc) == name


@pytest.mark.parametrize("value", [1, 0, "true", []])
def test_works_with_minors_must_be_bool(value: Any) -> None:
    exc = invalid(parse_profile, "t1", {"name": "A", "works_with_minors": value})
    assert field_of(exc) == "works_with_minors"


# -- ids and headers -----------------------------------------------------------------------


def test_validate_id_boundaries() -> None:
    assert validate_id("a" * 64, "request id") == "a" * 64
    assert validate_id("aZ0_.-", "request id") == "aZ0_.-"
    for value in ["a" * 65, "", "a b", "a/b", "a\n", "é"]:
        exc = invalid(validate_id, value, "request id")
        assert exc.message == "request id must be 1..64 characters [A-Za-z0-9_.-]"
        assert field_of(exc) == "id"


def test_idempotency_key() -> None:
    assert parse_idempotency_key(None) is None
    assert parse_idempotency_key("k" * 128) == "k" * 128
    assert parse_idempotency_key(" !~abc") == " !~abc"
    for value in ["", "k" * 129, "é", "a\tb", "a\x7f", "a\n"]:
        exc = invalid(parse_idempotency_key, value)
        assert field_of(exc) == "Idempotency-Key"
