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

from pool.model import TherapistProfile
from pool.store import PoolStore
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


async def seed(store: PoolStore, ledger: Ledger | None = None, now: float | None = None) -> None:
    """Put every demo therapist into ``store`` (replacing any earlier copy)
    and, with a ``ledger``, fund each demo client's wallet once."""
    for profile in DEMO_THERAPISTS:
        await store.put_profile(profile)
    if ledger is None:
        return
    at = time.time() if now is None else now
    for client_id in DEMO_CLIENTS:
        await ledger.topup(client_id, DEMO_TOPUP_MINOR, f"demo-topup-{client_id}", at)
