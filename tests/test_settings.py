"""Settings: flag > environment > default, and every way a value can be wrong."""

from __future__ import annotations

import json
import secrets

import pytest
from cryptography.fernet import Fernet

from dispatch.settings import ConfigError, Settings, derive_data_key, env_name, load_settings
from pool.model import Timeouts

SECRET = secrets.token_urlsafe(32)
DATA_KEY = Fernet.generate_key().decode()
BASE = {"DISPATCH_SECRET": SECRET, "DISPATCH_DATA_KEY": DATA_KEY}


def env(**extra: str) -> dict[str, str]:
    return {**BASE, **{f"DISPATCH_{k.upper()}": v for k, v in extra.items()}}


def test_defaults() -> None:
    s = load_settings({}, BASE)
    assert (s.host, s.port) == ("127.0.0.1", 8000)
    assert s.secret == SECRET and s.data_key == DATA_KEY and not s.secret_generated
    assert s.redis_url is None
    assert s.database_url == "sqlite+aiosqlite:///./dispatch.db"
    assert (s.claim_confirm_timeout_s, s.request_max_wait_s, s.reconnect_grace_s) == (
        60.0,
        600.0,
        15.0,
    )
    assert s.ice_servers == []
    assert (s.dev, s.demo, s.log_level, s.log_json) == (False, False, "info", True)
    assert (s.currency, s.price_per_minute_minor, s.min_balance_minutes) == ("GBP", 150, 10)
    assert (s.therapist_share_pct, s.timezone) == (60, "Europe/London")
    assert s.max_frame_bytes == 65536 and s.ws_send_queue == 256
    assert s.server_id and s.server_id != load_settings({}, BASE).server_id


def test_env_names_follow_the_protocol() -> None:
    assert env_name("claim_confirm_timeout_s") == "DISPATCH_CLAIM_CONFIRM_TIMEOUT_S"
    s = load_settings(
        {},
        env(
            claim_confirm_timeout_s="30",
            request_max_wait_s="120.5",
            reconnect_grace_s="3",
            redis_url="redis://127.0.0.1:6390/0",
            database_url="postgresql+asyncpg://u@db/x",
            currency="USD",
            price_per_minute_minor="200",
            min_balance_minutes="5",
            therapist_share_pct="70",
            timezone="America/Los_Angeles",
            ws_send_queue="8",
            log_json="false",
            log_level="DEBUG",
        ),
    )
    assert s.timeouts() == Timeouts(
        claim_confirm_s=30.0, request_max_wait_s=120.5, reconnect_grace_s=3.0
    )
    assert s.redis_url == "redis://127.0.0.1:6390/0"
    assert s.database_url == "postgresql+asyncpg://u@db/x"
    assert (s.currency, s.price_per_minute_minor, s.min_balance_minutes) == ("USD", 200, 5)
    assert (s.therapist_share_pct, s.timezone) == (70, "America/Los_Angeles")
    assert s.ws_send_queue == 8
    assert s.log_json is False and s.log_level == "debug"


def test_flag_beats_env_beats_default() -> None:
    assert load_settings({}, BASE).port == 8000
    assert load_settings({}, env(port="9001")).port == 9001
    assert load_settings({"port": 9002}, env(port="9001")).port == 9002
    # A flag left unset (None) does not hide the environment.
    s = load_settings({"port": None, "host": None, "dev": None}, env(port="9001", dev="1"))
    assert s.port == 9001 and s.dev is True
    assert load_settings({"dev": False}, env(dev="1")).dev is False
    assert load_settings({"redis_url": "unix:///tmp/r.sock"}, env()).redis_url == (
        "unix:///tmp/r.sock"
    )
    for cluster in ("redis+cluster://10.0.0.5:7000", "rediss+cluster://u:p@c.example:6379/0"):
        assert load_settings({"redis_url": cluster}, env()).redis_url == cluster


