"""Phone numbers for texts (PROTOCOL.md §7): checked and normalised with
``phonenumbers`` (Google's libphonenumber rules), never logged. Pure."""

from __future__ import annotations

import phonenumbers

from core.errors import InvalidPhone

#: Longest text accepted before parsing (E.164 is at most 15 digits and a "+").
_MAX_CHARS = 32


def normalize_phone(value: object, field: str = "phone") -> str:
    """``value`` as an E.164 number (``+447700900123``), or :class:`InvalidPhone`.

    The number must be international (start with ``+``): the service has no
    home country to guess from. Spaces, dashes and brackets are allowed on the
    way in and dropped. The number must have a full possible length for its
    country (libphonenumber's ``IS_POSSIBLE``): too short, too long, local-only
    or an unknown country code is refused. Not stricter than that: ranges set
    aside for examples (``+447700900123``, PROTOCOL.md's own) must pass, and
    the provider refuses what cannot be reached (the outbox flags that phone).
    The message never repeats the value.
    """
    if not isinstance(value, str) or not value.strip().startswith("+") or len(value) > _MAX_CHARS:
        raise InvalidPhone(field=field)
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise InvalidPhone(field=field) from None
    possible = phonenumbers.is_possible_number_with_reason(number)
    if possible != phonenumbers.ValidationResult.IS_POSSIBLE:
        raise InvalidPhone(field=field)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
