"""The contract both pool adapters keep (``memory.MemoryPool``, ``redis_store.RedisPool``).

Every mutating method is one atomic step: after it returns, the change it
reports happened exactly once across the whole service; if it raises a
:mod:`dispatch.errors` error, nothing changed. The rules themselves live in
:mod:`pool.rules`; adapters only read, apply and write atomically.

Time is always passed in (``now``, seconds since the epoch) so that tests
drive the clocks.
"""

from __future__ import annotations

from typing import Protocol

from pool.effects import Change
from pool.model import Draft, Hold, PoolStats, Request, Role, Session, TherapistProfile, Timeouts


class PoolStore(Protocol):
    timeouts: Timeouts

    # -- therapist profiles ------------------------------------------------
    async def put_profile(self, profile: TherapistProfile) -> None: ...
    async def get_profile(self, therapist_id: str) -> TherapistProfile | None: ...

    # -- requests ------------------------------------------------------------
    async def create(
        self,
        draft: Draft,
        client_id: str,
        request_id: str,
        now: float,
        idempotency_key: str | None = None,
    ) -> tuple[Request, Change | None]:
        """Create a waiting request. Returns ``(request, change)``.

        With an ``idempotency_key`` already used by this client, returns the
        request first created under it and ``None`` (no new change); the key
        is remembered for 24 hours. Raises ``RequestExists`` if the client
        already has a request waiting or claimed.
        """
        ...

    async def get(self, request_id: str) -> Request | None: ...

    async def position(self, request_id: str) -> int | None:
        """1-based place among waiting requests (oldest first), or None."""
        ...

    async def positions(self, request_ids: list[str]) -> dict[str, int | None]: ...

    async def waiting(self) -> list[Request]:
        """Every waiting request, oldest first."""
        ...

    async def active_request_of(self, client_id: str) -> Request | None:
        """The client's request that is waiting or claimed, if any."""
        ...

    async def claim(self, request_id: str, therapist: TherapistProfile, now: float) -> Change:
        """Raises NotFound, Busy, NotEligible or Taken (rules.claim)."""
        ...

    async def release(self, request_id: str, therapist_id: str, now: float) -> Change: ...
    async def decline(self, request_id: str, client_id: str, now: float) -> Change: ...

    async def accept(self, request_id: str, client_id: str, session_id: str, now: float) -> Change:
        """Match the request; opens session ``session_id`` (state ``ready``),
        which the therapist then holds instead of the claim."""
        ...

    async def cancel(self, request_id: str, client_id: str, now: float) -> Change: ...

    async def fire_due(self, now: float, limit: int = 100) -> list[Change]:
        """Apply every deadline and reconnect grace that is due, each exactly
        once across all servers, and return the changes made."""
        ...

    # -- therapists and sessions -------------------------------------------
    async def hold_of(self, therapist_id: str) -> Hold | None: ...
    async def get_session(self, session_id: str) -> Session | None: ...
    async def open_session_of(self, user_id: str) -> Session | None:
        """The user's session that is ``ready`` or ``live``, if any."""
        ...

    # -- presence ----------------------------------------------------------
    async def connect(
        self, user_id: str, role: Role, conn_id: str, server_id: str, now: float
    ) -> None:
        """Record a live connection; cancels the user's reconnect grace."""
        ...

    async def disconnect(
        self, user_id: str, role: Role, conn_id: str, server_id: str, now: float
    ) -> None:
        """Forget a connection. When it was the user's last one anywhere and
        the user holds a claim or an open session, arms the reconnect grace."""
        ...

    async def set_available(self, therapist_id: str, available: bool) -> bool:
        """Record availability; returns the state now in force."""
        ...

    async def is_available(self, therapist_id: str) -> bool: ...

    async def heartbeat(self, server_id: str, now: float) -> bool:
        """Mark a server alive. False when the pool did not know it as alive:
        its first beat, or it was reaped meanwhile (its connections were
        dropped, so it must register them again)."""
        ...

    async def reap_servers(self, now: float, dead_after_s: float) -> list[str]:
        """Treat every connection of a server silent for ``dead_after_s`` as
        disconnected (arming graces as above); returns the reaped server ids."""
        ...

    # -- operators ---------------------------------------------------------
    async def stats(self, now: float) -> PoolStats: ...

    async def ping(self) -> None:
        """Raises ``Unavailable`` when the backing store does not answer."""
        ...

    async def aclose(self) -> None: ...
