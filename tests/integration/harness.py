"""Harness for integration tests: real ``dispatch serve`` processes, real clients.

- :class:`ServerProcess` runs ``dispatch serve`` as a subprocess on a free
  127.0.0.1 port with the test secret, a Fernet data key, the test Redis and
  short clocks; it waits (bounded) for ``GET /healthz``, writes the process's
  output to a log file (:meth:`ServerProcess.log_tail` for failures), and can
  be killed (SIGKILL, a crash) or stopped (SIGTERM, bounded, then SIGKILL).
- :class:`WsClient` wraps a ``websockets`` asyncio client connection. A
  background reader drains the socket into a local queue (so the server never
  sees a slow consumer because a test is busy elsewhere); :meth:`WsClient.expect`
  consumes frames of one type, keeping the ones it passes over (``skipped``,
  and a backlog that later ``expect`` calls search first).
- :class:`Cluster` is one service under test: its servers, tokens, HTTP
  helpers and every client it opened, all closed by :meth:`Cluster.aclose`.

Every wait is bounded; nothing here can hang a test past its timeout.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final

import httpx
import msgpack
from cryptography.fernet import Fernet
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from core.identity import mint

Frame = dict[str, Any]
Predicate = Callable[[Frame], bool]

JSON: Final = "qc.v1.json"
MSGPACK: Final = "qc.v1.msgpack"

#: The HS256 key every server of a test cluster verifies tokens with.
SECRET: Final = "integration-tests-secret-0123456789abcdef"
#: One Fernet key per test run, shared by every server (PROTOCOL.md §1).
DATA_KEY: Final = Fernet.generate_key().decode()

#: Short clocks for every server (DISPATCH_<FIELD>); a test overrides what it needs.
FAST_SETTINGS: Final[Mapping[str, object]] = {
    "claim_confirm_timeout_s": 30.0,
    "request_max_wait_s": 60.0,
    "reconnect_grace_s": 5.0,
    "timer_tick_s": 0.05,
    "heartbeat_s": 0.3,
    "server_dead_after_s": 1.5,
    "stats_interval_s": 1.0,
    "log_level": "info",
}

#: A profile that may take :data:`DEFAULT_REQUEST`.
DEFAULT_PROFILE: Final[Mapping[str, object]] = {
    "bio": "integration test therapist",
    "regions": ["GB-ENG"],
    "languages": ["en"],
    "topics": ["anxiety", "couples"],
    "works_with_minors": False,
}
DEFAULT_REQUEST: Final[Mapping[str, object]] = {
    "region": "GB-ENG",
    "language": "en",
    "topics": ["anxiety"],
    "notes": "integration test request",
}

START_TIMEOUT_S: Final = 20.0
STOP_TIMEOUT_S: Final = 8.0
WS_OPEN_TIMEOUT_S: Final = 5.0
HTTP_TIMEOUT_S: Final = 10.0


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def dispatch_executable() -> Path:
    """The ``dispatch`` console script of the running virtualenv."""
    beside = Path(sys.executable).parent / "dispatch"
    return beside if beside.exists() else repo_root() / ".venv" / "bin" / "dispatch"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_asgi(app: Any) -> AsyncIterator[str]:
    """Run ``app`` (a stand-in for an outside service: Twilio, Stripe) with
    uvicorn on a free 127.0.0.1 port in this event loop; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    task = asyncio.create_task(server.serve())
    for _ in range(250):
        if server.started or task.done():
            break
        await asyncio.sleep(0.02)
    assert server.started, "the stand-in did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the kernel SIGKILLs the server if pytest itself dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def token(role: str, sub: str, name: str | None = None, ttl_s: float = 3600) -> str:
    """A token signed with the cluster's :data:`SECRET`."""
    return mint(SECRET, role, sub, name=name, ttl_s=ttl_s)


def about(request_id: str) -> Predicate:
    """A predicate: the frame concerns request ``request_id``."""

    def check(frame: Frame) -> bool:
        req = frame.get("request")
        rid = req.get("id") if isinstance(req, dict) else frame.get("request_id")
        return bool(rid == request_id)

    return check


def with_ref(ref: str) -> Predicate:
    """A predicate: the frame echoes ``ref``."""

    def check(frame: Frame) -> bool:
        return bool(frame.get("ref") == ref)

    return check


def _summary(frame: Frame) -> str:
    """A frame for a failure message: its type and ids, never free text."""
    keys = ("code", "reason", "request_id", "ref")
    parts = [f"{k}={frame[k]!r}" for k in keys if k in frame]
    req = frame.get("request")
    if isinstance(req, dict):
        parts.append(f"request={req.get('id')!r}/{req.get('state')!r}/{req.get('reason')!r}")
    return f"{frame.get('type')}({', '.join(parts)})"


