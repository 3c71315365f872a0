"""The forms a client fills before its first booked session (PROTOCOL.md §10),
defined as data, and their answers, encrypted at rest.

Definitions: one JSON file per form in ``care/forms/`` (``intake``,
``consent``, ``billing``; shipped as package data), each checked against
:data:`FORM_META_SCHEMA` when first loaded (:func:`load_forms`): ``name``,
``version`` (an integer: raise it when the form changes), ``title``,
``description``, optionally ``consent`` (true: answering it is an agreement,
recorded in ``consents`` at its version, and a newer version must be agreed
again), and ``fields``: ``key``, ``label``, ``type`` (:data:`FIELD_TYPES`),
``required``, ``help``, and ``options`` (``[{"value", "label"}]``, for
``choice`` alone).

Answers are checked by a JSON Schema made from the form
(:func:`answer_schema`, Draft 2020-12 with formats): unknown keys refused,
strings bounded (:data:`TEXT_MAX`, :data:`LONG_TEXT_MAX`) and without NUL, a
``date`` an ISO date, a ``phone`` an international number (stored E.164,
:func:`notify.phone.normalize_phone`), an ``email`` an address, a ``choice``
one of its options' values, a required ``bool`` true (a box that must be
ticked). An optional field may be left out, null or blank. Every bad field is
named at once: :class:`core.errors.InvalidField` with ``field`` (the first)
and ``fields`` (each key and what is wrong, never the value).

A form's state for one client (:func:`state_of`): ``missing``, ``done``, or
``outdated`` (answered against an older version). A client's forms are
complete (:func:`missing_forms`) when each is done, or outdated but not a
consent form: an older consent must be agreed again.

:class:`FormStore` keeps each client's latest answers to each form in
``form_answers``, as JSON sealed by the client's own data key
(:mod:`care.datakeys`), and records a consent form's agreement in
``consents`` (:mod:`care.consents`) in the same transaction. Answers are
never logged.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Final

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import best_match
from sqlalchemy import select, update

from care.consents import Consents
from care.datakeys import DataKeys
from care.tables import NAME_LEN, form_answers
from core.clock import rfc3339
from core.db import Database
from core.errors import BadInput, InvalidField, InvalidPhone, NotFound
from notify.phone import normalize_phone

__all__ = [
    "FIELD_TYPES",
    "FORM_META_SCHEMA",
    "LONG_TEXT_MAX",
    "TEXT_MAX",
    "Answers",
    "Field",
    "Form",
    "FormStore",
    "Stored",
    "answer_schema",
    "check_answers",
    "form_named",
    "load_forms",
    "missing_forms",
    "parse_form",
    "state_of",
    "status_public",
]

#: The longest ``text`` answer, in characters.
TEXT_MAX: Final = 200
#: The longest ``long_text`` answer.
LONG_TEXT_MAX: Final = 4000
#: The longest ``email`` answer (RFC 5321's path limit).
EMAIL_MAX: Final = 254
#: The longest ``phone`` answer before it is normalised.
PHONE_MAX: Final = 32
#: The field types a form may use.
FIELD_TYPES: Final = ("text", "long_text", "date", "bool", "choice", "phone", "email")
#: At most this many unknown keys are named in one error.
_UNKNOWN_NAMED: Final = 20

_KEY_PATTERN: Final = "^[a-z][a-z0-9_]{0,39}$"
_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
# The same shape as a contact's email (dispatch/validation.py); care/ may not import it.
_EMAIL_RE: Final = re.compile(r"[^@\s\x00-\x1f]+@[^@\s\x00-\x1f]+\.[^@\s\x00-\x1f]+")

#: What every form file must look like (Draft 2020-12).
FORM_META_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "version", "title", "description", "fields"],
    "properties": {
        "name": {"type": "string", "pattern": f"^[a-z][a-z0-9_]{{0,{NAME_LEN - 1}}}$"},
        "version": {"type": "integer", "minimum": 1},
        "title": {"type": "string", "minLength": 1, "maxLength": 100},
        "description": {"type": "string", "maxLength": 1000},
        "consent": {"type": "boolean"},
        "fields": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/field"}},
    },
    "$defs": {
        "field": {
            "type": "object",
            "additionalProperties": False,
            "required": ["key", "label", "type", "required", "help"],
            "properties": {
                "key": {"type": "string", "pattern": _KEY_PATTERN},
                "label": {"type": "string", "minLength": 1, "maxLength": 200},
                "type": {"enum": list(FIELD_TYPES)},
                "required": {"type": "boolean"},
                "help": {"type": "string", "maxLength": 500},
                "options": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["value", "label"],
                        "properties": {
                            "value": {"type": "string", "minLength": 1, "maxLength": 64},
                            "label": {"type": "string", "minLength": 1, "maxLength": 200},
                        },
                    },
                },
            },
            # ``options`` for a choice, and only there.
            "if": {"properties": {"type": {"const": "choice"}}},
            "then": {"required": ["options"]},
            "else": {"not": {"required": ["options"]}},
        }
    },
}
_META_VALIDATOR: Final = Draft202012Validator(FORM_META_SCHEMA)


@dataclass(frozen=True, slots=True)
class Field:
    key: str
    label: str
    type: str
    required: bool
    help: str
    options: tuple[tuple[str, str], ...] = ()

    def public(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "key": self.key,
            "label": self.label,
            "type": self.type,
            "required": self.required,
            "help": self.help,
        }
        if self.type == "choice":
            item["options"] = [{"value": v, "label": label} for v, label in self.options]
        return item


@dataclass(frozen=True, slots=True)
class Form:
    name: str
    version: int
    title: str
    description: str
    fields: tuple[Field, ...]
    consent: bool = False

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "title": self.title,
            "description": self.description,
            "consent": self.consent,
            "fields": [f.public() for f in self.fields],
        }


def parse_form(data: Any) -> Form:
    """A form file's JSON as a :class:`Form`; ``ValueError`` naming what is
    wrong when it does not match :data:`FORM_META_SCHEMA` or repeats a key."""
    first = best_match(_META_VALIDATOR.iter_errors(data))
    if first is not None:
        where = "/".join(str(p) for p in first.absolute_path) or "(top)"
        raise ValueError(f"form definition at {where}: {first.message}")
    fields = tuple(
        Field(
            key=f["key"],
            label=f["label"],
            type=f["type"],
            required=f["required"],
            help=f["help"],
            options=tuple((o["value"], o["label"]) for o in f.get("options", ())),
        )
        for f in data["fields"]
    )
    keys = [f.key for f in fields]
    if len(set(keys)) != len(keys):
        raise ValueError(f"form definition {data['name']!r}: a field key is repeated")
    return Form(
        name=data["name"],
        version=data["version"],
        title=data["title"],
        description=data["description"],
        fields=fields,
        consent=bool(data.get("consent", False)),
    )


#: The order the forms are shown and listed in; any other file comes after them.
_ORDER: Final = ("intake", "consent", "billing")


@cache
def load_forms() -> tuple[Form, ...]:
    """Every form of ``care/forms/*.json`` (read once per process, from the
    installed package), each checked; ``ValueError`` for a bad file or two
    files of one name."""
    folder = resources.files("care") / "forms"
    forms: dict[str, Form] = {}
    for item in sorted(folder.iterdir(), key=lambda p: p.name):
        if not item.name.endswith(".json"):
            continue
        try:
            form = parse_form(json.loads(item.read_text(encoding="utf-8")))
        except (ValueError, json.JSONDecodeError) as exc:
            raise ValueError(f"care/forms/{item.name}: {exc}") from None
        if form.name in forms:
            raise ValueError(f"care/forms/{item.name}: a second form named {form.name!r}")
        forms[form.name] = form
    rank = {name: i for i, name in enumerate(_ORDER)}
    return tuple(sorted(forms.values(), key=lambda f: (rank.get(f.name, len(rank)), f.name)))


def form_named(name: str) -> Form:
    """The form called ``name``; :class:`NotFound` when there is none."""
    for form in load_forms():
        if form.name == name:
            return form
    raise NotFound("no such form")


# -- answers -------------------------------------------------------------------------


def _property(f: Field) -> dict[str, Any]:
    no_nul = {"not": {"pattern": "\x00"}}
    if f.type == "text":
        return {"type": "string", "maxLength": TEXT_MAX, **no_nul}
    if f.type == "long_text":
        return {"type": "string", "maxLength": LONG_TEXT_MAX, **no_nul}
    if f.type == "date":
        return {"type": "string", "format": "date"}
    if f.type == "bool":
        return {"type": "boolean", "const": True} if f.required else {"type": "boolean"}
    if f.type == "choice":
        return {"type": "string", "enum": [v for v, _ in f.options]}
    if f.type == "phone":
        return {"type": "string", "maxLength": PHONE_MAX, "format": "phone"}
    assert f.type == "email", f.type
    return {"type": "string", "maxLength": EMAIL_MAX, "format": "email"}


def answer_schema(form: Form) -> dict[str, Any]:
    """The JSON Schema (Draft 2020-12) a body of answers to ``form`` must
    match, once blanks are dropped (:func:`check_answers`)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": [f.key for f in form.fields if f.required],
        "properties": {f.key: _property(f) for f in form.fields},
    }


def _is_date(value: object) -> bool:
    if not isinstance(value, str):
        return True  # the type is another keyword's to judge
    if not _DATE_RE.fullmatch(value):
        return False
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_email(value: object) -> bool:
    return not isinstance(value, str) or _EMAIL_RE.fullmatch(value) is not None


def _is_phone(value: object) -> bool:
    if isinstance(value, str):
        normalize_phone(value)
    return True


def _format_checker() -> FormatChecker:
    """The formats answers use: ours, not jsonschema's looser defaults."""
    checker = FormatChecker(formats=())
    checker.checks("date")(_is_date)
    checker.checks("email")(_is_email)
    checker.checks("phone", raises=InvalidPhone)(_is_phone)
    return checker


_FORMATS: Final = _format_checker()


def _rule(f: Field) -> str:
    """What ``f`` takes, in words (an error's message; never the value)."""
    if f.type == "text":
        return f"Text of at most {TEXT_MAX} characters, without NUL characters."
    if f.type == "long_text":
        return f"Text of at most {LONG_TEXT_MAX} characters, without NUL characters."
    if f.type == "date":
        return "A date like 1990-04-25."
    if f.type == "bool":
        return "This must be ticked to go on." if f.required else "Yes or no (true or false)."
    if f.type == "choice":
        return "Choose one of the options."
    if f.type == "phone":
        return "A phone number with its country code, e.g. +44 7700 900123."
    return "An email address like name@example.com."


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


@cache
def _validator(form: Form) -> Draft202012Validator:
    return Draft202012Validator(answer_schema(form), format_checker=_FORMATS)


def check_answers(form: Form, body: Any) -> dict[str, Any]:
    """``body`` (the decoded JSON of ``PUT /v1/me/forms/{name}``) as answers
    to ``form``: blanks dropped, strings stripped at the ends, phones in
    E.164. :class:`BadInput` for a body that is no object;
    :class:`InvalidField` naming every bad, missing or unknown key."""
    if not isinstance(body, dict):
        raise BadInput("request body must be a JSON object of answers")
    given = {k: v.strip() if isinstance(v, str) else v for k, v in body.items() if not _blank(v)}
    by_key = {f.key: f for f in form.fields}
    bad: dict[str, str] = {}
    unknown: list[str] = []
    for error in _validator(form).iter_errors(given):
        if error.validator == "required":
            for key in error.validator_value:
                if key not in given:
                    bad.setdefault(key, "This is required.")
        elif error.validator == "additionalProperties":
            unknown.extend(k for k in given if k not in by_key)
        elif error.absolute_path:
            key = str(error.absolute_path[0])
            bad.setdefault(key, _rule(by_key[key]))
    fields = {f.key: bad[f.key] for f in form.fields if f.key in bad}
    for key in sorted(set(unknown))[:_UNKNOWN_NAMED]:
        fields[key[:64]] = "This form has no such field."
    if fields:
        first = next(iter(fields))
        raise InvalidField(
            f"{len(fields)} answer(s) of the {form.name} form need attention: " + ", ".join(fields),
            field=first,
            fields=fields,
        )
    return {k: normalize_phone(v) if by_key[k].type == "phone" else v for k, v in given.items()}


# -- states ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stored:
    """What is kept about one client's answers to one form, without them."""

    form: str
    version: int
    updated_at: float


def state_of(form: Form, stored: Stored | None) -> str:
    """``missing``, ``done`` (the current version, or a newer one a rolled
    back definition does not know), or ``outdated``."""
    if stored is None:
        return "missing"
    return "outdated" if stored.version < form.version else "done"


def missing_forms(forms: Iterable[Form], stored: Mapping[str, Stored]) -> list[str]:
    """The names of the forms a client must still fill before a session is
    booked: missing ones, and consent forms answered at an older version."""
    missing = []
    for form in forms:
        state = state_of(form, stored.get(form.name))
        if state == "missing" or (state == "outdated" and form.consent):
            missing.append(form.name)
    return missing


def status_public(forms: Iterable[Form], stored: Mapping[str, Stored]) -> dict[str, Any]:
    """The body of ``GET /v1/me/forms``."""
    forms = list(forms)
    items = []
    for form in forms:
        got = stored.get(form.name)
        items.append(
            {
                "name": form.name,
                "version": form.version,
                "title": form.title,
                "state": state_of(form, got),
                "updated_at": None if got is None else rfc3339(got.updated_at),
            }
        )
    return {"forms": items, "complete": not missing_forms(forms, stored)}


# -- the store ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answers:
    """One client's answers to one form, decrypted."""

    form: str
    version: int
    updated_at: float
    answers: dict[str, Any]

    def public(self) -> dict[str, Any]:
        return {
            "name": self.form,
            "version": self.version,
            "updated_at": rfc3339(self.updated_at),
            "answers": self.answers,
        }


def _to_dt(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


class FormStore:
    """Clients' answers in ``form_answers``, each sealed by its client's own
    data key; a consent form's agreements also in ``consents``."""

    def __init__(self, db: Database, data_keys: DataKeys) -> None:
        self.db = db
        self.data_keys = data_keys
        self.consents = Consents(db)

    async def put(
        self, client_id: str, form: Form, answers: Mapping[str, Any], now: float
    ) -> Stored:
        """Store ``answers`` (checked by :func:`check_answers`) as the
        client's latest to ``form`` at its current version, replacing any
        earlier; a consent form's agreement is recorded in the same
        transaction. The client's data key is made on its first answers."""
        cipher = await self.data_keys.cipher_for(client_id, create=True)
        assert cipher is not None  # create=True always gives one
        sealed = cipher.encrypt(json.dumps(dict(answers), sort_keys=True, ensure_ascii=False))
        at = _to_dt(now)
        values = {"version": form.version, "answers": sealed, "updated_at": at}
        t = form_answers.c
        async with self.db.session() as s, s.begin():
            inserted = await s.execute(
                self.db.insert_or_nothing(
                    form_answers,
                    {"client_id": client_id, "form": form.name, **values},
                    ["client_id", "form"],
                )
            )
            if not getattr(inserted, "rowcount", 0):
                await s.execute(
                    update(form_answers)
                    .where(t.client_id == client_id, t.form == form.name)
                    .values(**values)
                )
            if form.consent:
                await self.consents.give(client_id, form.name, form.version, None, now, s=s)
        return Stored(form.name, form.version, at.timestamp())

    async def stored(self, client_id: str) -> dict[str, Stored]:
        """What the client has answered, by form name (no decryption)."""
        t = form_answers.c
        stmt = select(t.form, t.version, t.updated_at).where(t.client_id == client_id)
        async with self.db.reading() as conn:
            rows = (await conn.execute(stmt)).all()
        return {
            row.form: Stored(row.form, int(row.version), row.updated_at.timestamp()) for row in rows
        }

    async def missing(self, client_id: str) -> list[str]:
        """:func:`missing_forms` for ``client_id`` against the current forms."""
        return missing_forms(load_forms(), await self.stored(client_id))

    async def answers(self, client_id: str, form: str | None = None) -> list[Answers]:
        """The client's answers, decrypted (one form's with ``form``), in the
        forms' order. None without a data key (never answered, or erased).
        Raises :class:`signaling.crypto.DataKeyError` for answers the key
        does not open."""
        t = form_answers.c
        stmt = select(form_answers).where(t.client_id == client_id)
        if form is not None:
            stmt = stmt.where(t.form == form)
        async with self.db.reading() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        if not rows:
            return []
        cipher = await self.data_keys.cipher_for(client_id, create=False)
        if cipher is None:
            return []  # crypto-shredded: nothing opens these any more
        rank = {f.name: i for i, f in enumerate(load_forms())}
        found = [
            Answers(
                form=row["form"],
                version=int(row["version"]),
                updated_at=row["updated_at"].timestamp(),
                answers=json.loads(cipher.decrypt(bytes(row["answers"]))),
            )
            for row in rows
        ]
        return sorted(found, key=lambda a: (rank.get(a.form, len(rank)), a.form))
