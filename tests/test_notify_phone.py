"""notify.phone: E.164 in, E.164 out; anything else a 422 invalid_phone naming no value."""

from __future__ import annotations

import pytest

from core.errors import InvalidPhone
from notify.phone import normalize_phone


@pytest.mark.parametrize(
    ("given", "e164"),
    [
        ("+447700900123", "+447700900123"),
        ("+44 7700 900123", "+447700900123"),
        ("+1 (415) 555-2671", "+14155552671"),
        (" +33 6 12 34 56 78 ", "+33612345678"),
    ],
)
def test_valid_numbers_come_out_in_e164(given: str, e164: str) -> None:
    assert normalize_phone(given) == e164


@pytest.mark.parametrize(
    "given",
    [
        "07700900123",  # national form: no country to guess from
        "+4477009",  # too short for the UK (a local number at most)
        "+1415555267",  # a digit short
        "+999123456789",  # no such country code
        "+",
        "",
        "+44 7700 900123 ext",
        "+1" + "2" * 40,
        None,
        447700900123,
        ["+447700900123"],
    ],
)
def test_everything_else_is_invalid_phone(given: object) -> None:
    with pytest.raises(InvalidPhone) as info:
        normalize_phone(given)
    err = info.value
    assert (err.code, err.status, err.fields) == ("invalid_phone", 422, {"field": "phone"})
    assert err.message == InvalidPhone.default_message  # never the value sent
