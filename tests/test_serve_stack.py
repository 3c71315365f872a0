"""What ``dispatch serve`` runs (``cli.run``): the service's app with
``/v1/ws`` served ahead of Starlette's stack (``app.websocket_first``), under
the service's uvicorn config, over real sockets: HTTP goes through the app,
the websocket speaks the protocol, and an unknown path still gets the app's
answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import uvicorn
from integration.harness import free_port
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from core import identity
from core.identity import Role
from dispatch import cli
from dispatch.app import create_app, websocket_first
from dispatch.settings import load_settings
from dispatch.wsproto import _Flag, _Inbox


@pytest_asyncio.fixture
async def served(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str]]:
    overrides = {
        "dev": True,
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'dispatch.db'}",
        "port": free_port(),
        **getattr(request, "param", {}),
    }
    settings = load_settings(overrides, {})
    server = uvicorn.Server(cli.uvicorn_config(websocket_first(create_app(settings)), settings))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.02)
        assert server.started
        yield f"127.0.0.1:{settings.port}", settings.secret
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)


async def test_the_served_stack_answers_http_and_the_websocket(
    served: tuple[str, str],
) -> None:
    base, secret = served
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"http://{base}/healthz")).status_code == 200
        missing = await http.get(f"http://{base}/no/such/page")
        assert missing.status_code == 404
    token = identity.mint(secret, Role.CLIENT, "c-served", ttl_s=600)
    async with connect(f"ws://{base}/v1/ws", subprotocols=["qc.v1.json"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "qc.v1.json"
        await ws.send(json.dumps({"type": "auth", "token": token}))
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome" and welcome["user"]["id"] == "c-served"
        await ws.send(json.dumps({"type": "ping", "ref": "p1"}))
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "pong":
                break
        assert frame["ref"] == "p1"
    # Another websocket path is the app's: its router refuses the upgrade.
    with pytest.raises(InvalidStatus):
        async with connect(f"ws://{base}/v1/other"):
            pass


@pytest.mark.parametrize(
    ("served", "negotiated"),
    [({}, False), ({"ws_compression": True}, True)],
    ids=["default-off", "DISPATCH_WS_COMPRESSION"],
    indirect=["served"],
)
async def test_compression_only_when_asked_for(served: tuple[str, str], negotiated: bool) -> None:
    """A client offering permessage-deflate (as every browser does) gets it
    only with DISPATCH_WS_COMPRESSION; the frames read alike either way."""
    base, secret = served
    token = identity.mint(secret, Role.THERAPIST, "t-served", ttl_s=600)
    url = f"ws://{base}/v1/ws"
    async with connect(url, subprotocols=["qc.v1.json"], compression="deflate") as ws:  # type: ignore[list-item]
        assert ws.response is not None
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions") or ""
        assert ("permessage-deflate" in extensions) is negotiated
        await ws.send(json.dumps({"type": "auth", "token": token}))
        assert json.loads(await ws.recv())["type"] == "welcome"


# -- the lighter protocol's stand-ins (dispatch.wsproto) ------------------------------


async def test_the_inbox_is_fifo_and_wakes_its_reader() -> None:
    inbox = _Inbox()
    assert inbox.empty() and inbox.qsize() == 0
    reader = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    assert not reader.done()
    inbox.put_nowait("a")
    inbox.put_nowait("b")
    assert await reader == "a"
    assert inbox.qsize() == 1 and await inbox.get() == "b" and inbox.empty()
    # A reader that gives up leaves nothing behind; the next one gets the event.
    gone = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    inbox.put_nowait("c")
    assert await asyncio.wait_for(inbox.get(), 1) == "c"


async def test_the_flag_waits_only_while_clear() -> None:
    flag = _Flag()
    assert not flag.is_set()
    waiters = [asyncio.ensure_future(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    flag.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    # Set: wait() completes without suspending (a write in the sender's own step).
    step = flag.wait()
    with pytest.raises(StopIteration):
        step.send(None)
    flag.clear()
    assert not flag.is_set()
    late = asyncio.ensure_future(flag.wait())
    await asyncio.sleep(0)
    assert not late.done()
    flag.set()
    assert await late
