"""Who gets a text about a waiting request, and when (PROTOCOL.md §7). Pure: no I/O.

A text goes to a therapist who is not looking: nobody sees a request unseen
for long. :func:`recipients` is the whole decision for one request at one
moment; the outbox that sends what it decides, exactly once, is built on it.
A therapist gets a text when the request has waited ``delay_s`` and the
therapist

- may see it (the pool's rule, :func:`pool.rules.may_see`: qualified, not declined) and is not
  paused for a client it has never seen (``accepting_new_clients``), nor guarded near a
  booked session of its own (:func:`pool.rules.guarded`, PROTOCOL.md §8), nor kept off
  by another's referral head start (:func:`pool.rules.eligible_during_head_start`, §10),
  nor left out of an offer to a few at a time (:func:`pool.rules.offered_to`,
  ``DISPATCH_OFFER_FANOUT``: an away therapist is texted once the offer is open to all),
- has a phone (not flagged after a refused send) and opted in,
- holds no claim or open session, and has no available console connected
  (that one sees the request live),
- is outside its quiet hours, in its own time zone (across midnight and DST),
- was not texted in the last ``cooldown_s``, and was not texted about this
  request already;

at most ``max_per_request`` texts a request, those longest since their last
text first (never texted: first of all), then by id so the order is total.
"""

from __future__ import annotations

import datetime as _dt
import re
import zoneinfo
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Final

from pool.model import Request, State, TherapistProfile
from pool.rules import eligible_during_head_start, may_see, offered_to

_HHMM: Final = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
QUIET_HOURS_RULE: Final = '"HH:MM-HH:MM" (24-hour clock, start and end differ; may cross midnight)'


def text_body(public_url: str) -> str:
    """The one text there is: no client detail, a link to the console."""
    return (
        f"Someone is waiting on quick connect. Open your console: {public_url.rstrip('/')}/console"
    )


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily stretch of local time with no texts: ``start`` up to (not
    including) ``end``, in minutes after midnight; ``end < start`` crosses
    midnight (``22:00-07:00``)."""

    start: int
    end: int

    @classmethod
    def parse(cls, text: str) -> QuietHours:
        """``"HH:MM-HH:MM"``; ``ValueError`` naming the rule otherwise."""
        parts = text.split("-") if isinstance(text, str) else []
        if len(parts) != 2:
            raise ValueError(f"quiet_hours must be {QUIET_HOURS_RULE}")
        minutes = []
        for part in parts:
            m = _HHMM.fullmatch(part)
            if m is None:
                raise ValueError(f"quiet_hours must be {QUIET_HOURS_RULE}")
            minutes.append(int(m.group(1)) * 60 + int(m.group(2)))
        if minutes[0] == minutes[1]:
            raise ValueError(f"quiet_hours must be {QUIET_HOURS_RULE}")
        return cls(minutes[0], minutes[1])

    def __str__(self) -> str:
        return (
            f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"
        )

    def covers(self, minute: int) -> bool:
        """Whether local minute-of-day ``minute`` (0..1439) is quiet."""
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


def check_timezone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA zone ``name``; ``ValueError`` when there is no such zone."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError("timezone must be an IANA time zone name such as Europe/London") from None


def is_quiet(quiet: QuietHours | None, timezone: str, now: float) -> bool:
    """Whether ``now`` falls in ``quiet`` on the wall clock of ``timezone``
    (DST included: the local time is what the therapist's clock shows)."""
    if quiet is None:
        return False
    local = _dt.datetime.fromtimestamp(now, tz=check_timezone(timezone))
    return quiet.covers(local.hour * 60 + local.minute)


@dataclass(frozen=True, slots=True)
class TextContact:
    """What the outbox knows of a therapist for texts."""

    therapist_id: str
    phone: str | None = None
    sms_opt_in: bool = False
    timezone: str = "UTC"
    quiet_hours: QuietHours | None = None
    #: When it was last texted (about any request), if ever.
    last_texted_at: float | None = None
    #: Its phone was refused by the provider (a 4xx): no more texts until changed.
    phone_failed: bool = False


@dataclass(frozen=True, slots=True)
class Candidate:
    """One therapist as the decision sees it at ``now``."""

    profile: TherapistProfile
    contact: TextContact
    #: Holds a claim or an open session.
    busy: bool = False
    #: Has an available console connected (it sees the request live).
    watching: bool = False
    #: Not accepting new clients, and this client is new to it.
    paused_for_client: bool = False
    #: A booked session of its own starts soon (:func:`pool.rules.guarded`).
    guarded: bool = False


def due_at(request: Request, delay_s: float) -> float:
    """When texts about ``request`` may go out."""
    return request.created_at + delay_s


def recipients(
    request: Request,
    candidates: Iterable[Candidate],
    now: float,
    *,
    delay_s: float,
    cooldown_s: float,
    max_per_request: int,
    already: Collection[str] = (),
) -> list[str]:
    """The therapists to text about ``request`` now, in sending order (module
    docstring). ``already``: therapists texted about it before (they count
    against ``max_per_request`` and are never texted twice). Empty when the
    request is no longer waiting or has not waited ``delay_s`` yet."""
    if request.state is not State.WAITING or now < due_at(request, delay_s):
        return []
    room = max_per_request - len(already)
    if room <= 0:
        return []
    chosen = [c.contact for c in candidates if _wants_text(c, request, now, cooldown_s, already)]
    # Longest since the last text first; never texted before anyone; then by id.
    chosen.sort(
        key=lambda c: (
            c.last_texted_at is not None,
            c.last_texted_at or 0.0,
            c.therapist_id,
        )
    )
    return [c.therapist_id for c in chosen[:room]]


def _wants_text(
    c: Candidate, request: Request, now: float, cooldown_s: float, already: Collection[str]
) -> bool:
    contact = c.contact
    if contact.therapist_id in already or contact.therapist_id != c.profile.id:
        return False
    if not may_see(c.profile, request) or c.paused_for_client or c.guarded:
        return False
    if not eligible_during_head_start(request, c.profile.id, now):
        return False
    if not offered_to(request, c.profile.id):
        return False
    if not contact.phone or contact.phone_failed or not contact.sms_opt_in:
        return False
    if c.busy or c.watching:
        return False
    if contact.last_texted_at is not None and now - contact.last_texted_at < cooldown_s:
        return False
    return not is_quiet(contact.quiet_hours, contact.timezone, now)
