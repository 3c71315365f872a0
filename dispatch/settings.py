"""The service's settings: one frozen :class:`Settings`, loaded by :func:`load_settings`.

Every field ``foo`` comes from the environment variable ``DISPATCH_FOO``
(PROTOCOL.md §1 names the important ones); a command-line flag, passed in as an
override, wins over the environment, which wins over the default. An empty
variable counts as unset, so ``DISPATCH_REDIS_URL=`` means "no Redis".

Two values are secrets and have no default: ``secret`` (the HS256 key of the
tokens) and ``data_key`` (the Fernet key that encrypts chat and notes at rest).
Without them the service refuses to start, unless ``dev`` is set, in which case
a random secret is made and a data key derived from it for that run.

``data_key`` may list several Fernet keys separated by commas: the first
encrypts, every one of them decrypts. That is how keys rotate: put the new key
first, run ``dispatch keys rotate``, then drop the old one
(:class:`signaling.crypto.Cipher`).

``twilio_account_sid`` and ``twilio_auth_token`` (for TURN credentials) are set
together or not at all.

``stripe_secret_key`` and ``stripe_webhook_secret`` (card top-ups, PROTOCOL.md
§9) are set together or not at all; :attr:`Settings.payments` tells how a
client pays in: ``card`` (Stripe), ``test`` (``dev`` without Stripe: a page of
the server's own) or ``off``.

Any bad value raises :class:`ConfigError`, whose message names the variable.
``ConfigError`` is deliberately not a :class:`core.errors.DispatchError`:
it is the operator's fault at start-up, never a user's at run time.
"""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import json
import math
import os
import re
import secrets
import socket
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from core.identity import MIN_SECRET_BYTES
from notify.email import SmtpConfig
from pool.model import Timeouts

ENV_PREFIX: Final = "DISPATCH_"

LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")