# -- server processes ------------------------------------------------------------------------


class ServerProcess:
    """One ``dispatch serve`` process on a free port."""

    def __init__(
        self,
        name: str,
        redis_url: str,
        workdir: Path,
        settings: Mapping[str, object] | None = None,
    ) -> None:
        self.name = name
        self.host = "127.0.0.1"
        self.port = free_port()
        self.workdir = workdir
        self.log_path = workdir / f"server-{name}.log"
        merged = {**FAST_SETTINGS, **(settings or {})}
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
        env.update(
            {
                "DISPATCH_SECRET": SECRET,
                "DISPATCH_DATA_KEY": DATA_KEY,
                "DISPATCH_REDIS_URL": redis_url,
                "DISPATCH_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'dispatch.db'}",
                "DISPATCH_SERVER_ID": f"it-{name}-{self.port}",
                "PYTHONUNBUFFERED": "1",
            }
        )
        for field, value in merged.items():
            env["DISPATCH_" + field.upper()] = _env_value(value)
        self.env = env
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/v1/ws"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def spawn(self) -> None:
        """Start the process (it is not ready yet: see :meth:`wait_ready`)."""
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        args = [
            str(dispatch_executable()),
            "serve",
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        self._proc = subprocess.Popen(
            args,
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )

    async def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until ``GET /healthz`` answers 200; raise with the log tail if not."""
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=1.0, trust_env=False) as http:
            while time.monotonic() < deadline:
                if not self.running:
                    raise RuntimeError(
                        f"server {self.name} exited during start-up "
                        f"(code {self.returncode}):\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    resp = await http.get(self.url + "/healthz")
                    if resp.status_code == 200:
                        return
                await asyncio.sleep(0.05)
        self.kill()
        raise RuntimeError(
            f"server {self.name} did not answer /healthz within {timeout_s}s:\n{self.log_tail()}"
        )

    async def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        self.spawn()
        await self.wait_ready(timeout_s)

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def pause(self) -> None:
        """SIGSTOP: the process freezes (a long GC pause, a stalled VM); its
        sockets stay open."""
        if self.running and self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self.running and self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: a crash. Nothing runs in the process after this."""
        self._end(signal.SIGKILL)

    def terminate(self) -> None:
        """Send SIGTERM without waiting (see :meth:`stop`)."""
        if self.running and self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)
            self._proc.terminate()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM and a bounded wait for a clean exit, then SIGKILL."""
        self._end(signal.SIGTERM, timeout_s)

    def _end(self, sig: signal.Signals, timeout_s: float = STOP_TIMEOUT_S) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a paused process must run to exit cleanly
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


# -- websocket clients -----------------------------------------------------------------------


class Closed(AssertionError):
    """The connection closed while a test waited for a frame."""

    def __init__(self, label: str, code: int | None, detail: str = "") -> None:
        super().__init__(f"{label}: connection closed (code {code}){detail}")
        self.code = code


class WsClient:
    """One websocket connection to ``/v1/ws``, speaking JSON or MessagePack."""

    def __init__(self, conn: ClientConnection, label: str) -> None:
        self.conn = conn
        self.label = label
        self.binary = conn.subprotocol == MSGPACK
        #: Every frame received, in order, and when (``time.monotonic()``).
        self.received: list[Frame] = []
        self.received_at: list[float] = []
        #: Every frame :meth:`expect` or :meth:`no_frame_of` passed over.
        self.skipped: list[Frame] = []
        #: Whether each received message was binary (for the codec tests).
        self.message_kinds: list[str] = []
        self._backlog: collections.deque[Frame] = collections.deque()
        self._queue: asyncio.Queue[Frame | None] = asyncio.Queue()
        self._ended = False
        self._error: BaseException | None = None
        self._reader = asyncio.create_task(self._read(), name=f"ws-reader-{label}")

    @property
    def close_code(self) -> int | None:
        return self.conn.close_code

    async def _read(self) -> None:
        try:
            async for message in self.conn:
                if isinstance(message, bytes):
                    self.message_kinds.append("binary")
                    obj = msgpack.unpackb(message, raw=False)
                else:
                    self.message_kinds.append("text")
                    obj = json.loads(message)
                if not isinstance(obj, dict):
                    raise AssertionError(f"{self.label}: the server sent a non-map frame")
                self.received.append(obj)
                self.received_at.append(time.monotonic())
                self._queue.put_nowait(obj)
        except ConnectionClosed:
            pass
        except Exception as exc:  # undecodable frame from the server: fail the waiter
            self._error = exc
        finally:
            self._queue.put_nowait(None)

    # -- sending ---------------------------------------------------------------------------
    async def send(self, frame: Frame) -> None:
        """Send one frame in this connection's codec."""
        if self.binary:
            await self.conn.send(msgpack.packb(frame, use_bin_type=True))
        else:
            await self.conn.send(json.dumps(frame))

    async def send_raw(self, data: str | bytes) -> None:
        await self.conn.send(data)

    async def auth(self, tok: str, timeout: float = 5.0) -> Frame:  # noqa: ASYNC109 -- a per-frame wait, part of the API
        """Send the auth frame; returns ``welcome``."""
        await self.send({"type": "auth", "token": tok})
        return await self.expect("welcome", timeout)

    # -- receiving -------------------------------------------------------------------------
    async def _next(self, deadline: float) -> Frame:
        """The next unread frame from the socket; TimeoutError at ``deadline``."""
        if self._ended:
            raise Closed(self.label, self.close_code)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        item = await asyncio.wait_for(self._queue.get(), timeout=remaining)
        if item is None:
            self._ended = True
            if self._error is not None:
                raise AssertionError(f"{self.label}: bad frame from server: {self._error!r}")
            raise Closed(self.label, self.close_code)
        return item

    async def recv(self, timeout: float = 5.0) -> Frame:  # noqa: ASYNC109 -- a per-frame wait, part of the API
        """The next frame not yet consumed (backlog first)."""
        if self._backlog:
            return self._backlog.popleft()
        try:
            return await self._next(time.monotonic() + timeout)
        except TimeoutError:
            raise AssertionError(f"{self.label}: no frame within {timeout}s") from None

    async def expect(
        self,
        ftype: str | tuple[str, ...],
        timeout: float = 5.0,  # noqa: ASYNC109 -- a per-frame wait, part of the API
        predicate: Predicate | None = None,
    ) -> Frame:
        """The first unconsumed frame of ``ftype`` (a type or a tuple of types)
        for which ``predicate`` holds, waiting at most ``timeout`` s; other
        frames are kept in the backlog (and in ``skipped``)."""
        types = (ftype,) if isinstance(ftype, str) else ftype

        def match(f: Frame) -> bool:
            return f.get("type") in types and (predicate is None or predicate(f))

        for i, frame in enumerate(self._backlog):
            if match(frame):
                del self._backlog[i]
                return frame
        deadline = time.monotonic() + timeout
        while True:
            try:
                frame = await self._next(deadline)
            except TimeoutError:
                raise AssertionError(
                    f"{self.label}: no {ftype} frame within {timeout}s; "
                    f"unconsumed: {self.describe_backlog()}"
                ) from None
            except Closed as exc:
                detail = f" while waiting for {ftype}; unconsumed: {self.describe_backlog()}"
                raise Closed(self.label, exc.code, detail) from None
            if match(frame):
                return frame
            self._backlog.append(frame)
            self.skipped.append(frame)

    async def no_frame_of(
        self, ftype: str, within: float, predicate: Predicate | None = None
    ) -> None:
        """Assert that no frame of ``ftype`` (matching ``predicate``) arrives
        within ``within`` s (nor is already waiting unconsumed)."""

        def match(f: Frame) -> bool:
            return f.get("type") == ftype and (predicate is None or predicate(f))

        for frame in self._backlog:
            assert not match(frame), f"{self.label}: unexpected {_summary(frame)}"
        deadline = time.monotonic() + within
        while True:
            try:
                frame = await self._next(deadline)
            except (TimeoutError, Closed):
                return
            assert not match(frame), f"{self.label}: unexpected {_summary(frame)}"
            self._backlog.append(frame)
            self.skipped.append(frame)

    def unconsumed(self) -> list[Frame]:
        return list(self._backlog)

    def describe_backlog(self) -> str:
        return ", ".join(_summary(f) for f in self._backlog) or "(none)"

    async def wait_closed(self, timeout: float = 5.0) -> int | None:  # noqa: ASYNC109 -- a per-frame wait, part of the API
        """Wait for the server to close the connection; returns the close code."""
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout=timeout)
        except TimeoutError:
            raise AssertionError(f"{self.label}: still open after {timeout}s") from None
        return self.close_code

    async def close(self) -> None:
        """Close from our side (bounded) and stop the reader."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.conn.close(), timeout=3.0)
        if not self._reader.done():
            self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake (a lost network)."""
        transport = self.conn.transport
        if transport is not None:
            transport.abort()


