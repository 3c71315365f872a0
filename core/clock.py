"""Time: the clock type every component takes, and the protocol's time format.

Components take a ``Clock`` (seconds since the epoch, as ``time.time``) rather
than reading the time themselves, so tests can drive it.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable

#: Seconds since the epoch, like :func:`time.time`.
Clock = Callable[[], float]


def rfc3339(ts: float) -> str:
    """UTC, millisecond precision, ``Z`` suffix: every time in the protocol."""
    dt = _dt.datetime.fromtimestamp(ts, tz=_dt.UTC)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")
