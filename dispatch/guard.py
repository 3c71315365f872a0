"""The quick-connect guard near a booked session (PROTOCOL.md §8,
``DISPATCH_QC_GUARD_MIN``): which therapists get no quick-connect work now.

The rule is the pool's (:func:`pool.rules.guarded`, :func:`pool.rules.guard_window`);
the bookings are the schedule's. :class:`Guard` asks its source for the
therapists with a scheduled booking starting inside the guard window and keeps
the answer ``ttl_s`` seconds, so the hub, a claim and a round of texts share one
query instead of one each. The hub, :class:`dispatch.service.Dispatcher` and
:class:`notify.rounds.TextRounds` get :meth:`Guard.ids` injected and apply it
exactly where they apply :func:`pool.rules.paused_for`; the loops refresh it
and give a console whose guard started or ended a fresh ``pool.snapshot``.

A guard that lags by up to ``ttl_s`` is harmless: it starts ``guard_min``
minutes before the booking, and a booked call opens only for a therapist who
holds nothing else (the pool's busy rule).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

from core.logs import get_logger
from pool import rules

log = get_logger(component="guard")

#: ``(starts_from, starts_to) -> therapist ids`` with a scheduled booking
#: starting in that closed range (epoch seconds): ``Bookings.next_start``.
GuardSource = Callable[[float, float], Awaitable[set[str]]]
#: ``now -> the therapist ids guarded at now``: what the hub, the dispatcher
#: and the texts are given.
GuardedIds = Callable[[float], Awaitable[set[str]]]

#: How long one answer of the source is used.
GUARD_TTL_S: Final = 5.0


class Guard:
    """The guarded therapists, cached. Without a ``source`` nobody is guarded
    (no bookings wired in)."""

    def __init__(
        self,
        source: GuardSource | None = None,
        *,
        guard_min: float = 30.0,
        late_min: float = 0.0,
        ttl_s: float = GUARD_TTL_S,
    ) -> None:
        self.source = source
        self.guard_min = guard_min
        #: How long after its start a booking still guards (its call may be
        #: under way or still awaited); once the booking is no longer
        #: scheduled (its call ended, it was marked or cancelled) it stops.
        self.late_min = late_min
        self.ttl_s = ttl_s
        self._ids: frozenset[str] = frozenset()
        self._until = float("-inf")
        self._lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return self.source is not None

    def current(self) -> frozenset[str]:
        """The last answer, without asking (empty before the first)."""
        return self._ids

    async def ids(self, now: float) -> set[str]:
        """The therapists guarded at ``now`` (a cached answer up to ``ttl_s`` old)."""
        if self.source is None:
            return set()
        if now < self._until:
            return set(self._ids)
        async with self._lock:  # one query at a time; the others use its answer
            if now >= self._until:
                await self._ask(now)
            return set(self._ids)

    async def refresh(self, now: float) -> tuple[set[str], set[str]]:
        """Ask the source now; returns ``(newly guarded, no longer guarded)``."""
        if self.source is None:
            return set(), set()
        async with self._lock:
            before = self._ids
            await self._ask(now)
            return set(self._ids - before), set(before - self._ids)

    async def _ask(self, now: float) -> None:
        assert self.source is not None
        lo, hi = rules.guard_window(now, self.guard_min, self.late_min)
        self._ids = frozenset(await self.source(lo, hi))
        self._until = now + self.ttl_s
