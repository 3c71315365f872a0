"""The ``dispatch`` command: ``token`` and ``serve`` (its configuration and banner)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import uvicorn
from cryptography.fernet import Fernet
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from core import identity as tokens
from core import logs
from core.errors import Unauthorized
from core.identity import Role, User, verify
from dispatch import cli, demo
from dispatch.settings import Settings
from dispatch.wsproto import SEND_NOW, LeanWebSocketProtocol
from signaling.crypto import Cipher

# Never starting with "-": argparse would read "--secret -x..." as a missing value
# (one run in 64 failed so).
SECRET = "k" + secrets.token_urlsafe(32)
DATA_KEY = Fernet.generate_key().decode()
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment without any DISPATCH_* variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    return {**env, **extra}


@pytest.fixture
def no_dispatch_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("DISPATCH_"):
            monkeypatch.delenv(key)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)
    structlog.reset_defaults()
    logs._configured = False


# -- token ---------------------------------------------------------------------


def test_token_prints_a_verifiable_token(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["token", "--role", "therapist", "--sub", "t-1", "--name", "Dr T", "--ttl", "120"]
    assert cli.main([*argv, "--secret", SECRET]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    token = out.strip()
    assert "\n" not in token
    assert verify(SECRET, token) == User(id="t-1", role=Role.THERAPIST, name="Dr T")


def test_token_takes_the_secret_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DISPATCH_SECRET", SECRET)
    assert cli.main(["token", "--role", "operator", "--sub", "ops"]) == 0
    assert verify(SECRET, capsys.readouterr().out.strip()).role is Role.OPERATOR


def test_token_without_secret_fails_cleanly(
    no_dispatch_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["token", "--role", "client", "--sub", "alice"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "DISPATCH_SECRET" in err and "--secret" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sub", "no spaces", "--secret", SECRET], "sub must be"),
        (["--sub", "alice", "--secret", "short"], "at least 32 bytes"),
        (["--sub", "alice", "--ttl", "0", "--secret", SECRET], "ttl"),
    ],
)
def test_token_bad_input_exits_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["token", "--role", "client", *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and message in err


def test_token_unknown_role_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["token", "--role", "admin", "--sub", "a", "--secret", SECRET])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_console_script_and_python_m() -> None:
    for cmd in ([str(BIN / "dispatch")], [sys.executable, "-m", "dispatch"]):
        done = subprocess.run(
            [*cmd, "token", "--role", "client", "--sub", "alice", "--name", "Alice"],
            env=clean_env(DISPATCH_SECRET=SECRET),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert verify(SECRET, done.stdout.strip()) == User("alice", Role.CLIENT, "Alice")


# -- serve: refusing to start --------------------------------------------------


def test_serve_without_secret_exits_2() -> None:
    done = subprocess.run(
        [str(BIN / "dispatch"), "serve", "--port", str(_free_port())],
        env=clean_env(DISPATCH_DATA_KEY=DATA_KEY),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "DISPATCH_SECRET is not set" in done.stderr and "--dev" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_without_data_key_exits_2(
    no_dispatch_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DISPATCH_SECRET", SECRET)
    assert cli.main(["serve"]) == 2
    assert "DISPATCH_DATA_KEY is not set" in capsys.readouterr().err


def test_serve_bad_flag_value_exits_2(
    no_dispatch_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["serve", "--dev", "--redis-url", "http://x"]) == 2
    assert "DISPATCH_REDIS_URL" in capsys.readouterr().err


# -- serve: what it runs --------------------------------------------------------


class _Ran:
    config: Any = None
    settings: Settings | None = None
    wrapped: Any = None


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch, restore_logging: None) -> _Ran:
    """Stand in for the app module and for uvicorn's blocking run()."""
    ran = _Ran()
    app = Starlette()

    def create_app(settings: Settings) -> Starlette:
        ran.settings = settings
        return app

    def websocket_first(app: Starlette) -> Starlette:
        ran.wrapped = app
        return app

    module = types.ModuleType("dispatch.app")
    module.create_app = create_app  # type: ignore[attr-defined]
    module.websocket_first = websocket_first  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dispatch.app", module)

    def run(self: uvicorn.Server, sockets: Any = None) -> None:
        ran.config = self.config

    monkeypatch.setattr(uvicorn.Server, "run", run)
    return ran


