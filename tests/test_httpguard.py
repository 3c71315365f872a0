"""Slow clients cannot hold the server (dispatch/httpguard.py), over real sockets.

A real uvicorn server runs the service's config (``cli.uvicorn_config``) on a
free loopback port; the clients are raw TCP sockets that send half a request,
or dribble it a byte at a time, while a well-behaved client is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from integration.harness import free_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect

from dispatch import cli
from dispatch.settings import Settings

SECRET = "httpguard-test-secret-" + "x" * 32
DATA_KEY = "A" * 43 + "="


async def _healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def _echo_body(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(len(await request.body())))


async def _ws(ws: WebSocket) -> None:
    await ws.accept()
    with contextlib.suppress(Exception):
        while True:
            await ws.send_text(await ws.receive_text())


@contextlib.asynccontextmanager
async def _server(**overrides: Any) -> AsyncIterator[str]:
    app = Starlette(
        routes=[
            Route("/healthz", _healthz),
            Route("/body", _echo_body, methods=["POST"]),
            WebSocketRoute("/ws", _ws),
        ]
    )
    settings = Settings(secret=SECRET, data_key=DATA_KEY, port=free_port(), **overrides)
    config = cli.uvicorn_config(app, settings)
    config.lifespan = "off"
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(250):
            if server.started:
                break
            await asyncio.sleep(0.02)
        assert server.started
        yield f"127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def _open(base: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = base.split(":")
    return await asyncio.open_connection(host, int(port))


async def _closed_within(reader: asyncio.StreamReader, limit_s: float) -> tuple[float, bytes]:
    """Read until the server closes; how long it took and what it said."""
    start = time.monotonic()
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while True:
            chunk = await asyncio.wait_for(reader.read(4096), limit_s)
            if not chunk:
                break
            data += chunk
    return time.monotonic() - start, data


def _error_of(data: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    error: dict[str, Any] = json.loads(body)["error"]
    return status, error


async def test_half_sent_requests_are_closed_while_others_are_served() -> None:
    async with _server(http_read_timeout_s=0.5) as base:
        half_open = []
        for _ in range(200):
            reader, writer = await _open(base)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            half_open.append((reader, writer))
        # Everyone else is served meanwhile, promptly.
        async with httpx.AsyncClient() as http:
            t0 = time.monotonic()
            r = await http.get(f"http://{base}/healthz")
            assert r.text == "ok" and time.monotonic() - t0 < 0.4
        took = await asyncio.gather(*(_closed_within(r, 5.0) for r, _ in half_open))
        for seconds, data in took:
            assert seconds < 2.0  # 0.5 s deadline, plus slack for 200 sockets on a busy machine
            status, error = _error_of(data)
            assert (status, error["code"]) == (408, "request_timeout")
        for _, writer in half_open:
            writer.close()


async def test_a_dribbled_request_does_not_extend_its_deadline() -> None:
    async with _server(http_read_timeout_s=0.6) as base:
        reader, writer = await _open(base)

        async def dribble() -> None:
            with contextlib.suppress(ConnectionError):
                for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.05)

        sender = asyncio.create_task(dribble())
        seconds, data = await _closed_within(reader, 5.0)
        sender.cancel()
        assert seconds < 1.5  # without the guard every byte re-armed uvicorn's timer
        assert _error_of(data)[0] == 408
        writer.close()


async def test_a_slow_body_is_cut_and_a_whole_one_served() -> None:
    async with _server(http_read_timeout_s=0.5) as base:
        reader, writer = await _open(base)
        writer.write(b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        seconds, _ = await _closed_within(reader, 5.0)
        assert seconds < 2.0
        writer.close()
        async with httpx.AsyncClient() as http:
            assert (await http.post(f"http://{base}/body", content=b"x" * 100)).text == "100"


async def test_keep_alive_requests_and_websockets_outlive_the_read_deadline() -> None:
    async with _server(http_read_timeout_s=0.3, http_keepalive_s=5.0) as base:
        async with httpx.AsyncClient() as http:
            for _ in range(3):  # one connection, requests spread past the deadline
                assert (await http.get(f"http://{base}/healthz")).text == "ok"
                await asyncio.sleep(0.2)
        async with connect(f"ws://{base}/ws") as ws:
            await asyncio.sleep(0.8)
            await ws.send("still here")
            assert await ws.recv() == "still here"


async def test_an_idle_kept_alive_connection_is_closed_after_the_keepalive() -> None:
    async with _server(http_keepalive_s=0.3) as base:
        reader, writer = await _open(base)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        seconds, data = await _closed_within(reader, 5.0)
        assert data.startswith(b"HTTP/1.1 200") and seconds < 1.5
        writer.close()


async def test_connections_over_the_cap_get_503_and_the_cap_frees_up() -> None:
    async with _server(max_connections=20, http_read_timeout_s=30.0) as base:
        held = [await _open(base) for _ in range(20)]
        for _, writer in held:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
        reader, writer = await _open(base)
        _, data = await _closed_within(reader, 5.0)
        status, error = _error_of(data)
        assert (status, error["code"]) == (503, "unavailable")
        writer.close()
        for _, w in held:
            w.close()
        for _ in range(100):  # the server notices the closes
            async with httpx.AsyncClient() as http:
                if (await http.get(f"http://{base}/healthz")).status_code == 200:
                    break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the cap never freed up after the held connections closed")


def test_serve_uses_the_guarded_protocol_with_the_settings() -> None:
    settings = Settings(
        secret=SECRET,
        data_key=DATA_KEY,
        http_read_timeout_s=3.0,
        http_keepalive_s=2.0,
        max_connections=7,
    )
    config = cli.uvicorn_config(Starlette(), settings)
    assert config.timeout_keep_alive == 2.0
    assert isinstance(config.http, type) and config.http.__name__ == "GuardedHttpToolsProtocol"
