"""Demo data for ``dispatch serve --demo``: a few therapists and the ids of
demo clients and an operator, so that a newcomer can try the service at once.

The therapists differ on purpose (regions, languages, topics, minors) so that
eligibility can be seen at work: a request from ``US-CA`` in Spanish reaches
one of them only.
"""

from __future__ import annotations

import time
from typing import Final
from urllib.parse import quote

from care.forms import FormStore, check_answers, form_named
from pool.model import TherapistProfile
from pool.store import PoolStore
from schedule.model import parse_availability
from schedule.store import Bookings
from wallet.ledger import Ledger


def _avatar(initials: str, colour: str) -> str:
    """A tiny inline SVG portrait, so that the demo needs no image host."""
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="96" height="96">'
        f'<rect width="96" height="96" rx="48" fill="{colour}"/>'
        '<text x="48" y="60" font-size="36" text-anchor="middle" fill="#fff" '
        f'font-family="sans-serif">{initials}</text></svg>'
    )
    return "data:image/svg+xml," + quote(svg)


DEMO_THERAPISTS: Final[tuple[TherapistProfile, ...]] = (
    TherapistProfile(
        id="demo-therapist-1",
        name="Dr Amara Okafor",
        bio="Counselling psychologist; CBT for anxiety and low mood.",
        photo_url=_avatar("AO", "#3b7a57"),
        regions=("GB-ENG", "GB-WLS"),
        languages=("en",),
        topics=("anxiety", "depression", "stress"),
        works_with_minors=False,
    ),
    TherapistProfile(
        id="demo-therapist-2",
        name="Sam Whitfield",
        bio="Family and adolescent therapist; works with young people and their parents.",
        photo_url=_avatar("SW", "#5b5ea6"),
        regions=("GB-ENG", "GB-SCT"),
        languages=("en",),
        topics=("family", "anxiety", "school"),
        works_with_minors=True,
    ),
    TherapistProfile(
        id="demo-therapist-3",
        name="Lucía Herrera, LMFT",
        bio="Marriage and family therapist; sessions in English or Spanish.",
        photo_url=_avatar("LH", "#c0504d"),
        regions=("US-CA",),
        languages=("en", "es"),
        topics=("couples", "grief", "family"),
        works_with_minors=False,
    ),
    TherapistProfile(
        id="demo-therapist-4",
        name="Jonas Becker",
        bio="Trauma-informed psychotherapist; EMDR; sessions in German or English.",
        photo_url=_avatar("JB", "#2f6f8f"),
        regions=("DE", "GB-ENG"),
        languages=("de", "en"),
        topics=("trauma", "stress", "sleep"),
        works_with_minors=False,
    ),
    TherapistProfile(
        id="demo-therapist-5",
        name="Priya Raman, PsyD",
        bio="Clinical psychologist; addiction and recovery, LGBTQ+ affirming.",
        photo_url="",
        regions=("US-CA", "US-NY"),
        languages=("en", "ta"),
        topics=("addiction", "identity", "anxiety"),
        works_with_minors=False,
    ),
)

DEMO_CLIENTS: Final[tuple[str, ...]] = ("demo-client-1", "demo-client-2", "demo-client-3")
DEMO_OPERATOR: Final = "demo-operator"


#: What each demo client's wallet is topped up with (once: the reference is fixed).
DEMO_TOPUP_MINOR = 10_000


#: Each demo therapist's zone (PROTOCOL.md §8): its weekday hours are wall clock there.
DEMO_ZONES: Final = {
    "demo-therapist-1": "Europe/London",
    "demo-therapist-2": "Europe/London",
    "demo-therapist-3": "America/Los_Angeles",
    "demo-therapist-4": "Europe/Berlin",
    "demo-therapist-5": "America/New_York",
}


#: What each demo client has answered on its care forms (made-up details).
DEMO_FORM_ANSWERS: Final[dict[str, dict[str, object]]] = {
    "intake": {
        "reason": "Demo client: stress at work and trouble sleeping.",
        "emergency_contact_name": "Demo Contact",
        "emergency_contact_phone": "+44 7700 900000",
    },
    "consent": {"agree_therapy": True, "agree_privacy": True},
    "billing": {
        "billing_name": "Demo Client",
        "address_line1": "1 Example Street",
        "city": "London",
        "postcode": "N1 1AA",
        "country": "GB",
    },
}


def demo_availability(therapist_id: str) -> dict[str, object]:
    """Weekdays 09:00-12:00 and 13:00-17:00 in the therapist's zone."""
    weekly = [
        {"day": day, "start": start, "end": end}
        for day in ("mon", "tue", "wed", "thu", "fri")
        for start, end in (("09:00", "12:00"), ("13:00", "17:00"))
    ]
    return {"timezone": DEMO_ZONES[therapist_id], "weekly": weekly, "overrides": []}


async def seed(
    store: PoolStore,
    ledger: Ledger | None = None,
    now: float | None = None,
    bookings: Bookings | None = None,
    forms: FormStore | None = None,
) -> None:
    """Put every demo therapist into ``store`` (replacing any earlier copy),
    with a ``ledger`` fund each demo client's wallet once, with
    ``bookings`` give each demo therapist weekday hours (replacing them), and
    with ``forms`` fill each demo client's care forms it has not filled (so
    a demo client may book a session at once, PROTOCOL.md §10)."""
    for profile in DEMO_THERAPISTS:
        await store.put_profile(profile)
    at = time.time() if now is None else now
    if bookings is not None:
        for profile in DEMO_THERAPISTS:
            av = parse_availability(demo_availability(profile.id))
            await bookings.put_availability(profile.id, av, at)
    if forms is not None:
        for client_id in DEMO_CLIENTS:
            done = await forms.stored(client_id)
            for name, answers in DEMO_FORM_ANSWERS.items():
                if name not in done:
                    form = form_named(name)
                    await forms.put(client_id, form, check_answers(form, answers), at)
    if ledger is None:
        return
    for client_id in DEMO_CLIENTS:
        await ledger.topup(client_id, DEMO_TOPUP_MINOR, f"demo-topup-{client_id}", at)