#: ``redis+cluster``/``rediss+cluster``: a Redis Cluster, named by one of its nodes.
_REDIS_SCHEMES: Final = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
_CURRENCY_RE: Final = re.compile(r"[A-Z]{3}")
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})
_DATA_KEY_INFO: Final = b"quick-connect dispatch: dev data key v1"
#: The largest amount Stripe charges at once (eight digits of minor units).
_STRIPE_MAX_AMOUNT: Final = 99_999_999


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the variable."""


def env_name(field_name: str) -> str:
    """The environment variable of a field: ``claim_confirm_timeout_s`` ->
    ``DISPATCH_CLAIM_CONFIRM_TIMEOUT_S``."""
    return ENV_PREFIX + field_name.upper()


def _default_server_id() -> str:
    host = socket.gethostname().split(".")[0] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything configurable, validated. Build it with :func:`load_settings`
    (or directly in tests: the same validation runs in ``__post_init__``).

    After construction ``secret`` and ``data_key`` are always set and valid;
    ``secret_generated`` tells whether ``secret`` was made up for this run
    (only possible with ``dev``).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    secret: str = field(default="", repr=False)
    redis_url: str | None = None
    database_url: str = "sqlite+aiosqlite:///./dispatch.db"
    #: PostgreSQL connections each process keeps open, and how many more it
    #: may open for a burst (closed again once returned while the pool is full).
    #: 20: a server at ~45 lifecycles/s held up to 21 at once (docs/benchmarks.md).
    database_pool_size: int = 20
    database_max_overflow: int = 10
    claim_confirm_timeout_s: float = 60.0
    request_max_wait_s: float = 600.0
    reconnect_grace_s: float = 15.0
    data_key: str = field(default="", repr=False)
    dev: bool = False
    demo: bool = False
    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    server_id: str = field(default_factory=_default_server_id)
    redis_max_connections: int = 64
    #: Offer permessage-deflate on websockets (browsers always ask for it).
    #: Off: every console would hold a compressor (~40 KiB) for frames of a
    #: few hundred bytes, and every broadcast be compressed once per console.
    ws_compression: bool = False
    ws_rate_per_s: float = 20.0
    ws_rate_burst: int = 40
    #: A connection refused frames for this long without a pause closes (1008).
    ws_flood_close_s: float = 10.0
    #: HTTP calls each signed-in user may make, per process.
    http_rate_per_s: float = 10.0
    http_rate_burst: int = 30
    #: Time a request (head and body) may take to arrive, from its first byte.
    http_read_timeout_s: float = 10.0
    #: Time an idle keep-alive connection stays open between requests.
    http_keepalive_s: float = 5.0
    #: Connections (HTTP and websocket) one process holds; more get 503.
    max_connections: int = 4096
    #: Frames buffered per connection before a slow consumer is dropped.
    ws_send_queue: int = 256
    auth_timeout_s: float = 5.0
    #: How long before a token's ``exp`` an open socket gets ``auth.expiring``.
    auth_expiring_s: float = 60.0
    #: How long after signing in ``POST /v1/auth/refresh`` still renews a token.
    token_max_age_s: float = 43200.0
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 20.0
    stats_interval_s: float = 1.0
    timer_tick_s: float = 0.2
    #: How often each server looks for sessions whose money is low or spent.
    billing_tick_s: float = 1.0
    heartbeat_s: float = 2.0
    server_dead_after_s: float = 10.0
    max_frame_bytes: int = 65536
    #: Profiling (the load tests): > 0, the first SIGUSR2 starts tracemalloc
    #: with this many frames per allocation and each one writes a snapshot.
    tracemalloc_frames: int = 0
    log_level: str = "info"
    log_json: bool = True
    # -- wallet and earnings (PROTOCOL.md §6) --------------------------------
    currency: str = "GBP"
    price_per_minute_minor: int = 150
    min_balance_minutes: int = 10
    therapist_share_pct: int = 60
    timezone: str = "Europe/London"
    # -- media relay (TURN) ----------------------------------------------------
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = field(default=None, repr=False)
    # -- texts (PROTOCOL.md §7) --------------------------------------------------
    #: The sending number, or a Messaging Service SID (MG...); with the
    #: account SID and token it turns texting on.
    twilio_from: str | None = None
    twilio_api_url: str = "https://api.twilio.com"
    #: The address people open (links in texts; Twilio's status callback URL).
    public_url: str | None = None
    sms_delay_s: float = 0.0
    sms_cooldown_s: float = 600.0
    sms_max_per_request: int = 25
    #: How long a server that took a text or an email to send has it before
    #: another may (it died meanwhile); sends time out well before.
    outbox_lease_s: float = 60.0
    # -- emails (PROTOCOL.md §7) -------------------------------------------------
    #: ``smtp://[user:pass@]host:port[?starttls=1]`` (``smtps://``: TLS from the
    #: start); unset, emails are off.
    smtp_url: str | None = field(default=None, repr=False)
    #: The From address of every email.
    mail_from: str | None = None
    #: Lifetime of the TURN credentials handed to a session.
    turn_ttl_s: int = 3600
    #: Frames held for a participant while it reconnects, before the oldest go.
    held_frames_max: int = 256
    # -- paying in (PROTOCOL.md §9) ---------------------------------------------
    #: Stripe's secret API key (``sk_...`` or a restricted ``rk_...``); with the
    #: webhook secret it turns card top-ups on.
    stripe_secret_key: str | None = field(default=None, repr=False)
    #: The signing secret of the Stripe webhook endpoint (``whsec_...``).
    stripe_webhook_secret: str | None = field(default=None, repr=False)
    stripe_api_url: str = "https://api.stripe.com"
    #: The least and the most one top-up may be, in minor units.
    topup_min_minor: int = 500
    topup_max_minor: int = 50000
    # -- scheduled care (PROTOCOL.md §8) ------------------------------------------
    #: The length of a booked session, and its price (a therapist's
    #: ``session_price_minor`` wins).
    session_minutes: int = 50
    session_price_minor: int = 6000
    #: The length of the free intro call (one per client and therapist).
    intro_minutes: int = 15
    #: Time kept free after every booking before the therapist's next one.
    booking_buffer_min: int = 10
    #: How far ahead a booking must start, at least.
    booking_min_notice_h: int = 2
    #: A client's cancel at least this long before the start costs nothing.
    cancel_window_h: int = 24
    #: What a late cancel or a no-show costs the client, in % of the price.
    late_fee_pct: int = 100
    #: The therapist's share of that fee, in % of its normal share.
    late_fee_therapist_pct: int = 50
    #: A therapist whose booked session starts within this many minutes gets
    #: no quick-connect offers (0: no guard).
    qc_guard_min: int = 30
    #: Open slots start at each availability window's start and every this
    #: many minutes after.
    slot_step_min: int = 30
    # -- care records (PROTOCOL.md §10) -------------------------------------------
    #: Where a safeguarding alert is emailed (one bare address; unset: no
    #: email, the operators' pages alone are told). Needs emails on.
    safeguarding_email: str | None = None
    #: A referred client's quick-connect request is offered to its referring
    #: therapist alone for this many seconds, when that therapist is there to
    #: see it (0: no head start).
    referral_head_start_s: float = 20.0
    # -- offer to a few at a time (issue #16) ----------------------------------------
    #: A new quick-connect request is offered to this many of the
    #: best-placed available therapists first (pool.rules.next_offers), and to
    #: this many more every ``offer_widen_s`` until claimed (0: to every
    #: eligible therapist at once). Every server must have the same value.
    offer_fanout: int = 0
    #: Seconds between two widenings of an offer to a few.
    offer_widen_s: float = 10.0

    secret_generated: bool = field(default=False, init=False, compare=False)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.init:
                _check(f.name, getattr(self, f.name))
        object.__setattr__(self, "log_level", self.log_level.lower())
        if not self.secret:
            if not self.dev:
                raise ConfigError(
                    f"{env_name('secret')} is not set: the server needs the HS256 key that "
                    "signs tokens (use --dev for a random one)"
                )
            object.__setattr__(self, "secret", secrets.token_urlsafe(32))
            object.__setattr__(self, "secret_generated", True)
        if len(self.secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"{env_name('secret')} is too short: at least {MIN_SECRET_BYTES} bytes "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        if not self.data_key:
            if not self.dev:
                raise ConfigError(
                    f"{env_name('data_key')} is not set: the server needs the key that "
                    "encrypts chat and notes (a Fernet key: 32 random bytes, URL-safe "
                    "base64; python -c 'from cryptography.fernet import Fernet; "
                    "print(Fernet.generate_key().decode())'); --dev derives one"
                )
            object.__setattr__(self, "data_key", derive_data_key(self.secret))
        _check_data_key(self.data_key)
        if (self.twilio_account_sid is None) != (self.twilio_auth_token is None):
            raise ConfigError(
                f"{env_name('twilio_account_sid')} and {env_name('twilio_auth_token')} "
                "go together: set both or neither"
            )
        if (self.stripe_secret_key is None) != (self.stripe_webhook_secret is None):
            raise ConfigError(
                f"{env_name('stripe_secret_key')} and {env_name('stripe_webhook_secret')} "
                "go together: set both (card top-ups) or neither"
            )
        if self.topup_max_minor < self.topup_min_minor:
            raise ConfigError(
                f"{env_name('topup_max_minor')} ({self.topup_max_minor}) must be at least "
                f"{env_name('topup_min_minor')} ({self.topup_min_minor})"
            )

        if self.texting and not self.public_url:
            raise ConfigError(
                f"{env_name('public_url')} is not set: texts link to the console there, "
                "and Twilio reports delivery to it"
            )
        if self.smtp_url is not None:
            try:
                SmtpConfig.parse(self.smtp_url)
            except ValueError as exc:
                raise ConfigError(f"{env_name('smtp_url')}: {exc}") from None
            if not self.mail_from:
                raise ConfigError(f"{env_name('mail_from')} is not set: emails need a From address")
            if not self.public_url:
                raise ConfigError(
                    f"{env_name('public_url')} is not set: emails link to the service there"
                )

    @property
    def emailing(self) -> bool:
        """Emails go out: an SMTP server and a From address are set."""
        return self.smtp_url is not None and bool(self.mail_from)

    @property
    def payments(self) -> str:
        """How a client pays in (PROTOCOL.md §9): ``card`` (Stripe Checkout),
        ``test`` (``dev`` without Stripe: the server's own test page, no money
        moves) or ``off``."""
        if self.stripe_secret_key is not None:
            return "card"
        return "test" if self.dev else "off"

    @property
    def texting(self) -> bool:
        """Texts go out: the Twilio account, its token and a sender are set."""
        return None not in (self.twilio_account_sid, self.twilio_auth_token, self.twilio_from)

    def timeouts(self) -> Timeouts:
        """The pool's clocks."""
        return Timeouts(
            claim_confirm_s=self.claim_confirm_timeout_s,
            request_max_wait_s=self.request_max_wait_s,
            reconnect_grace_s=self.reconnect_grace_s,
        )