def test_serve_dev_demo_prints_secret_and_demo_tokens(
    no_dispatch_env: None,
    fake_run: _Ran,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # where --dev keeps its keys
    assert cli.main(["serve", "--dev", "--demo", "--host", "0.0.0.0", "--port", "8123"]) == 0
    out = capsys.readouterr().out
    settings = fake_run.settings
    assert settings is not None and settings.dev and settings.demo
    assert f"DISPATCH_SECRET={settings.secret}" in out
    assert "made now and kept in .dispatch-dev.json" in out
    assert "ws://127.0.0.1:8123/v1/ws" in out and "qc.v1.json" in out and "qc.v1.msgpack" in out
    found: dict[str, User] = {}
    for line in out.splitlines():
        m = re.fullmatch(r"\s+(client|therapist|operator)\s+(\S+)\s+(\S+\.\S+\.\S+)", line)
        if m:
            user = verify(settings.secret, m.group(3))
            assert (user.role.value, user.id) == (m.group(1), m.group(2))
            found[user.id] = user
    expected = {p.id for p in demo.DEMO_THERAPISTS} | set(demo.DEMO_CLIENTS) | {demo.DEMO_OPERATOR}
    assert set(found) == expected
    assert found[demo.DEMO_OPERATOR].role is Role.OPERATOR
    assert found["demo-therapist-1"].name == demo.DEMO_THERAPISTS[0].name
    # The 12-hour demo tokens: valid in 11 h, expired in 13 h.
    tok = re.search(r"therapist\s+demo-therapist-1\s+(\S+)", out)
    assert tok is not None
    verify(settings.secret, tok.group(1), now=time.time() + 11 * 3600)
    with pytest.raises(Unauthorized, match="expired"):
        verify(settings.secret, tok.group(1), now=time.time() + 13 * 3600)


def test_serve_dev_keeps_its_keys_across_restarts(
    no_dispatch_env: None,
    fake_run: _Ran,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue #10: data written by one `make run` must be readable by the next."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["serve", "--dev"]) == 0
    first = fake_run.settings
    assert first is not None
    kept = tmp_path / ".dispatch-dev.json"
    assert kept.stat().st_mode & 0o777 == 0o600  # keys: the owner's alone
    assert "made now and kept" in capsys.readouterr().out
    assert cli.main(["serve", "--dev"]) == 0
    second = fake_run.settings
    assert second is not None and "kept in" in capsys.readouterr().out
    assert (second.secret, second.data_key) == (first.secret, first.data_key)
    # What the first run sealed, the second opens; a token of the first still verifies.
    sealed = Cipher.from_setting(first.data_key).encrypt("a note")
    assert Cipher.from_setting(second.data_key).decrypt(sealed) == "a note"
    verify(second.secret, tokens.mint(first.secret, "client", "c1"))
    # The environment still wins: a data key set there is used, the secret kept.
    monkeypatch.setenv("DISPATCH_DATA_KEY", DATA_KEY)
    assert cli.main(["serve", "--dev"]) == 0
    third = fake_run.settings
    assert third is not None and (third.secret, third.data_key) == (first.secret, DATA_KEY)


@pytest.mark.parametrize(
    "content", ["", "not json", "[]", '{"secret": "s"}', '{"secret": 1, "data_key": "k"}']
)
def test_serve_dev_refuses_a_broken_keys_file(
    no_dispatch_env: None,
    fake_run: _Ran,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    content: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".dispatch-dev.json").write_text(content)
    assert cli.main(["serve", "--dev"]) == 2
    err = capsys.readouterr().err
    assert ".dispatch-dev.json does not hold the development keys" in err
    assert fake_run.settings is None


def test_serve_builds_the_uvicorn_config_from_settings(
    no_dispatch_env: None,
    fake_run: _Ran,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in {
        "DISPATCH_SECRET": SECRET,
        "DISPATCH_DATA_KEY": DATA_KEY,
        "DISPATCH_PORT": "9001",
        "DISPATCH_MAX_FRAME_BYTES": "4096",
        "DISPATCH_PING_INTERVAL_S": "7",
        "DISPATCH_PING_TIMEOUT_S": "3",
    }.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["serve", "--port", "9002", "--log-level", "warning"]) == 0
    assert capsys.readouterr().out == ""  # no banner, no secret, without --dev
    config = fake_run.config
    assert (config.host, config.port) == ("127.0.0.1", 9002)  # the flag wins over the env
    assert config.ws is LeanWebSocketProtocol and config.ws_max_size == 4096
    assert fake_run.wrapped is not None  # /v1/ws ahead of Starlette's stack
    assert (config.ws_ping_interval, config.ws_ping_timeout) == (7.0, 3.0)
    assert config.log_config is None and config.lifespan == "on"
    assert fake_run.settings is not None and fake_run.settings.secret == SECRET
    assert logging.getLogger().level == logging.WARNING  # logs.configure ran


# -- the uvicorn config really serves ---------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_uvicorn_config_serves_http_and_websockets(restore_logging: None) -> None:
    async def healthz(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def echo(ws: WebSocket) -> None:
        await ws.accept(subprotocol="qc.v1.json")
        try:
            while True:
                await ws.send_text(await ws.receive_text())
        except Exception:
            return

    app = Starlette(routes=[Route("/healthz", healthz), WebSocketRoute("/v1/ws", echo)])
    settings = Settings(secret=SECRET, data_key=DATA_KEY, port=_free_port(), max_frame_bytes=1024)
    config = cli.uvicorn_config(app, settings)
    config.lifespan = "off"  # this bare app has no lifespan of its own to run
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.02)
        assert server.started
        base = f"127.0.0.1:{settings.port}"
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://{base}/healthz")).text == "ok"
        async with connect(f"ws://{base}/v1/ws", subprotocols=["qc.v1.json"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "qc.v1.json"
            await ws.send("x" * 1000)
            assert await ws.recv() == "x" * 1000
            # Past the handshake the server holds neither its request nor its response.
            held = [
                c for c in server.server_state.connections if isinstance(c, LeanWebSocketProtocol)
            ]
            assert len(held) == 1
            assert held[0].request is None and held[0].response is None
            # The app may write past the ASGI send chain, when the socket takes it at once.
            proto = held[0]
            assert proto.scope["extensions"][SEND_NOW] == proto.send_now
            proto.writable.clear()  # as when the transport's buffer is over its high-water mark
            assert not proto.send_now(b"not now", True)
            proto.writable.set()
            assert proto.send_now("h\u00e9llo".encode(), True)
            assert proto.send_now(b"\x00\x01", False)
            assert await ws.recv() == "h\u00e9llo"
            assert await ws.recv() == b"\x00\x01"
            await ws.send("y" * 2000)  # over max_frame_bytes
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1009
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
