"""ICE servers for ``session.ready``: static configuration, and Twilio's
Network Traversal Service through the real twilio library with a fake HTTP
transport (twilio-python has no base-URL setting; its ``http_client`` is the
seam). No test here opens a socket: ``no_sockets`` fails any test that tries.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from twilio.http import HttpClient
from twilio.http.response import Response

from signaling.ice import IceProvider, StaticIce, TwilioIce, make_provider

SID = "AC" + "3f" * 16
TOKEN = "auth-token-9c1e7d5b2a4f"
TOKENS_URL = f"https://api.twilio.com/2010-04-01/Accounts/{SID}/Tokens.json"
T0 = datetime(2025, 7, 1, 12, 0, 0, tzinfo=UTC).timestamp()
STATIC = [{"urls": ["stun:stun.example.org:3478"]}]


# --- no network -----------------------------------------------------------


class SocketOpened(AssertionError):
    pass


@pytest.fixture(autouse=True)
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Every outbound connect raises, and is recorded: a failed mint is
    swallowed by design, so the record (checked at teardown) is what shows a
    test that reached for the network."""
    attempts: list[object] = []

    def refuse(_sock: socket.socket, address: object) -> None:
        attempts.append(address)
        raise SocketOpened(f"test tried to connect to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    # Twilio's client reads these to pick another host; the fake asserts the default.
    for var in ("TWILIO_EDGE", "TWILIO_REGION", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    yield attempts
    assert attempts == [], f"a test tried to open sockets: {attempts}"


def test_the_socket_guard_refuses_and_records(no_sockets: list[object]) -> None:
    with socket.socket() as s, pytest.raises(SocketOpened):
        s.connect(("127.0.0.1", 9))
    assert no_sockets == [("127.0.0.1", 9)]
    no_sockets.clear()  # this one was on purpose


# --- fakes ------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rfc2822(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


def token_json(n: int, *, created: float | None = T0, ttl: int = 3600) -> str:
    """A body shaped like Twilio's real ``POST .../Tokens.json`` answer (201)."""
    user, cred = f"turn-user-{n:04d}" + "0" * 48, f"turn-cred-{n:04d}/Zx8mK1lTFJW3NVg="
    turn = "turn:global.turn.twilio.com"
    body: dict[str, Any] = {
        "account_sid": SID,
        "date_created": rfc2822(created) if created is not None else None,
        "date_updated": rfc2822(created) if created is not None else None,
        "ice_servers": [
            {
                "url": "stun:global.stun.twilio.com:3478",
                "urls": "stun:global.stun.twilio.com:3478",
            },
            {
                "url": f"{turn}:3478?transport=udp",
                "urls": f"{turn}:3478?transport=udp",
                "username": user,
                "credential": cred,
            },
            {
                "url": f"{turn}:3478?transport=tcp",
                "urls": f"{turn}:3478?transport=tcp",
                "username": user,
                "credential": cred,
            },
            {
                "url": f"{turn}:443?transport=tcp",
                "urls": f"{turn}:443?transport=tcp",
                "username": user,
                "credential": cred,
            },
        ],
        "password": cred,
        "ttl": str(ttl),
        "username": user,
    }
    return json.dumps(body)


def expected(n: int) -> list[dict[str, Any]]:
    user, cred = f"turn-user-{n:04d}" + "0" * 48, f"turn-cred-{n:04d}/Zx8mK1lTFJW3NVg="
    turn = "turn:global.turn.twilio.com"
    return [
        {"urls": "stun:global.stun.twilio.com:3478"},
        {"urls": f"{turn}:3478?transport=udp", "username": user, "credential": cred},
        {"urls": f"{turn}:3478?transport=tcp", "username": user, "credential": cred},
        {"urls": f"{turn}:443?transport=tcp", "username": user, "credential": cred},
    ]


def ok(n: int, **kw: Any) -> Response:
    return Response(201, token_json(n, **kw), {"Content-Type": "application/json"})


class FakeTwilioHttp(HttpClient):  # type: ignore[misc]
    """Records each request and answers from a script (the last item repeats).
    With ``gate`` set, each request blocks until the gate opens."""

    def __init__(self, *script: Response | Exception) -> None:
        super().__init__(logging.getLogger("tests.fake_twilio"), False, None)
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def request(
        self,
        method: str,
        uri: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        self.requests.append(
            {"method": method, "uri": uri, "data": data, "headers": headers, "auth": auth}
        )
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test never opened the gate"
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, Exception):
            raise item
        return item


def twilio(http: FakeTwilioHttp, clock: Clock, **kw: Any) -> TwilioIce:
    kw.setdefault("fallback", STATIC)
    return TwilioIce(SID, TOKEN, 3600, http_client=http, clock=clock, **kw)


def events(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


# --- static -----------------------------------------------------------------


async def test_static_returns_a_copy_of_the_configured_list() -> None:
    configured: list[dict[str, Any]] = [
        {"urls": ["stun:stun.example.org:3478"]},
        {"urls": "turn:turn.example.org:3478", "username": "u", "credential": "c"},
    ]
    provider: IceProvider = StaticIce(configured)
    first = await provider.ice_servers()
    assert first == configured
    first[0]["urls"].append("stun:evil.example:1")
    first.append({"urls": "stun:more.example:1"})
    configured[1]["username"] = "changed after construction"
    assert await provider.ice_servers() == [
        {"urls": ["stun:stun.example.org:3478"]},
        {"urls": "turn:turn.example.org:3478", "username": "u", "credential": "c"},
    ]


@pytest.mark.parametrize(
    "bad",
    [{"url": "stun:x:1"}, {"urls": []}, {"urls": [1]}, {"urls": "turn:x:1", "username": 5}, "s"],
)
def test_static_refuses_entries_a_browser_cannot_use(bad: Any) -> None:
    with pytest.raises(ValueError):
        StaticIce([bad])


# --- twilio: request and parsing -----------------------------------------------


async def test_mints_a_token_at_the_tokens_endpoint_with_ttl_and_account_auth() -> None:
    http = FakeTwilioHttp(ok(1))
    await twilio(http, Clock()).ice_servers()
    (req,) = http.requests
    assert req["method"] == "POST"
    assert req["uri"] == TOKENS_URL
    assert req["data"] == {"Ttl": 3600}
    assert req["auth"] == (SID, TOKEN)  # HTTP basic auth: account SID and auth token
    assert req["headers"]["Accept"] == "application/json"


async def test_answer_is_the_browsers_rtc_ice_server_list() -> None:
    servers = await twilio(FakeTwilioHttp(ok(1)), Clock()).ice_servers()
    assert servers == expected(1)
    assert all("url" not in s for s in servers)  # the deprecated key is dropped


async def test_entries_without_urls_fall_back_to_url_or_are_dropped() -> None:
    body = json.loads(token_json(1))
    body["ice_servers"] = [
        {"url": "stun:only-url.example:3478"},
        {"username": "no-url-at-all", "credential": "x"},
        "not an object",
        {"urls": ["turn:a.example:3478", 7], "username": "u", "credential": "c", "extra": 1},
    ]
    http = FakeTwilioHttp(Response(201, json.dumps(body)))
    assert await twilio(http, Clock()).ice_servers() == [
        {"urls": "stun:only-url.example:3478"},
        {"urls": ["turn:a.example:3478"], "username": "u", "credential": "c"},
    ]


# --- twilio: caching and refresh --------------------------------------------------


async def test_cached_until_the_refresh_margin_before_expiry() -> None:
    clock, http = Clock(), FakeTwilioHttp(ok(1), ok(2, created=T0 + 3300))
    ice = twilio(http, clock, refresh_margin_s=300)
    assert await ice.ice_servers() == expected(1)
    clock.now = T0 + 3600 - 300 - 0.001
    assert await ice.ice_servers() == expected(1)
    assert len(http.requests) == 1  # the second call made no request
    clock.now = T0 + 3600 - 300
    assert await ice.ice_servers() == expected(2)
    assert len(http.requests) == 2
    clock.now = T0 + 3600 - 300 + 3600 - 300 - 1
    assert await ice.ice_servers() == expected(2)
    assert len(http.requests) == 2


async def test_callers_cannot_edit_the_cache() -> None:
    ice = twilio(FakeTwilioHttp(ok(1)), Clock())
    (await ice.ice_servers())[1]["credential"] = "tampered"
    assert await ice.ice_servers() == expected(1)


async def test_expiry_counts_from_date_created() -> None:
    # Twilio stamped the token 45 s before our clock read: it dies 45 s sooner.
    clock, http = Clock(), FakeTwilioHttp(ok(1, created=T0 - 45), ok(2))
    ice = twilio(http, clock)
    await ice.ice_servers()
    clock.now = T0 - 45 + 3600 - 300 - 0.001
    assert await ice.ice_servers() == expected(1)
    clock.now = T0 - 45 + 3600 - 300
    assert await ice.ice_servers() == expected(2)


async def test_a_clock_far_ahead_of_twilios_neither_expires_early_nor_mints_each_call() -> None:
    # Our clock runs an hour ahead of Twilio's: date_created + ttl is already
    # past on our clock, yet the token was minted just now and lives an hour.
    clock = Clock()
    http = FakeTwilioHttp(ok(1, created=T0 - 3600), ok(2, created=T0 - 3600 + 3300))
    ice = twilio(http, clock)
    assert await ice.ice_servers() == expected(1)
    clock.now = T0 + 3600 - 60 - 300 - 0.001  # at most MAX_CLOCK_SKEW_S of distrust
    assert await ice.ice_servers() == expected(1)
    assert len(http.requests) == 1
    clock.now = T0 + 3600 - 60 - 300
    assert await ice.ice_servers() == expected(2)
    assert len(http.requests) == 2


async def test_expiry_is_now_plus_ttl_without_date_created_or_when_twilio_is_ahead() -> None:
    for created in (None, T0 + 900):
        clock, http = Clock(), FakeTwilioHttp(ok(1, created=created), ok(2))
        ice = twilio(http, clock)
        await ice.ice_servers()
        clock.now = T0 + 3600 - 300 - 1
        assert await ice.ice_servers() == expected(1)
        clock.now = T0 + 3600 - 300
        assert await ice.ice_servers() == expected(2)


async def test_ttl_in_the_answer_wins_over_the_one_asked_for() -> None:
    clock, http = Clock(), FakeTwilioHttp(ok(1, ttl=1200), ok(2))
    ice = twilio(http, clock)
    await ice.ice_servers()
    clock.now = T0 + 1200 - 300 - 1
    assert await ice.ice_servers() == expected(1)
    clock.now = T0 + 1200 - 300
    assert await ice.ice_servers() == expected(2)


async def test_concurrent_callers_share_one_request() -> None:
    http = FakeTwilioHttp(ok(1))
    http.gate = threading.Event()
    ice = twilio(http, Clock())
    calls = [asyncio.create_task(ice.ice_servers()) for _ in range(8)]
    assert await asyncio.to_thread(http.entered.wait, 5)
    await asyncio.sleep(0.05)  # let every caller queue behind the one minting
    assert not any(c.done() for c in calls)
    http.gate.set()
    results = await asyncio.gather(*calls)
    assert len(http.requests) == 1
    assert all(r == expected(1) for r in results)


# --- twilio: failures -------------------------------------------------------------

FAILURES: list[Response | Exception] = [
    Response(
        401,
        json.dumps(
            {
                "code": 20003,
                "message": "Authenticate",
                "more_info": "https://www.twilio.com/docs/errors/20003",
                "status": 401,
            }
        ),
    ),
    Response(503, "<html>Service Unavailable</html>"),
    requests.exceptions.ConnectionError(f"Max retries exceeded with url {TOKENS_URL}"),
    requests.exceptions.ReadTimeout("read timed out"),
    Response(201, "{not json"),
    Response(201, json.dumps({"account_sid": SID, "ice_servers": [], "ttl": "3600"})),
]


@pytest.mark.parametrize("failure", FAILURES, ids=lambda f: type(f).__name__ + repr(f)[:20])
async def test_failure_with_nothing_cached_serves_the_fallback(
    failure: Response | Exception, log_lines: io.StringIO
) -> None:
    http = FakeTwilioHttp(failure)
    assert await twilio(http, Clock()).ice_servers() == STATIC
    assert len(http.requests) == 1
    (warning,) = [e for e in events(log_lines) if e["event"] == "ice.twilio_failed"]
    assert warning["level"] == "warning" and warning["serving"] == "fallback"


async def test_failure_serves_the_cache_until_it_expires_then_the_fallback(
    log_lines: io.StringIO,
) -> None:
    clock = Clock()
    http = FakeTwilioHttp(ok(1), Response(500, '{"message": "boom", "code": 20500}'))
    ice = twilio(http, clock, retry_after_s=30)
    assert await ice.ice_servers() == expected(1)
    clock.now = T0 + 3600 - 200  # inside the margin, not yet expired
    assert await ice.ice_servers() == expected(1)
    assert len(http.requests) == 2
    clock.now = T0 + 3600 + 1  # expired, and past the retry pause
    assert await ice.ice_servers() == STATIC
    assert len(http.requests) == 3
    failed = [e for e in events(log_lines) if e["event"] == "ice.twilio_failed"]
    assert [(e["serving"], e["status"], e["twilio_code"]) for e in failed] == [
        ("cached", 500, 20500),
        ("fallback", 500, 20500),
    ]


async def test_no_fallback_configured_serves_an_empty_list() -> None:
    ice = TwilioIce(SID, TOKEN, http_client=FakeTwilioHttp(Response(503, "")), clock=Clock())
    assert await ice.ice_servers() == []


async def test_after_a_failure_twilio_is_not_asked_again_until_retry_after() -> None:
    clock = Clock()
    http = FakeTwilioHttp(Response(503, ""), Response(503, ""), ok(2))
    ice = twilio(http, clock, retry_after_s=30)
    assert await ice.ice_servers() == STATIC
    clock.now = T0 + 29
    assert await ice.ice_servers() == STATIC
    assert len(http.requests) == 1
    clock.now = T0 + 30
    assert await ice.ice_servers() == STATIC
    clock.now = T0 + 60
    assert await ice.ice_servers() == expected(2)
    assert len(http.requests) == 3


async def test_concurrent_callers_share_one_failed_request() -> None:
    http = FakeTwilioHttp(requests.exceptions.ConnectionError("refused"))
    http.gate = threading.Event()
    ice = twilio(http, Clock(), retry_after_s=0)
    calls = [asyncio.create_task(ice.ice_servers()) for _ in range(5)]
    assert await asyncio.to_thread(http.entered.wait, 5)
    await asyncio.sleep(0.05)
    http.gate.set()
    assert await asyncio.gather(*calls) == [STATIC] * 5
    assert len(http.requests) == 1


async def test_a_hung_request_times_out_to_the_fallback() -> None:
    http = FakeTwilioHttp(ok(1))
    http.gate = threading.Event()
    ice = twilio(http, Clock(), timeout_s=0.2)
    started = time.monotonic()
    try:
        assert await ice.ice_servers() == STATIC
        assert time.monotonic() - started < 5
    finally:
        http.gate.set()  # let the worker thread finish


async def test_credentials_never_reach_the_logs(log_lines: io.StringIO) -> None:
    # A transport error whose text carries every secret: only its kind is logged.
    leaky = requests.exceptions.ConnectionError(f"https://{SID}:{TOKEN}@api.twilio.com turn-cred")
    clock = Clock()
    http = FakeTwilioHttp(ok(1), leaky, ok(2))
    ice = twilio(http, clock, retry_after_s=0)
    await ice.ice_servers()
    clock.now = T0 + 3400
    await ice.ice_servers()
    clock.now = T0 + 3401
    await ice.ice_servers()
    text = log_lines.getvalue()
    names = [e["event"] for e in events(log_lines)]
    assert names.count("ice.twilio_minted") == 2 and names.count("ice.twilio_failed") == 1
    for secret in (TOKEN, SID, "turn-user-", "turn-cred-", "Zx8mK1lTFJW3NVg"):
        assert secret not in text
    failed = next(e for e in events(log_lines) if e["event"] == "ice.twilio_failed")
    assert failed["error"] == "ConnectionError"


# --- the library's own HTTP client, with requests' transport stubbed ----------------


class _Sent:
    def __init__(self) -> None:
        self.requests: list[requests.PreparedRequest] = []
        self.kwargs: list[dict[str, Any]] = []


@pytest.fixture
def requests_send(monkeypatch: pytest.MonkeyPatch) -> _Sent:
    """Replace ``requests.Session.send`` (below twilio's ``TwilioHttpClient``)."""
    sent = _Sent()

    def send(
        _self: requests.Session, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        sent.requests.append(request)
        sent.kwargs.append(kwargs)
        response = requests.Response()
        response.status_code = 201
        response._content = token_json(1).encode()
        response.headers["Content-Type"] = "application/json"
        response.url = str(request.url)
        return response

    monkeypatch.setattr(requests.Session, "send", send)
    return sent


async def test_default_client_sends_basic_auth_with_a_timeout_and_logs_no_url(
    requests_send: _Sent, log_lines: io.StringIO
) -> None:
    ice = TwilioIce(SID, TOKEN, 3600, clock=Clock(), timeout_s=7)
    assert await ice.ice_servers() == expected(1)
    (req,) = requests_send.requests
    assert req.method == "POST" and req.url == TOKENS_URL
    assert req.body == "Ttl=3600"
    basic = base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    assert req.headers["Authorization"] == f"Basic {basic}"
    assert requests_send.kwargs[0]["timeout"] == 7
    # twilio's client logs each request's URL at INFO; ours stays quiet there.
    assert SID not in log_lines.getvalue()


async def test_make_provider_picks_twilio_with_the_static_list_as_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = make_provider(STATIC, SID, TOKEN, 3600)
    assert isinstance(provider, TwilioIce)

    def down(_self: requests.Session, _req: requests.PreparedRequest, **_: Any) -> None:
        raise requests.exceptions.ConnectionError("down")

    monkeypatch.setattr(requests.Session, "send", down)
    assert await provider.ice_servers() == STATIC


async def test_make_provider_without_twilio_is_static() -> None:
    for sid, token in ((None, None), ("", "")):
        provider = make_provider(STATIC, sid, token, 3600)
        assert isinstance(provider, StaticIce)
        assert await provider.ice_servers() == STATIC


def test_make_provider_refuses_half_a_twilio_configuration_without_naming_it() -> None:
    for sid, token in ((SID, None), (None, TOKEN), (SID, "")):
        with pytest.raises(ValueError) as err:
            make_provider(STATIC, sid, token, 3600)
        assert SID not in str(err.value) and TOKEN not in str(err.value)


def test_make_provider_fits_the_margin_to_a_short_ttl() -> None:
    assert isinstance(make_provider(STATIC, SID, TOKEN, 120), TwilioIce)


@pytest.mark.parametrize(
    "kw",
    [
        {"ttl_s": 0},
        {"refresh_margin_s": 3600},
        {"refresh_margin_s": -1},
        {"timeout_s": 0},
        {"retry_after_s": -1},
    ],
)
def test_twilio_refuses_settings_that_would_never_cache(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        TwilioIce(SID, TOKEN, **{"ttl_s": 3600, **kw})


def test_repr_names_no_credential() -> None:
    ice = TwilioIce(SID, TOKEN, http_client=FakeTwilioHttp(ok(1)))
    assert SID not in repr(ice) and TOKEN not in repr(ice)
