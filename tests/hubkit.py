"""What the hub's unit tests build on (tests/test_offer_rule.py,
tests/test_referral_rule.py, tests/test_qc_guard.py): a therapist's profile and
a request it qualifies for, a clock a test sets, therapists' consoles (a
:class:`dispatch.hub.Conn` with no socket: its frames stay in its queue, read
with :func:`sent`) and a hub holding them.

Imported by name (``from hubkit import console``), as ``conftest`` is: tests/
is on the path of the suite.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from core.identity import Role, User
from core.wire import JSON_CODEC
from dispatch.guard import GuardedIds
from dispatch.hub import Conn, Hub, KnownTherapists
from dispatch.metrics import Metrics
from pool.model import Draft, TherapistProfile
from pool.store import PoolStore

T0 = 1_780_000_000.0
#: A request every :func:`profile` (left as it is) qualifies for.
DRAFT = Draft(region="GB", language="en", topics=("anxiety",))


def profile(tid: str, **changes: Any) -> TherapistProfile:
    fields: dict[str, Any] = {
        "name": "Dr " + tid,
        "regions": ("GB",),
        "languages": ("en",),
        "topics": ("anxiety",),
    }
    fields.update(changes)
    return TherapistProfile(id=tid, **fields)


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _no_close(code: int, reason: str) -> None:
    return None


def console(tid: str) -> Conn:
    """An available therapist's console, with :func:`profile`."""
    return Conn(
        id="conn-" + tid,
        user=User(tid, Role.THERAPIST),
        codec=JSON_CODEC,
        queue_size=100,
        closer=_no_close,
        profile=profile(tid),
        available=True,
    )


def client_conn(cid: str, conn_id: str | None = None) -> Conn:
    """A client's connection (no request yet)."""
    return Conn(
        id=conn_id or "conn-" + cid,
        user=User(cid, Role.CLIENT),
        codec=JSON_CODEC,
        queue_size=100,
        closer=_no_close,
    )


class Calls:
    """How many times an async method replaced by :func:`count_calls` was called."""

    n = 0


def count_calls(obj: Any, name: str) -> Calls:
    """Replace ``obj``'s async method ``name`` (on that object only) by one
    that counts its calls and awaits the real one."""
    real = getattr(obj, name)
    calls = Calls()

    async def counting(*args: Any, **kwargs: Any) -> Any:
        calls.n += 1
        return await real(*args, **kwargs)

    setattr(obj, name, counting)
    return calls


def sent(conn: Conn) -> list[dict[str, Any]]:
    """The frames sent to ``conn`` since last asked, oldest first."""
    out: list[dict[str, Any]] = []
    while conn.pending:  # no socket: what it is sent stays pending
        item = conn.pending.popleft()
        assert isinstance(item, str)
        out.append(json.loads(item))
    return out


def hub_with(
    store: PoolStore,
    *tids: str,
    clock: Callable[[], float] = lambda: T0,
    guarded: GuardedIds | None = None,
    known_to: KnownTherapists | None = None,
) -> tuple[Hub, list[Conn]]:
    """A hub on ``store`` holding a :func:`console` of each of ``tids`` (in order)."""
    hub = Hub(store, Metrics(), None, guarded, clock, known_to=known_to)
    consoles = [console(tid) for tid in tids]
    for conn in consoles:
        hub.add(conn)
    return hub, consoles
