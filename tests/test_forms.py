"""The care forms as data (PROTOCOL.md §10), pure: every form file of
``care/forms/`` matches the meta-schema; answers are checked by the JSON
Schema made from the form (every bad field named, never its value); states
and completeness; the welcome email's words."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from care.forms import (
    FIELD_TYPES,
    FORM_META_SCHEMA,
    LONG_TEXT_MAX,
    TEXT_MAX,
    Form,
    Stored,
    answer_schema,
    check_answers,
    form_named,
    load_forms,
    missing_forms,
    parse_form,
    state_of,
    status_public,
)
from care.welcome import welcome_email
from core.errors import BadInput, InvalidField, NotFound
from notify.email import render

INTAKE = {
    "reason": "I have been feeling low since the winter",
    "emergency_contact_name": "Sam Carter",
    "emergency_contact_phone": "+44 7700 900123",
}
CONSENT = {"agree_therapy": True, "agree_privacy": True}
BILLING = {
    "billing_name": "Jo Bloggs",
    "address_line1": "1 High Street",
    "city": "Leeds",
    "postcode": "LS1 1AA",
    "country": "GB",
}

#: Good answers to every form: what tests fill in before booking a session.
FORM_ANSWERS: dict[str, dict[str, Any]] = {"intake": INTAKE, "consent": CONSENT, "billing": BILLING}


def form_files() -> list[str]:
    folder = resources.files("care") / "forms"
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".json"))


def bad_fields(form: Form, body: Any) -> dict[str, str]:
    with pytest.raises(InvalidField) as info:
        check_answers(form, body)
    body_out = info.value.as_body()["error"]
    assert isinstance(body_out, dict)
    fields: dict[str, str] = body_out["fields"]
    assert body_out["field"] == next(iter(fields))
    return fields


# -- definitions -------------------------------------------------------------------------


def test_the_meta_schema_is_a_valid_schema() -> None:
    Draft202012Validator.check_schema(FORM_META_SCHEMA)


@pytest.mark.parametrize("name", form_files())
def test_every_form_file_matches_the_meta_schema(name: str) -> None:
    data = json.loads((resources.files("care") / "forms" / name).read_text(encoding="utf-8"))
    errors = list(Draft202012Validator(FORM_META_SCHEMA).iter_errors(data))
    assert errors == []
    assert name == f"{data['name']}.json"  # one file per form, named after it
    form = parse_form(data)
    Draft202012Validator.check_schema(answer_schema(form))


def test_the_three_forms_load_in_order_with_what_the_protocol_names() -> None:
    forms = load_forms()
    assert [f.name for f in forms] == ["intake", "consent", "billing"]
    assert all(f.version >= 1 and f.title for f in forms)
    intake = {f.key: f for f in form_named("intake").fields}
    assert intake["reason"].type == "long_text" and intake["reason"].required
    assert intake["emergency_contact_phone"].type == "phone"
    assert intake["emergency_contact_name"].required
    assert not intake["gp"].required and not intake["date_of_birth"].required
    consent = form_named("consent")
    assert consent.consent and [f.key for f in consent.fields] == ["agree_therapy", "agree_privacy"]
    assert all(f.type == "bool" and f.required for f in consent.fields)
    billing = {f.key: f for f in form_named("billing").fields}
    assert (
        billing["country"].type == "choice"
        and ("GB", "United Kingdom") in billing["country"].options
    )
    assert not billing["address_line2"].required
    # Every field type is used somewhere (the pages render each).
    assert {f.type for form in forms for f in form.fields} == set(FIELD_TYPES)
    with pytest.raises(NotFound):
        form_named("nope")


def test_public_shape() -> None:
    public = form_named("billing").public()
    assert set(public) == {"name", "version", "title", "description", "consent", "fields"}
    for field in public["fields"]:
        assert {"key", "label", "type", "required", "help"} <= set(field)
        assert ("options" in field) == (field["type"] == "choice")
    country = next(f for f in public["fields"] if f["key"] == "country")
    assert {"value": "GB", "label": "United Kingdom"} in country["options"]


@pytest.mark.parametrize(
    "change",
    [
        {"version": 0},
        {"version": "1"},
        {"name": "Bad Name"},
        {"fields": []},
        {"extra": 1},
        {"fields": [{"key": "a", "label": "A", "type": "colour", "required": True, "help": ""}]},
        {"fields": [{"key": "a", "label": "A", "type": "choice", "required": True, "help": ""}]},
        {
            "fields": [
                {
                    "key": "a",
                    "label": "A",
                    "type": "text",
                    "required": True,
                    "help": "",
                    "options": [{"value": "x", "label": "X"}],
                }
            ]
        },
        {"fields": [{"key": "1a", "label": "A", "type": "text", "required": True, "help": ""}]},
        {
            "fields": [
                {"key": "a", "label": "A", "type": "text", "required": True, "help": ""},
                {"key": "a", "label": "B", "type": "text", "required": False, "help": ""},
            ]
        },
    ],
)
def test_a_bad_definition_is_refused(change: dict[str, Any]) -> None:
    good = {"name": "x", "version": 1, "title": "X", "description": "", "fields": []}
    good["fields"] = [{"key": "a", "label": "A", "type": "text", "required": True, "help": ""}]
    parse_form(good)
    with pytest.raises(ValueError, match="form definition"):
        parse_form({**good, **change})


# -- answers -------------------------------------------------------------------------------


def test_good_answers_are_normalised() -> None:
    got = check_answers(
        form_named("intake"),
        {**INTAKE, "reason": "  low  ", "gp": "", "date_of_birth": None},
    )
    assert got == {**INTAKE, "reason": "low", "emergency_contact_phone": "+447700900123"}
    assert check_answers(form_named("consent"), CONSENT) == CONSENT
    full = {**BILLING, "address_line2": "Flat 2", "billing_email": "jo@example.org"}
    assert check_answers(form_named("billing"), full) == full
    dob = check_answers(form_named("intake"), {**INTAKE, "date_of_birth": "1990-04-25"})
    assert dob["date_of_birth"] == "1990-04-25"


def test_every_bad_missing_and_unknown_field_is_named_once_without_its_value() -> None:
    secret = "+1 555 SECRET"
    fields = bad_fields(
        form_named("intake"),
        {
            "reason": "x" * (LONG_TEXT_MAX + 1),
            "emergency_contact_phone": secret,
            "gp": "a\x00b",
            "date_of_birth": "2021-02-30",
            "shoe_size": 9,
        },
    )
    assert list(fields) == [
        "reason",
        "emergency_contact_name",
        "emergency_contact_phone",
        "gp",
        "date_of_birth",
        "shoe_size",
    ]
    assert fields["emergency_contact_name"] == "This is required."
    assert fields["shoe_size"] == "This form has no such field."
    assert "phone number" in fields["emergency_contact_phone"]
    assert secret not in json.dumps(fields)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("emergency_contact_name", "x" * (TEXT_MAX + 1)),
        ("emergency_contact_name", 12),
        ("emergency_contact_name", ["Sam"]),
        ("emergency_contact_name", "Sam\x00"),
        ("emergency_contact_phone", "07700 900123"),  # no country code
        ("emergency_contact_phone", "+44 12"),
        ("emergency_contact_phone", "+" + "1" * 40),
        ("date_of_birth", "25/04/1990"),
        ("date_of_birth", "19900425"),
        ("date_of_birth", 1990),
        ("reason", True),
    ],
)
def test_one_bad_intake_value(key: str, value: Any) -> None:
    assert list(bad_fields(form_named("intake"), {**INTAKE, key: value})) == [key]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("country", "XX"),
        ("country", "gb"),
        ("billing_email", "not-an-address"),
        ("billing_email", "a@b"),
        ("billing_email", "x" * 250 + "@example.org"),
        ("postcode", "x" * (TEXT_MAX + 1)),
    ],
)
def test_one_bad_billing_value(key: str, value: Any) -> None:
    assert list(bad_fields(form_named("billing"), {**BILLING, key: value})) == [key]


@pytest.mark.parametrize("value", [False, "true", 1, None, ""])
def test_a_consent_must_be_ticked(value: Any) -> None:
    fields = bad_fields(form_named("consent"), {**CONSENT, "agree_privacy": value})
    assert list(fields) == ["agree_privacy"]


@pytest.mark.parametrize("body", [[1], "x", 3, None])
def test_a_body_that_is_no_object_is_bad_input(body: Any) -> None:
    with pytest.raises(BadInput) as info:
        check_answers(form_named("intake"), body)
    assert not isinstance(info.value, InvalidField)


@given(st.dictionaries(st.text(max_size=10), st.none() | st.booleans() | st.text(max_size=30)))
def test_any_object_is_answered_or_refused_naming_fields(body: dict[str, Any]) -> None:
    form = form_named("billing")
    try:
        got = check_answers(form, body)
    except InvalidField as exc:
        assert exc.fields["fields"]
        return
    assert set(got) <= {f.key for f in form.fields}
    Draft202012Validator(answer_schema(form)).validate(got)


# -- states ---------------------------------------------------------------------------------


def test_states_and_completeness() -> None:
    forms = load_forms()
    now = 1_800_000_000.0
    assert missing_forms(forms, {}) == ["intake", "consent", "billing"]
    done = {f.name: Stored(f.name, f.version, now) for f in forms}
    assert missing_forms(forms, done) == []
    intake, consent = form_named("intake"), form_named("consent")
    assert state_of(intake, None) == "missing"
    assert state_of(intake, done["intake"]) == "done"
    newer_intake = Form(**{**_fields(intake), "version": intake.version + 1})
    newer_consent = Form(**{**_fields(consent), "version": consent.version + 1})
    assert state_of(newer_intake, done["intake"]) == "outdated"
    # An older intake still counts; an older consent must be agreed again.
    assert missing_forms([newer_intake, newer_consent], done) == ["consent"]
    body = status_public([newer_intake, newer_consent], done)
    assert [(f["name"], f["state"]) for f in body["forms"]] == [
        ("intake", "outdated"),
        ("consent", "outdated"),
    ]
    assert body["complete"] is False
    assert status_public(forms, done)["complete"] is True
    assert status_public(forms, {})["forms"][0]["updated_at"] is None


def _fields(form: Form) -> dict[str, Any]:
    return {name: getattr(form, name) for name in Form.__slots__}


# -- the welcome email -------------------------------------------------------------------


def test_the_welcome_email_lists_the_forms_to_fill_and_links_the_page() -> None:
    forms = load_forms()
    msg = welcome_email("c1", forms[:2], "https://care.example.com/")
    assert (msg.channel, msg.dedupe_key, msg.recipient_id) == ("email", "welcome:c1", "c1")
    words = render(msg.template, msg.payload)
    assert "About you" in words.text and "Your agreement" in words.text
    assert "Billing details" not in words.text
    assert "https://care.example.com/forms" in words.text
    assert words.html is not None and 'href="https://care.example.com/forms"' in words.html
    none_left = render(msg.template, welcome_email("c1", [], "https://x.test").payload)
    assert "all filled in" in none_left.text


def test_the_form_files_ship_with_the_package() -> None:
    """pyproject.toml's package data for ``care`` takes every form file (the
    server reads them with importlib.resources from the installed package)."""
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["care"]
    for name in form_files():
        assert any(fnmatch.fnmatch(f"forms/{name}", p) for p in patterns), name
    assert any(
        p.startswith("care") for p in config["tool"]["setuptools"]["packages"]["find"]["include"]
    )