def _check_data_key(value: str) -> None:
    """One Fernet key, or several separated by commas (the first encrypts)."""
    var = env_name("data_key")
    keys = [k.strip() for k in value.split(",")]
    for i, key in enumerate(keys, 1):
        # The message names the key's place in the list, never the key itself.
        where = var if len(keys) == 1 else f"{var} (key {i} of {len(keys)})"
        if not key:
            raise ConfigError(f"{where} is empty: list Fernet keys separated by commas")
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ConfigError(
                f"{where} is not a Fernet key: it must be 32 random bytes "
                "in URL-safe base64 (44 characters)"
            ) from None


def derive_data_key(secret: str) -> str:
    """A Fernet key derived from ``secret`` (HKDF-SHA256); for ``--dev`` only."""
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_DATA_KEY_INFO).derive(
        secret.encode()
    )
    return base64.urlsafe_b64encode(raw).decode()


_FIELDS: Final = {f.name: f for f in dataclasses.fields(Settings) if f.init}
_FIELD_TYPES: Final = {
    "host": str,
    "port": int,
    "secret": str,
    "redis_url": str,
    "database_url": str,
    "data_key": str,
    "dev": bool,
    "demo": bool,
    "ice_servers": list,
    "server_id": str,
    "log_level": str,
    "log_json": bool,
    "ws_compression": bool,
    "currency": str,
    "timezone": str,
    "twilio_account_sid": str,
    "twilio_auth_token": str,
    "twilio_from": str,
    "twilio_api_url": str,
    "public_url": str,
    "smtp_url": str,
    "mail_from": str,
    "stripe_secret_key": str,
    "stripe_webhook_secret": str,
    "stripe_api_url": str,
    "safeguarding_email": str,
}

