"""The ICE servers a session hands to both browsers (PROTOCOL.md §5, ``S.ice_servers``).

Two providers answer :meth:`IceProvider.ice_servers` with a list of
RTCIceServer dicts (``urls``, and for TURN ``username`` and ``credential``):

* :class:`StaticIce`: STUN/TURN servers from configuration, as configured.
* :class:`TwilioIce`: short-lived TURN credentials minted by Twilio's Network
  Traversal Service (``POST /2010-04-01/Accounts/{sid}/Tokens.json``), cached
  until ``refresh_margin_s`` before they expire.

Contract of ``ice_servers()`` for both: it never raises. A call must be able to
start over STUN and host candidates even when Twilio is down, so a failed mint
degrades to the last credentials that have not expired yet, else to the
configured static list (``fallback``).

Why a thread and not twilio's async client: twilio-python's ``Client`` is
synchronous unless it is given ``twilio.http.async_http_client.
AsyncTwilioHttpClient`` and called through ``create_async``. That client opens
an aiohttp ``ClientSession`` in its constructor (so it cannot be built outside a
running loop), must be closed explicitly (twilio-python #866: "Unclosed client
session" otherwise) and ignores its own ``timeout`` argument on requests. A
mint happens at most once per TTL, so running the synchronous client in a
worker thread (:func:`asyncio.to_thread`) costs nothing and needs no lifecycle.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final, Protocol

import twilio.rest
from twilio.http import HttpClient
from twilio.http.http_client import TwilioHttpClient

from core.logs import get_logger

IceServer = dict[str, Any]

#: Seconds before expiry at which cached Twilio credentials are replaced.
DEFAULT_REFRESH_MARGIN_S: Final = 300.0
#: Seconds one mint may take (HTTP timeout, and the bound on the worker thread).
DEFAULT_TIMEOUT_S: Final = 10.0
#: Seconds after a failed mint during which no new mint is tried.
DEFAULT_RETRY_AFTER_S: Final = 30.0
#: How far ``date_created`` may pull a token's expiry before our own estimate.
MAX_CLOCK_SKEW_S: Final = 60.0

log = get_logger(component="ice")


class IceProvider(Protocol):
    async def ice_servers(self) -> list[IceServer]:
        """The RTCIceServer list for a session about to start; never raises."""
        ...


def _check_server(entry: object) -> IceServer:
    if not isinstance(entry, Mapping):
        raise ValueError("an ICE server must be an object with 'urls'")
    urls = entry.get("urls")
    if isinstance(urls, str) and urls:
        pass
    elif not (isinstance(urls, list) and urls and all(isinstance(u, str) and u for u in urls)):
        raise ValueError("an ICE server's 'urls' must be a URL or a non-empty list of URLs")
    for key in ("username", "credential"):
        if key in entry and not isinstance(entry[key], str):
            raise ValueError(f"an ICE server's {key!r} must be a string")
    return dict(entry)


class StaticIce:
    """The configured list, as configured (checked once, here)."""

    def __init__(self, servers: list[IceServer]) -> None:
        self._servers = [_check_server(s) for s in servers]

    async def ice_servers(self) -> list[IceServer]:
        # A copy, so that a caller that edits its session never edits ours.
        return copy.deepcopy(self._servers)


def _normalise(entry: object) -> IceServer | None:
    """One of Twilio's ``ice_servers`` entries in the browser's RTCIceServer
    shape, or None when it has no usable URL. Twilio sends both the deprecated
    ``url`` and ``urls``; browsers want ``urls`` (Firefox warns on ``url``)."""
    if not isinstance(entry, Mapping):
        return None
    urls = entry.get("urls", entry.get("url"))
    if isinstance(urls, list):
        urls = [u for u in urls if isinstance(u, str) and u]
    if not urls or not isinstance(urls, str | list):
        return None
    server: IceServer = {"urls": urls}
    for key in ("username", "credential"):
        value = entry.get(key)
        if isinstance(value, str):
            server[key] = value
    return server


def _ttl_of(raw: object, default: int) -> int:
    # Twilio's JSON carries ttl as a string ("86400").
    try:
        ttl = int(str(raw))
    except ValueError:
        return default
    return ttl if ttl > 0 else default


class TwilioIce:
    """Short-lived TURN credentials from Twilio's Network Traversal Service.

    ``ice_servers()`` returns the cached list while ``clock()`` is more than
    ``refresh_margin_s`` before its expiry; otherwise it mints a new token
    (``client.tokens.create(ttl=ttl_s)``) in a worker thread. Concurrent callers
    share one mint (an :class:`asyncio.Lock`; whoever waited on a mint takes
    its outcome rather than trying again).

    The expiry is the token's ``date_created`` + its ``ttl`` (else the ``ttl``
    asked for), read on our clock within :data:`MAX_CLOCK_SKEW_S` of "the time
    the mint began + ``ttl``": never later (a Twilio clock ahead of ours must not
    stretch the cache), and never much earlier (a token is created when we ask,
    so a ``date_created`` far behind our clock is clock skew, and trusting it
    would mint on every call once the skew passes ``ttl - refresh_margin_s``).

    On a failed mint (network, timeout, 4xx/5xx, an unreadable body) it logs a
    warning naming only the kind of failure, returns the cached list if it has
    not expired yet, else ``fallback``, and tries Twilio again no sooner than
    ``retry_after_s`` later, so that an outage does not delay every call start
    by ``timeout_s``. It never raises.

    ``http_client`` replaces the library's HTTP transport (tests inject a fake:
    twilio-python has no base-URL setting). The default is a
    ``TwilioHttpClient`` with ``timeout_s`` and a logger that stays quiet below
    WARNING (at INFO it logs each request's URL, which names the account).
    """

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        ttl_s: int = 3600,
        *,
        http_client: HttpClient | None = None,
        refresh_margin_s: float = DEFAULT_REFRESH_MARGIN_S,
        clock: Callable[[], float] = time.time,
        fallback: list[IceServer] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry_after_s: float = DEFAULT_RETRY_AFTER_S,
    ) -> None:
        if not account_sid or not auth_token:
            raise ValueError("a Twilio account SID and auth token are both required")
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        if not 0 <= refresh_margin_s < ttl_s:
            raise ValueError("refresh_margin_s must be at least 0 and less than ttl_s")
        if timeout_s <= 0 or retry_after_s < 0:
            raise ValueError("timeout_s must be positive and retry_after_s not negative")
        if http_client is None:
            quiet = logging.getLogger("signaling.ice.twilio_http")
            quiet.setLevel(logging.WARNING)
            http_client = TwilioHttpClient(timeout=timeout_s, logger=quiet)
        self._client = twilio.rest.Client(account_sid, auth_token, http_client=http_client)
        self._ttl_s = ttl_s
        self._margin_s = refresh_margin_s
        self._clock = clock
        self._fallback = StaticIce(fallback or [])
        self._timeout_s = timeout_s
        self._retry_after_s = retry_after_s
        self._lock = asyncio.Lock()
        self._cached: list[IceServer] | None = None
        self._expires_at = -math.inf
        self._failed_at = -math.inf
        self._attempts = 0

    def __repr__(self) -> str:
        return f"TwilioIce(ttl_s={self._ttl_s})"

    async def ice_servers(self) -> list[IceServer]:
        if self._fresh():
            return self._copy()
        seen = self._attempts
        async with self._lock:
            if self._fresh():
                return self._copy()
            # Someone minted (or failed to) while we waited, or one failed a
            # moment ago: take that outcome instead of asking Twilio again.
            if self._attempts != seen or self._clock() < self._failed_at + self._retry_after_s:
                return (await self._degraded())[0]
            return await self._refresh()

    def _fresh(self) -> bool:
        return self._cached is not None and self._clock() < self._expires_at - self._margin_s

    def _copy(self) -> list[IceServer]:
        return copy.deepcopy(self._cached or [])

    async def _degraded(self) -> tuple[list[IceServer], str]:
        """What to serve without Twilio, and which of the two it is."""
        if self._cached is not None and self._clock() < self._expires_at:
            return self._copy(), "cached"
        return await self._fallback.ice_servers(), "fallback"

    async def _refresh(self) -> list[IceServer]:
        started = self._clock()
        try:
            token = await asyncio.wait_for(asyncio.to_thread(self._mint), self._timeout_s)
            servers = [s for s in map(_normalise, token.ice_servers or []) if s is not None]
            if not servers:
                raise ValueError("the token carries no ICE servers")
            ttl = _ttl_of(token.ttl, self._ttl_s)
            expires_at = started + ttl
            created = token.date_created
            if isinstance(created, datetime):
                skew = min(max(started - created.timestamp(), 0.0), MAX_CLOCK_SKEW_S)
                expires_at -= skew
        except Exception as exc:  # never raise: the call must still start
            self._failed_at = self._clock()
            self._attempts += 1
            degraded, serving = await self._degraded()
            # The exception's text names the request URL (the account), and a
            # transport error may echo more: log only what kind of failure it was.
            log.warning(
                "ice.twilio_failed",
                error=type(exc).__name__,
                status=getattr(exc, "status", None),
                twilio_code=getattr(exc, "code", None),
                serving=serving,
                servers=len(degraded),
            )
            return degraded
        self._cached, self._expires_at = servers, expires_at
        self._attempts += 1
        log.info(
            "ice.twilio_minted", servers=len(servers), expires_in_s=round(expires_at - started)
        )
        return self._copy()

    def _mint(self) -> Any:
        """Runs in a worker thread: twilio-python's client blocks."""
        return self._client.tokens.create(ttl=self._ttl_s)


def make_provider(
    static: list[IceServer],
    account_sid: str | None,
    auth_token: str | None,
    ttl_s: int,
) -> IceProvider:
    """Twilio when both its account SID and auth token are set (with ``static``
    as the fallback), else the static list. One of the two alone is a
    configuration mistake and raises :class:`ValueError` (naming neither value)."""
    if account_sid and auth_token:
        return TwilioIce(
            account_sid,
            auth_token,
            ttl_s,
            refresh_margin_s=min(DEFAULT_REFRESH_MARGIN_S, ttl_s / 2),
            fallback=static,
        )
    if account_sid or auth_token:
        raise ValueError("set both the Twilio account SID and auth token, or neither")
    return StaticIce(static)
