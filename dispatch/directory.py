"""The directory of therapists (an addition to PROTOCOL.md §8): who fits a
client's region, language and topics, ranked by fit. The ranking is pure.

``GET /v1/therapists?region=&language=&topics=a,b[&limit=N]`` (any signed-in
user): therapists who may be booked (their availability is set) and who
fit: licensed in ``region``, speaking ``language``, sharing at least one of
``topics`` (each filter only when given; as the pool's
:func:`pool.rules.may_take` reads a request). Ranked by topics shared (most
first), then those accepting new clients, then the earliest open session
slot in the next 14 days (none: last), then name and id. At most ``limit``
(1..50, default 50); each entry is the public profile plus ``timezone``,
``next_slot`` (RFC 3339 or null), ``session_price_minor`` (the price a
booked session costs with it: its own, else ``DISPATCH_SESSION_PRICE_MINOR``)
and ``topics_shared``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from core.errors import InvalidField
from dispatch.validation import (
    LANGUAGE_MAX,
    LANGUAGE_RE,
    REGION_MAX,
    REGION_RE,
    TOPIC_MAX,
    TOPIC_RE,
)
from pool.model import TherapistProfile

#: The most therapists one answer lists.
LIMIT_MAX: Final = 50
#: The most topics one query may name.
TOPICS_MAX: Final = 10
#: How far ahead the directory looks for each therapist's next open slot.
HORIZON_DAYS: Final = 14


@dataclass(frozen=True, slots=True)
class Wanted:
    """A client's query; ``None`` / empty: no filter on that."""

    region: str | None = None
    language: str | None = None
    topics: tuple[str, ...] = ()
    limit: int = LIMIT_MAX


def _one(params: Mapping[str, str], name: str, pattern: re.Pattern[str], n: int) -> str | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > n or not pattern.fullmatch(raw):
        raise InvalidField(f"{name} is not a valid {name}", field=name)
    return raw


def parse_query(params: Mapping[str, str]) -> Wanted:
    region = _one(params, "region", REGION_RE, REGION_MAX)
    language = _one(params, "language", LANGUAGE_RE, LANGUAGE_MAX)
    topics: tuple[str, ...] = ()
    raw = params.get("topics")
    if raw:
        items = [t.strip() for t in raw.split(",") if t.strip()]
        if len(items) > TOPICS_MAX:
            raise InvalidField(f"topics may name at most {TOPICS_MAX}", field="topics")
        for item in items:
            if len(item) > TOPIC_MAX or not TOPIC_RE.fullmatch(item):
                raise InvalidField(
                    "topics must be a comma-separated list of topics", field="topics"
                )
        topics = tuple(dict.fromkeys(items))
    limit = LIMIT_MAX
    raw_limit = params.get("limit")
    if raw_limit is not None:
        if not raw_limit.isascii() or not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 50:
            raise InvalidField(f"limit must be a whole number 1..{LIMIT_MAX}", field="limit")
        limit = int(raw_limit)
    return Wanted(region, language, topics, limit)


def fits(profile: TherapistProfile, wanted: Wanted) -> bool:
    """Whether ``profile`` passes every filter ``wanted`` sets."""
    if wanted.region is not None and wanted.region not in profile.regions:
        return False
    if wanted.language is not None and wanted.language not in profile.languages:
        return False
    return not (wanted.topics and not set(wanted.topics) & set(profile.topics))


def shared(profile: TherapistProfile, wanted: Wanted) -> int:
    return len(set(wanted.topics) & set(profile.topics))


def pre_rank(profile: TherapistProfile, wanted: Wanted) -> tuple[int, int]:
    """The part of the rank known without the calendar (a smaller key is a better fit)."""
    return (-shared(profile, wanted), 0 if profile.accepting_new_clients else 1)


def rank(
    found: Sequence[tuple[TherapistProfile, float | None]], wanted: Wanted
) -> list[tuple[TherapistProfile, float | None]]:
    """``(profile, next open slot)`` pairs, best fit first, at most ``wanted.limit``."""

    def key(item: tuple[TherapistProfile, float | None]) -> tuple[int, int, float, str, str]:
        profile, next_slot = item
        return (
            *pre_rank(profile, wanted),
            math.inf if next_slot is None else next_slot,
            profile.name.casefold(),
            profile.id,
        )

    return sorted(found, key=key)[: wanted.limit]