#: String settings that may be left unset (``None``).
_OPTIONAL: Final = frozenset(
    {
        "twilio_account_sid",
        "twilio_auth_token",
        "twilio_from",
        "public_url",
        "smtp_url",
        "mail_from",
        "stripe_secret_key",
        "stripe_webhook_secret",
        "safeguarding_email",
    }
)
#: Number settings for which 0 is a meaningful value (no delay, no fee, no guard).
_ZERO_OK: Final = frozenset(
    {
        "sms_delay_s",
        "booking_buffer_min",
        "booking_min_notice_h",
        "cancel_window_h",
        "late_fee_pct",
        "late_fee_therapist_pct",
        "qc_guard_min",
        "referral_head_start_s",
        "offer_fanout",
        "tracemalloc_frames",
        "database_max_overflow",
    }
)
#: The largest value of the scheduling settings (PROTOCOL.md §8), each a
#: generous bound against a typo (minutes, hours, percentages, minor units).
_MAXIMA: Final = {
    "session_minutes": 480,
    "session_price_minor": 1_000_000,
    "intro_minutes": 120,
    "booking_buffer_min": 240,
    "booking_min_notice_h": 24 * 60,
    "cancel_window_h": 24 * 60,
    "late_fee_pct": 100,
    "late_fee_therapist_pct": 100,
    "qc_guard_min": 24 * 60,
    "slot_step_min": 240,
    "referral_head_start_s": 300,
    "offer_fanout": 100_000,
    "offer_widen_s": 600,
    "database_pool_size": 1000,
    "database_max_overflow": 1000,
}