async def open_ws(
    url: str,
    label: str,
    subprotocol: str | None = JSON,
    bearer: str | None = None,
) -> WsClient:
    """Connect to ``url``; ``bearer`` puts the token on the upgrade request."""
    headers = {"Authorization": f"Bearer {bearer}"} if bearer is not None else None
    conn = await connect(
        url,
        subprotocols=[Subprotocol(subprotocol)] if subprotocol is not None else None,
        additional_headers=headers,
        proxy=None,
        compression=None,
        open_timeout=WS_OPEN_TIMEOUT_S,
        close_timeout=2.0,
        ping_interval=None,
        max_size=None,
    )
    return WsClient(conn, label)


# -- the service under test ------------------------------------------------------------------


class Cluster:
    """Servers sharing one Redis, with helpers that remember what to close."""

    def __init__(self, servers: list[ServerProcess]) -> None:
        self.servers = servers
        self.clients: list[WsClient] = []
        self._http: dict[int, httpx.AsyncClient] = {}

    def __getitem__(self, i: int) -> ServerProcess:
        return self.servers[i]

    # -- HTTP --------------------------------------------------------------------------
    def http(self, server: ServerProcess) -> httpx.AsyncClient:
        client = self._http.get(id(server))
        if client is None or client.is_closed:
            client = httpx.AsyncClient(base_url=server.url, timeout=HTTP_TIMEOUT_S, trust_env=False)
            self._http[id(server)] = client
        return client

    async def call(
        self,
        server: ServerProcess,
        method: str,
        path: str,
        tok: str | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        hdrs = dict(headers or {})
        if tok is not None:
            hdrs["Authorization"] = f"Bearer {tok}"
        return await self.http(server).request(method, path, json=body, headers=hdrs)

    async def put_therapist(
        self,
        server: ServerProcess,
        therapist_id: str,
        operator: str = "op-1",
        **profile: object,
    ) -> dict[str, Any]:
        """Create or replace a profile (as operator ``operator``); returns it."""
        body = {"name": f"Therapist {therapist_id}", **DEFAULT_PROFILE, **profile}
        resp = await self.call(
            server, "PUT", f"/v1/therapists/{therapist_id}", token("operator", operator), body
        )
        assert resp.status_code in (200, 201), resp.text
        result: dict[str, Any] = resp.json()
        return result

    async def create_request(
        self, server: ServerProcess, client_id: str, **body: object
    ) -> dict[str, Any]:
        """``POST /v1/requests`` as ``client_id``; asserts 201, returns R.

        A client without the minimum balance (402, PROTOCOL.md §6) is topped
        up by an operator once and the call retried: these tests are about
        dispatch, not money."""
        call = (server, "POST", "/v1/requests", token("client", client_id))
        resp = await self.call(*call, {**DEFAULT_REQUEST, **body})
        if resp.status_code == 402:
            assert await self.fund(server, client_id), resp.text
            resp = await self.call(*call, {**DEFAULT_REQUEST, **body})
        assert resp.status_code == 201, resp.text
        req: dict[str, Any] = resp.json()["request"]
        return req

    async def fund(self, server: ServerProcess, client_id: str) -> bool:
        """Top up ``client_id``'s wallet (as an operator) well over the minimum
        balance; False when this version of the service has no wallet yet."""
        topup = {
            "client_id": client_id,
            "amount_minor": 1_000_000,
            "reference": f"it-{client_id}-{time.monotonic_ns()}",
        }
        resp = await self.call(
            server, "POST", "/v1/wallet/topups", token("operator", "op-wallet"), topup
        )
        if resp.status_code in (404, 405):
            return False
        assert resp.status_code in (200, 201), resp.text
        return True

    async def get_request(
        self, server: ServerProcess, request_id: str, as_user: tuple[str, str]
    ) -> httpx.Response:
        role, sub = as_user
        return await self.call(server, "GET", f"/v1/requests/{request_id}", token(role, sub))

    # -- websockets --------------------------------------------------------------------
    async def ws(
        self,
        server: ServerProcess,
        label: str,
        subprotocol: str | None = JSON,
        bearer: str | None = None,
    ) -> WsClient:
        client = await open_ws(server.ws_url, label, subprotocol, bearer)
        self.clients.append(client)
        return client

    async def therapist(
        self, server: ServerProcess, therapist_id: str, available: bool = True
    ) -> WsClient:
        """A signed-in therapist console (snapshot read, status set)."""
        ws = await self.ws(server, f"{therapist_id}@{server.name}")
        welcome = await ws.auth(token("therapist", therapist_id))
        assert welcome["user"] == {"id": therapist_id, "role": "therapist"}
        await ws.expect("pool.snapshot")
        if available:
            await ws.send({"type": "status", "available": True})
            ok = await ws.expect("status.ok")
            assert ok["available"] is True
        return ws

    async def client(self, server: ServerProcess, client_id: str) -> WsClient:
        ws = await self.ws(server, f"{client_id}@{server.name}")
        welcome = await ws.auth(token("client", client_id))
        assert welcome["user"] == {"id": client_id, "role": "client"}
        return ws

    async def operator(self, server: ServerProcess, operator_id: str) -> WsClient:
        ws = await self.ws(server, f"{operator_id}@{server.name}")
        welcome = await ws.auth(token("operator", operator_id))
        assert welcome["user"] == {"id": operator_id, "role": "operator"}
        return ws

    async def wait_ready(self, server: ServerProcess, timeout_s: float = 20.0) -> None:
        """Poll ``GET /readyz`` until 200 (bounded)."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                resp = await self.http(server).get("/readyz", timeout=2.0)
                if resp.status_code == 200:
                    return
                last = f"{resp.status_code} {resp.text[:200]}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            await asyncio.sleep(0.1)
        raise AssertionError(f"{server.name}: /readyz not 200 within {timeout_s}s ({last})")

    # -- teardown ----------------------------------------------------------------------
    async def aclose(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)
        for http in self._http.values():
            with contextlib.suppress(Exception):
                await http.aclose()
        for server in self.servers:
            server.terminate()
        await asyncio.gather(*(asyncio.to_thread(s.stop) for s in self.servers))


#: The ``start_cluster`` fixture: ``await start_cluster(n=2, **settings)``.
StartCluster = Callable[..., Awaitable[Cluster]]


# -- sessions (appended for test_sessions.py and test_webrtc.py) -----------------------------

#: The terms version a client accepts an offer with in these tests.
TERMS_VERSION: Final = "2024-05-01"


class Matched:
    """A session just opened: ``session`` is S from the client's ``session.ready``."""

    def __init__(
        self, session: Frame, client: WsClient, therapist: WsClient, request_id: str
    ) -> None:
        self.session = session
        self.client = client
        self.therapist = therapist
        self.request_id = request_id

    @property
    def id(self) -> str:
        return str(self.session["id"])


async def open_session(
    cluster: Cluster,
    client_at: ServerProcess,
    therapist_at: ServerProcess,
    client_id: str,
    therapist_id: str,
    *,
    client_name: str | None = None,
    therapist_name: str | None = None,
    therapist: WsClient | None = None,
) -> Matched:
    """Match ``client_id`` (console and request on ``client_at``, its tokens
    carrying ``client_name``) with ``therapist_id`` (profile named
    ``therapist_name``, console on ``therapist_at`` unless an available one is
    given): request, claim, accept; both ``session.ready`` frames read."""
    profile = {"name": therapist_name} if therapist_name is not None else {}
    await cluster.put_therapist(therapist_at, therapist_id, **profile)
    if therapist is None:
        therapist = await cluster.therapist(therapist_at, therapist_id)
    client = await cluster.ws(client_at, f"{client_id}@{client_at.name}")
    tok = token("client", client_id, name=client_name)
    welcome = await client.auth(tok)
    assert welcome["user"] == {"id": client_id, "role": "client"}

    resp = await cluster.call(client_at, "POST", "/v1/requests", tok, dict(DEFAULT_REQUEST))
    if resp.status_code == 402:
        assert await cluster.fund(client_at, client_id), resp.text
        resp = await cluster.call(client_at, "POST", "/v1/requests", tok, dict(DEFAULT_REQUEST))
    assert resp.status_code == 201, resp.text
    rid = str(resp.json()["request"]["id"])

    await therapist.send({"type": "claim", "request_id": rid, "ref": f"claim-{rid}"})
    ok = await therapist.expect(("claim.ok", "error"), 10, with_ref(f"claim-{rid}"))
    assert ok["type"] == "claim.ok", _summary(ok)
    await client.expect("request.offer", 10, about(rid))
    await client.send(
        {"type": "offer.accept", "request_id": rid, "terms_version": TERMS_VERSION, "ref": "acc"}
    )
    ready_c = await client.expect("session.ready", 10)
    ready_t = await therapist.expect("session.ready", 10)
    assert ready_c["session"]["id"] == ready_t["session"]["id"]
    assert ready_c["session"]["request_id"] == rid
    return Matched(ready_c["session"], client, therapist, rid)


def database_files(server: ServerProcess) -> list[Path]:
    """The SQLite files every server of a cluster shares (``dispatch.db`` and,
    in WAL mode, its ``-wal`` and ``-shm`` companions)."""
    return sorted(server.workdir.glob("dispatch.db*"))