def test_empty_variable_counts_as_unset() -> None:
    s = load_settings({}, env(redis_url="", port="  "))
    assert s.redis_url is None and s.port == 8000


def test_ice_servers_from_json() -> None:
    servers = [
        {"urls": "stun:stun.example.org:3478"},
        {"urls": ["turn:turn.example.org"], "username": "u", "credential": "c"},
    ]
    s = load_settings({}, env(ice_servers=json.dumps(servers)))
    assert s.ice_servers == servers


def test_missing_secret_is_refused() -> None:
    with pytest.raises(ConfigError, match="DISPATCH_SECRET is not set"):
        load_settings({}, {"DISPATCH_DATA_KEY": DATA_KEY})


def test_missing_data_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="DISPATCH_DATA_KEY is not set"):
        load_settings({}, {"DISPATCH_SECRET": SECRET})


def test_dev_generates_a_secret_and_derives_a_data_key() -> None:
    a = load_settings({"dev": True}, {})
    b = load_settings({}, {"DISPATCH_DEV": "true"})
    assert a.secret_generated and b.secret_generated
    assert len(a.secret) >= 32 and a.secret != b.secret
    Fernet(a.data_key)  # a valid key
    assert a.data_key == derive_data_key(a.secret) != b.data_key
    assert a.secret not in repr(a) and a.data_key not in repr(a)
    # A given secret is kept, and the derived key is stable for it.
    c = load_settings({"dev": True}, {"DISPATCH_SECRET": SECRET})
    assert c.secret == SECRET and not c.secret_generated
    assert c.data_key == derive_data_key(SECRET)
    # A given data key wins over the derived one.
    assert load_settings({"dev": True}, {"DISPATCH_DATA_KEY": DATA_KEY}).data_key == DATA_KEY


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"secret": "too-short"}, "DISPATCH_SECRET is too short"),
        ({"data_key": "not-a-key"}, "DISPATCH_DATA_KEY is not a Fernet key"),
        ({"data_key": "A" * 43 + "="}, None),  # valid shape: accepted
        ({"port": "eighty"}, "DISPATCH_PORT must be a whole number"),
        ({"port": "0"}, "DISPATCH_PORT must be a positive"),
        ({"port": "70000"}, "DISPATCH_PORT must be a TCP port"),
        ({"claim_confirm_timeout_s": "-1"}, "DISPATCH_CLAIM_CONFIRM_TIMEOUT_S must be a positive"),
        ({"request_max_wait_s": "nan"}, "DISPATCH_REQUEST_MAX_WAIT_S must be a positive"),
        ({"reconnect_grace_s": "soon"}, "DISPATCH_RECONNECT_GRACE_S must be a number"),
        ({"ws_rate_burst": "1.5"}, "DISPATCH_WS_RATE_BURST must be a whole number"),
        ({"max_frame_bytes": "0"}, "DISPATCH_MAX_FRAME_BYTES must be a positive"),
        ({"therapist_share_pct": "101"}, "DISPATCH_THERAPIST_SHARE_PCT is a percentage"),
        ({"tracemalloc_frames": "101"}, "DISPATCH_TRACEMALLOC_FRAMES is a number of stack frames"),
        ({"tracemalloc_frames": "-1"}, "DISPATCH_TRACEMALLOC_FRAMES must be a whole number, 0"),
        ({"tracemalloc_frames": "0"}, None),
        ({"database_pool_size": "0"}, "DISPATCH_DATABASE_POOL_SIZE must be a positive"),
        ({"database_pool_size": "1001"}, "DISPATCH_DATABASE_POOL_SIZE must be 1..1000"),
        ({"database_max_overflow": "-1"}, "DISPATCH_DATABASE_MAX_OVERFLOW must be a whole number"),
        ({"database_max_overflow": "1001"}, "DISPATCH_DATABASE_MAX_OVERFLOW must be 0..1000"),
        ({"database_max_overflow": "0"}, None),
        ({"redis_url": "http://127.0.0.1:6379"}, "DISPATCH_REDIS_URL must start with redis://"),
        ({"redis_url": "127.0.0.1:6379"}, "DISPATCH_REDIS_URL must start with redis://"),
        ({"redis_url": "redis+cluster://c:7000/2"}, "Redis Cluster has only database 0"),
        ({"redis_url": "unix+cluster:///tmp/r.sock"}, "or redis\\+cluster://"),
        ({"database_url": "dispatch.db"}, "DISPATCH_DATABASE_URL must be a SQLite or PostgreSQL"),
        ({"ice_servers": "[{"}, "DISPATCH_ICE_SERVERS is not valid JSON"),
        ({"ice_servers": '{"urls": "stun:x"}'}, "DISPATCH_ICE_SERVERS must be a JSON array"),
        ({"ice_servers": '["stun:x"]'}, r"DISPATCH_ICE_SERVERS\[0\] must be an object"),
        ({"ice_servers": '[{"username": "u"}]'}, r"DISPATCH_ICE_SERVERS\[0\]\.urls"),
        ({"ice_servers": '[{"urls": "http://x"}]'}, r"DISPATCH_ICE_SERVERS\[0\]\.urls"),
        (
            {"ice_servers": '[{"urls": "turn:x", "credential": 5}]'},
            r"DISPATCH_ICE_SERVERS\[0\]\.credential must be a string",
        ),
        ({"dev": "maybe"}, "DISPATCH_DEV must be a boolean"),
        ({"log_level": "loud"}, "DISPATCH_LOG_LEVEL must be one of"),
        ({"currency": "pounds"}, "DISPATCH_CURRENCY must be an ISO 4217 code"),
        ({"timezone": "Mars/Olympus"}, "DISPATCH_TIMEZONE is not a known time zone"),
        ({"host": ""}, None),  # empty means unset: the default host
        ({"public_url": "care.example.com"}, "DISPATCH_PUBLIC_URL must be an http"),
        ({"public_url": "ftp://care.example.com"}, "DISPATCH_PUBLIC_URL must be an http"),
        ({"twilio_api_url": "http://"}, "DISPATCH_TWILIO_API_URL must be an http"),
        ({"sms_delay_s": "-1"}, "DISPATCH_SMS_DELAY_S must be a positive"),
        ({"sms_cooldown_s": "0"}, "DISPATCH_SMS_COOLDOWN_S must be a positive"),
        ({"sms_max_per_request": "0"}, "DISPATCH_SMS_MAX_PER_REQUEST must be a positive"),
        ({"http_read_timeout_s": "0"}, "DISPATCH_HTTP_READ_TIMEOUT_S must be a positive"),
        ({"max_connections": "-3"}, "DISPATCH_MAX_CONNECTIONS must be a positive"),
        ({"ws_flood_close_s": "never"}, "DISPATCH_WS_FLOOD_CLOSE_S must be a number"),
        ({"sms_delay_s": "0"}, None),  # no delay: allowed
    ],
)
def test_bad_values_name_their_variable(extra: dict[str, str], message: str | None) -> None:
    if message is None:
        load_settings({}, env(**extra))
        return
    with pytest.raises(ConfigError, match=message):
        load_settings({}, env(**extra))