def _kind(name: str) -> type:
    if name in _FIELD_TYPES:
        return _FIELD_TYPES[name]
    return float if str(_FIELDS[name].type) == "float" else int


def load_settings(
    overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Settings from ``overrides`` (flags; ``None`` values are ignored) over
    ``env`` (default ``os.environ``) over the defaults.

    Raises ``ConfigError`` naming the variable for anything missing or invalid.
    """
    overrides = overrides or {}
    env = os.environ if env is None else env
    unknown = sorted(set(overrides) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name in _FIELDS:
        var = env_name(name)
        raw: Any = overrides.get(name)
        if raw is None:
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                continue
        values[name] = _parse(name, raw)
    return Settings(**values)


def _parse(name: str, raw: Any) -> Any:
    """Turn a flag or variable value into the field's type (strings are parsed)."""
    var = env_name(name)
    kind = _kind(name)
    if kind is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{var} must be a string")
        return raw.strip()
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"{var} must be a boolean (1/0, true/false, yes/no, on/off)")
    if kind is list:
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError as e:
                raise ConfigError(f"{var} is not valid JSON: {e}") from None
        return raw
    if kind is int:
        if isinstance(raw, bool):
            raise ConfigError(f"{var} must be a whole number")
        if isinstance(raw, int):
            return raw
        try:
            return int(str(raw).strip())
        except ValueError:
            raise ConfigError(f"{var} must be a whole number, not {raw!r}") from None
    # float
    if isinstance(raw, bool):
        raise ConfigError(f"{var} must be a number")
    if isinstance(raw, int | float):
        return float(raw)
    try:
        return float(str(raw).strip())
    except ValueError:
        raise ConfigError(f"{var} must be a number, not {raw!r}") from None


def _check(name: str, value: Any) -> None:
    """Validate one field's value; raises ``ConfigError`` naming its variable."""
    var = env_name(name)
    kind = _kind(name)
    if name == "redis_url":
        if value is None:
            return
        _check_redis_url(var, value)
        return
    if name in _OPTIONAL and value is None:
        return
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{var} must be a string")
        if name in ("secret", "data_key"):
            return  # checked, or generated, in Settings.__post_init__
        if not value.strip():
            raise ConfigError(f"{var} must not be empty")
    elif kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{var} must be a boolean")
    elif kind is list:
        _check_ice_servers(var, value)
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{var} must be a positive whole number, not {value!r}")
        if name in _ZERO_OK and value < 0:
            raise ConfigError(f"{var} must be a whole number, 0 or more, not {value!r}")
        if name not in _ZERO_OK and value <= 0:
            raise ConfigError(f"{var} must be a positive whole number, not {value!r}")
    else:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
            or (value == 0 and name not in _ZERO_OK)
        ):
            raise ConfigError(f"{var} must be a positive number, not {value!r}")
    _check_specific(name, var, value)


#: URL schemes the durable store speaks (core.db.normalize_url picks the driver).
_DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres")


