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
        ({"redis_url": "http://127.0.0.1:6379"}, "DISPATCH_REDIS_URL must start with redis://"),
        ({"redis_url": "127.0.0.1:6379"}, "DISPATCH_REDIS_URL must start with redis://"),
        ({"database_url": "dispatch.db"}, "DISPATCH_DATABASE_URL must be a database URL"),
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