def test_bad_flags_are_refused_too() -> None:
    with pytest.raises(ConfigError, match="DISPATCH_PORT must be a positive"):
        load_settings({"port": -5}, BASE)
    with pytest.raises(ConfigError, match="DISPATCH_LOG_LEVEL"):
        load_settings({"log_level": "chatty"}, BASE)
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings({"prot": 80}, BASE)


def test_direct_construction_is_validated() -> None:
    s = Settings(secret=SECRET, data_key=DATA_KEY, port=8123, redis_url="rediss://r:6380")
    assert s.port == 8123 and s.redis_url == "rediss://r:6380"
    with pytest.raises(ConfigError, match="DISPATCH_SECRET"):
        Settings(data_key=DATA_KEY)
    with pytest.raises(ConfigError, match="DISPATCH_WS_SEND_QUEUE"):
        Settings(secret=SECRET, data_key=DATA_KEY, ws_send_queue=0)
    dev = Settings(dev=True)
    assert dev.secret_generated and Fernet(dev.data_key)


def test_data_key_may_list_several_keys_for_rotation() -> None:
    old = Fernet.generate_key().decode()
    s = load_settings({}, {**BASE, "DISPATCH_DATA_KEY": f"{DATA_KEY}, {old}"})
    assert s.data_key == f"{DATA_KEY}, {old}"
    assert DATA_KEY not in repr(s) and old not in repr(s)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{key},not-a-key", r"DISPATCH_DATA_KEY \(key 2 of 2\) is not a Fernet key"),
        ("bad,{key}", r"DISPATCH_DATA_KEY \(key 1 of 2\) is not a Fernet key"),
        ("{key},", r"DISPATCH_DATA_KEY \(key 2 of 2\) is empty"),
        ("{key},,{key}", r"DISPATCH_DATA_KEY \(key 2 of 3\) is empty"),
    ],
)
def test_bad_key_lists_name_the_variable_not_the_key(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_settings({}, {**BASE, "DISPATCH_DATA_KEY": value.format(key=DATA_KEY)})
    assert DATA_KEY not in str(info.value)


def test_turn_and_held_frame_settings() -> None:
    s = load_settings({}, BASE)
    assert (s.twilio_account_sid, s.twilio_auth_token) == (None, None)
    assert (s.turn_ttl_s, s.held_frames_max) == (3600, 256)
    s = load_settings(
        {},
        env(
            twilio_account_sid="AC0123",
            twilio_auth_token="tw-secret-token",
            turn_ttl_s="600",
            held_frames_max="32",
        ),
    )
    assert (s.twilio_account_sid, s.twilio_auth_token) == ("AC0123", "tw-secret-token")
    assert (s.turn_ttl_s, s.held_frames_max) == (600, 32)
    assert "tw-secret-token" not in repr(s) and "AC0123" in repr(s)
    # Empty variables count as unset: neither is set, which is fine.
    s = load_settings({}, env(twilio_account_sid="", twilio_auth_token=""))
    assert s.twilio_account_sid is None and s.twilio_auth_token is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"twilio_account_sid": "AC0123"}, "DISPATCH_TWILIO_ACCOUNT_SID and DISPATCH_TWILIO"),
        ({"twilio_auth_token": "tok"}, "set both or neither"),
        ({"turn_ttl_s": "0"}, "DISPATCH_TURN_TTL_S must be a positive"),
        ({"turn_ttl_s": "1.5"}, "DISPATCH_TURN_TTL_S must be a whole number"),
        ({"held_frames_max": "-3"}, "DISPATCH_HELD_FRAMES_MAX must be a positive"),
    ],
)
def test_bad_turn_settings_name_their_variable(extra: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({}, env(**extra))
    with pytest.raises(ConfigError, match="set both or neither"):
        Settings(secret=SECRET, data_key=DATA_KEY, twilio_auth_token="tok")


@pytest.mark.parametrize("url", ["mysql://u@h/db", "dispatch.db", "oracle+x://h/db"])
def test_database_url_must_be_sqlite_or_postgresql(url: str) -> None:
    with pytest.raises(ConfigError, match="DISPATCH_DATABASE_URL"):
        load_settings({"dev": True, "database_url": url}, env={})


@pytest.mark.parametrize(
    "url", ["sqlite+aiosqlite:///./x.db", "postgresql+asyncpg://u@h/db", "postgres://u@h/db"]
)
def test_database_url_accepts_sqlite_and_postgresql(url: str) -> None:
    assert load_settings({"dev": True, "database_url": url}, env={}).database_url == url


def test_texting_needs_the_account_its_token_and_a_sender() -> None:
    twilio = {"twilio_account_sid": "AC" + "0" * 32, "twilio_auth_token": "token"}
    assert not load_settings({}, env()).texting
    assert not load_settings({}, env(**twilio)).texting  # TURN only: no sender
    with pytest.raises(ConfigError, match="DISPATCH_PUBLIC_URL is not set"):
        load_settings({}, env(**twilio, twilio_from="+15005550006"))
    public = {"public_url": "https://care.example.com"}
    on = load_settings({}, env(**twilio, **public, twilio_from="+15005550006"))
    assert on.texting and on.sms_delay_s == 0.0 and on.sms_max_per_request == 25


def test_emails_need_a_valid_smtp_url_a_from_address_and_the_public_url() -> None:
    assert not load_settings({}, env()).emailing
    mail = {"mail_from": "a@example.com", "public_url": "https://care.example.com"}
    on = load_settings({}, env(smtp_url="smtp://u:p%40ss@127.0.0.1:2525?starttls=1", **mail))
    assert on.emailing and "p%40ss" not in repr(on)
    with pytest.raises(ConfigError, match="DISPATCH_MAIL_FROM is not set"):
        load_settings({}, env(smtp_url="smtp://127.0.0.1:2525"))
    with pytest.raises(ConfigError, match="DISPATCH_PUBLIC_URL is not set"):
        load_settings({}, env(smtp_url="smtp://127.0.0.1:2525", mail_from="a@example.com"))
    with pytest.raises(ConfigError, match="DISPATCH_SMTP_URL"):
        load_settings({}, env(smtp_url="http://127.0.0.1", **mail))
    with pytest.raises(ConfigError, match="DISPATCH_MAIL_FROM must be an address"):
        load_settings({}, env(smtp_url="smtp://127.0.0.1:25", mail_from="nobody"))


# -- paying in (PROTOCOL.md §9) ----------------------------------------------------

STRIPE = {"stripe_secret_key": "sk_test_not-a-real-key", "stripe_webhook_secret": "whsec_sign"}


def test_payment_settings_and_mode() -> None:
    s = load_settings({}, BASE)
    assert (s.stripe_secret_key, s.stripe_webhook_secret) == (None, None)
    assert s.stripe_api_url == "https://api.stripe.com"
    assert (s.topup_min_minor, s.topup_max_minor) == (500, 50000)
    assert s.payments == "off"
    assert load_settings({"dev": True}, env={}).payments == "test"
    card = load_settings(
        {},
        env(
            **STRIPE,
            stripe_api_url="http://127.0.0.1:9",
            topup_min_minor="100",
            topup_max_minor="100",
        ),
    )
    assert card.payments == "card" and card.stripe_api_url == "http://127.0.0.1:9"
    assert (card.topup_min_minor, card.topup_max_minor) == (100, 100)
    # Stripe's keys win over --dev's test page; neither secret is ever shown.
    with_dev = load_settings({"dev": True}, env(**STRIPE))
    assert with_dev.payments == "card"
    assert "not-a-real-key" not in repr(with_dev) and "whsec_sign" not in repr(with_dev)
    # Empty variables count as unset.
    assert load_settings({}, env(stripe_secret_key="", stripe_webhook_secret="")).payments == "off"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"stripe_secret_key": "sk_test_x"}, "DISPATCH_STRIPE_SECRET_KEY and DISPATCH_STRIPE_WEB"),
        ({"stripe_webhook_secret": "whsec_x"}, "set both \\(card top-ups\\) or neither"),
        ({**STRIPE, "stripe_secret_key": "pk_test_x"}, "DISPATCH_STRIPE_SECRET_KEY must be a"),
        ({**STRIPE, "stripe_webhook_secret": "sk_x"}, "DISPATCH_STRIPE_WEBHOOK_SECRET must be"),
        ({"stripe_api_url": "api.stripe.com"}, "DISPATCH_STRIPE_API_URL must be an http"),
        ({"topup_min_minor": "0"}, "DISPATCH_TOPUP_MIN_MINOR must be a positive"),
        ({"topup_max_minor": "12.5"}, "DISPATCH_TOPUP_MAX_MINOR must be a whole number"),
        ({"topup_min_minor": "600", "topup_max_minor": "599"}, "must be at least"),
        ({"topup_max_minor": "100000000"}, "DISPATCH_TOPUP_MAX_MINOR is over what Stripe"),
    ],
)
def test_bad_payment_settings_name_their_variable(extra: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_settings({}, env(**extra))
    assert "pk_test_x" not in str(info.value)


# -- scheduled care (PROTOCOL.md §8) -----------------------------------------------


def test_scheduling_defaults_follow_the_protocol() -> None:
    s = load_settings({}, BASE)
    assert (s.session_minutes, s.session_price_minor, s.intro_minutes) == (50, 6000, 15)
    assert (s.booking_buffer_min, s.booking_min_notice_h, s.cancel_window_h) == (10, 2, 24)
    assert (s.late_fee_pct, s.late_fee_therapist_pct) == (100, 50)
    assert (s.qc_guard_min, s.slot_step_min) == (30, 30)
    s = load_settings(
        {"late_fee_pct": 40},
        env(
            session_minutes="45",
            session_price_minor="7500",
            intro_minutes="20",
            booking_buffer_min="0",
            booking_min_notice_h="0",
            cancel_window_h="48",
            late_fee_pct="100",
            late_fee_therapist_pct="0",
            qc_guard_min="0",
            slot_step_min="15",
        ),
    )
    assert (s.session_minutes, s.session_price_minor, s.intro_minutes) == (45, 7500, 20)
    assert (s.booking_buffer_min, s.booking_min_notice_h, s.cancel_window_h) == (0, 0, 48)
    # The flag wins over the environment.
    assert (s.late_fee_pct, s.late_fee_therapist_pct) == (40, 0)
    assert (s.qc_guard_min, s.slot_step_min) == (0, 15)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"session_minutes": "0"}, "DISPATCH_SESSION_MINUTES must be a positive"),
        ({"session_minutes": "481"}, r"DISPATCH_SESSION_MINUTES must be 1\.\.480"),
        ({"session_price_minor": "0"}, "DISPATCH_SESSION_PRICE_MINOR must be a positive"),
        ({"session_price_minor": "60.5"}, "DISPATCH_SESSION_PRICE_MINOR must be a whole"),
        ({"session_price_minor": "1000001"}, "DISPATCH_SESSION_PRICE_MINOR must be 1"),
        ({"intro_minutes": "121"}, "DISPATCH_INTRO_MINUTES must be 1..120"),
        ({"booking_buffer_min": "-1"}, "DISPATCH_BOOKING_BUFFER_MIN must be a whole number, 0"),
        ({"booking_buffer_min": "241"}, r"DISPATCH_BOOKING_BUFFER_MIN must be 0\.\.240"),
        ({"booking_min_notice_h": "1441"}, "DISPATCH_BOOKING_MIN_NOTICE_H must be 0"),
        ({"cancel_window_h": "-24"}, "DISPATCH_CANCEL_WINDOW_H must be a whole number, 0"),
        ({"late_fee_pct": "101"}, r"DISPATCH_LATE_FEE_PCT must be 0\.\.100"),
        ({"late_fee_therapist_pct": "150"}, r"DISPATCH_LATE_FEE_THERAPIST_PCT must be 0\.\.100"),
        ({"qc_guard_min": "soon"}, "DISPATCH_QC_GUARD_MIN must be a whole number"),
        ({"qc_guard_min": "1441"}, "DISPATCH_QC_GUARD_MIN must be 0"),
        ({"slot_step_min": "0"}, "DISPATCH_SLOT_STEP_MIN must be a positive"),
        ({"slot_step_min": "241"}, "DISPATCH_SLOT_STEP_MIN must be 1..240"),
    ],
)
def test_bad_scheduling_settings_name_their_variable(extra: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({}, env(**extra))