def _check_specific(name: str, var: str, value: Any) -> None:
    if name == "port" and value > 65535:
        raise ConfigError(f"{var} must be a TCP port (1..65535), not {value}")
    elif name == "tracemalloc_frames" and value > 100:
        raise ConfigError(f"{var} is a number of stack frames (0..100), not {value}")
    elif name == "therapist_share_pct" and value > 100:
        raise ConfigError(f"{var} is a percentage (1..100), not {value}")
    elif name in _MAXIMA and value > _MAXIMA[name]:
        low = 0 if name in _ZERO_OK else 1
        raise ConfigError(f"{var} must be {low}..{_MAXIMA[name]}, not {value}")
    elif name == "log_level" and value.lower() not in LOG_LEVELS:
        raise ConfigError(f"{var} must be one of {', '.join(LOG_LEVELS)}, not {value!r}")
    elif name == "currency" and not _CURRENCY_RE.fullmatch(value):
        raise ConfigError(f"{var} must be an ISO 4217 code such as GBP, not {value!r}")
    elif name == "timezone":
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"{var} is not a known time zone: {value!r}") from None
    elif name == "mail_from" and "@" not in email.utils.parseaddr(value)[1]:
        raise ConfigError(
            f"{var} must be an address such as care@example.com or "
            f"'Care <care@example.com>', not {value!r}"
        )
    elif name == "safeguarding_email" and (
        "@" not in value or email.utils.parseaddr(value)[1] != value or " " in value
    ):
        raise ConfigError(f"{var} must be one bare address such as safeguarding@example.com")
    elif name == "stripe_secret_key" and not value.startswith(("sk_", "rk_")):
        # The message never shows the value: it is a secret (or a key pasted
        # into the wrong variable).
        raise ConfigError(f"{var} must be a Stripe secret key (sk_... or rk_...)")
    elif name == "stripe_webhook_secret" and not value.startswith("whsec_"):
        raise ConfigError(f"{var} must be a Stripe webhook signing secret (whsec_...)")
    elif name == "topup_max_minor" and value > _STRIPE_MAX_AMOUNT:
        raise ConfigError(f"{var} is over what Stripe takes in one payment ({_STRIPE_MAX_AMOUNT})")
    elif name in ("public_url", "twilio_api_url", "stripe_api_url") and (
        urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc
    ):
        raise ConfigError(f"{var} must be an http:// or https:// URL, not {value!r}")
    elif name == "database_url" and (
        "://" not in value or not value.split("://", 1)[0].startswith(_DATABASE_SCHEMES)
    ):
        raise ConfigError(
            f"{var} must be a SQLite or PostgreSQL URL such as sqlite+aiosqlite:///./dispatch.db"
            " or postgresql+asyncpg://user@host/db"
        )


def _check_redis_url(var: str, value: Any) -> None:
    if not isinstance(value, str):
        raise ConfigError(f"{var} must be a string")
    scheme = urlsplit(value).scheme
    if scheme not in _REDIS_SCHEMES:
        raise ConfigError(
            f"{var} must start with redis://, rediss://, unix:// (one Redis) or"
            f" redis+cluster://, rediss+cluster:// (a Redis Cluster), not {scheme or value!r}"
        )
    if scheme.endswith("+cluster") and urlsplit(value).path.strip("/") not in ("", "0"):
        raise ConfigError(f"{var}: a Redis Cluster has only database 0")


def _check_ice_servers(var: str, value: Any) -> None:
    """A JSON array of RTCIceServer objects: ``urls`` (a string or a list of
    strings) and optional string ``username`` and ``credential``."""
    if not isinstance(value, list):
        raise ConfigError(f"{var} must be a JSON array of RTCIceServer objects")
    for i, server in enumerate(value):
        where = f"{var}[{i}]"
        if not isinstance(server, dict):
            raise ConfigError(f'{where} must be an object such as {{"urls": "stun:..."}}')
        urls = server.get("urls")
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            raise ConfigError(f"{where}.urls must be a URL string or a non-empty list of them")
        for u in urls:
            if urlsplit(u).scheme not in ("stun", "stuns", "turn", "turns"):
                raise ConfigError(
                    f"{where}.urls: {u!r} is not a stun:, stuns:, turn: or turns: URL"
                )
        for key in ("username", "credential"):
            if key in server and not isinstance(server[key], str):
                raise ConfigError(f"{where}.{key} must be a string")
