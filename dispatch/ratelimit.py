"""Rate limits as token buckets. Pure: the caller passes the time in.

A :class:`TokenBucket` holds up to ``burst`` tokens and gains ``rate_per_s``
tokens a second; each allowed action spends its cost. Over any stretch of
time it therefore allows at most ``burst + rate_per_s * elapsed`` worth of
cost. Use one per websocket connection (frames) and a :class:`KeyedLimiter`
for HTTP calls per user.

Times are any monotonic clock in seconds (``time.monotonic()``). A clock that
goes backwards refills nothing and does not rewind the bucket.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable


class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate_per_s``; starts full."""

    __slots__ = ("_last", "_tokens", "burst", "rate_per_s")

    def __init__(self, rate_per_s: float, burst: int) -> None:
        if not (math.isfinite(rate_per_s) and rate_per_s >= 0):
            raise ValueError("rate_per_s must be a finite number >= 0")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate_per_s = float(rate_per_s)
        self.burst = burst
        self._tokens = float(burst)
        self._last: float | None = None

    def _refill(self, now: float) -> None:
        if self._last is None:
            self._last = now
        elif now > self._last:
            self._tokens = min(
                float(self.burst), self._tokens + (now - self._last) * self.rate_per_s
            )
            self._last = now

    def tokens(self, now: float) -> float:
        """The tokens available at ``now``."""
        self._refill(now)
        return self._tokens

    def allow(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if there are that many; a refusal spends nothing."""
        if cost < 0:
            raise ValueError("cost must be >= 0")
        self._refill(now)
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False

    def retry_after(self, now: float, cost: float = 1.0) -> float:
        """Seconds from ``now`` until ``allow(cost)`` would succeed: 0 if it would now.

        ``math.inf`` when it never can (``cost > burst``, or a rate of 0 and too
        few tokens). For a ``Retry-After`` header, round up.
        """
        self._refill(now)
        missing = cost - self._tokens
        if missing <= 0:
            return 0.0
        if cost > self.burst or self.rate_per_s == 0:
            return math.inf
        return missing / self.rate_per_s


class KeyedLimiter:
    """One :class:`TokenBucket` per key (a user id), the ``max_keys`` most recent kept.

    Evicting the least recently used key forgets its bucket: it comes back
    full. That errs on the side of letting a user through, and only happens
    when more than ``max_keys`` users are active within the window.
    """

    __slots__ = ("_buckets", "burst", "max_keys", "rate_per_s")

    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        TokenBucket(rate_per_s, burst)  # validates the arguments now, not at first use
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._buckets

    def _bucket(self, key: Hashable) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate_per_s, self.burst)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket

    def allow(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` from ``key``'s bucket if it has that many tokens."""
        return self._bucket(key).allow(now, cost)

    def retry_after(self, key: Hashable, now: float, cost: float = 1.0) -> float:
        """Seconds until ``allow(key, ...)`` would succeed (see :meth:`TokenBucket.retry_after`)."""
        bucket = self._buckets.get(key)
        return 0.0 if bucket is None else bucket.retry_after(now, cost)
