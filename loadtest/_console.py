"""A therapist console of the load test: one websocket client that connects,
authenticates, becomes available and then records every frame it receives.

Each console records the first arrival (monotonic clock) of each
``request.new`` (keyed by the request's ``notes``, which carry the run's
unique marker, since a ``request.new`` may arrive before the ``POST`` that
created it has answered with the id) and of each ``request.gone`` (keyed by
request id), and counts duplicates, error frames and a close by the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

Frame = dict[str, Any]

NEW = "request.new"
GONE = "request.gone"


class Tally:
    """First arrivals of each kind across every console (and of each kind per
    key, under ``"<kind>:<key>"``: a request.new per marker); wakes whoever
    waits for a count to be reached, so a phase ends as soon as it is complete."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._goal: tuple[str, int] | None = None
        self._reached = asyncio.Event()

    def add(self, kind: str, key: str | None = None) -> None:
        self.counts[kind] += 1
        if key is not None:
            self.counts[f"{kind}:{key}"] += 1
        self._check()

    def set_counts(self, counts: Counter[str]) -> None:
        """Replace every count (the sums a :class:`loadtest._fleet.Fleet` gathers)."""
        self.counts = Counter(counts)
        self._check()

    def _check(self) -> None:
        if self._goal is not None and self.counts[self._goal[0]] >= self._goal[1]:
            self._reached.set()

    async def wait_for(self, kind: str, target: int, timeout_s: float) -> bool:
        """Wait until ``target`` first arrivals of ``kind``, at most ``timeout_s``;
        whether they all came."""
        self._goal = (kind, target)
        self._reached.clear()
        try:
            if self.counts[kind] < target:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._reached.wait(), timeout_s)
        finally:
            self._goal = None
        return self.counts[kind] >= target


@dataclass(eq=False)
class Console:
    """One console's identity and what it saw."""

    index: int
    user_id: str
    server: int
    tally: Tally
    #: seconds from the connect burst's start to the open socket / to ``status.ok``
    open_s: float | None = None
    ready_s: float | None = None
    #: marker (the request's notes) -> monotonic time of the first request.new
    new_at: dict[str, float] = field(default_factory=dict)
    #: request id -> monotonic time of the first request.gone
    gone_at: dict[str, float] = field(default_factory=dict)
    gone_reasons: Counter[str] = field(default_factory=Counter)
    new_duplicates: int = 0
    gone_duplicates: int = 0
    snapshot_size: int | None = None
    error_codes: Counter[str] = field(default_factory=Counter)
    closed_code: int | None = None
    closed_by_server: bool = False
    failure: str | None = None
    #: set before the run closes the socket itself, so that close is not blamed on the server
    stopping: bool = False
    ws: ClientConnection | None = None

    def on_frame(self, frame: Frame, now: float) -> None:
        kind = frame.get("type")
        if kind == NEW:
            req = frame.get("request")
            marker = req.get("notes") if isinstance(req, dict) else None
            if not isinstance(marker, str):
                self.error_codes["request.new_without_notes"] += 1
            elif marker in self.new_at:
                self.new_duplicates += 1
            else:
                self.new_at[marker] = now
                self.tally.add(NEW, marker)
        elif kind == GONE:
            rid = frame.get("request_id")
            if not isinstance(rid, str):
                self.error_codes["request.gone_without_id"] += 1
            elif rid in self.gone_at:
                self.gone_duplicates += 1
            else:
                self.gone_at[rid] = now
                self.gone_reasons[str(frame.get("reason"))] += 1
                self.tally.add(GONE)
        elif kind == "error":
            self.error_codes[str(frame.get("code"))] += 1


class Wire:
    """Frames in the negotiated subprotocol: JSON text or MessagePack binary."""

    def __init__(self, codec: str) -> None:
        self.binary = codec == "msgpack"

    def encode(self, frame: Frame) -> str | bytes:
        if self.binary:
            data: bytes = msgpack.packb(frame, use_bin_type=True)
            return data
        return json.dumps(frame, separators=(",", ":"))

    def decode(self, data: str | bytes) -> Frame:
        if self.binary:
            if not isinstance(data, bytes):
                raise ValueError("a text frame on the msgpack subprotocol")
            obj: Any = msgpack.unpackb(data, raw=False)
        else:
            obj = json.loads(data)
        if not isinstance(obj, dict):
            raise ValueError("a frame is not a map")
        return obj


async def _expect(ws: ClientConnection, wire: Wire, console: Console, kind: str) -> Frame:
    """Read frames (recording each) until one of type ``kind``; an error frame fails."""
    while True:
        frame = wire.decode(await ws.recv())
        console.on_frame(frame, time.monotonic())
        if frame.get("type") == kind:
            return frame
        if frame.get("type") == "error":
            raise RuntimeError(f"error frame {frame.get('code')!r} while waiting for {kind}")


async def run_console(
    console: Console,
    url: str,
    token: str,
    *,
    codec: str,
    compression: bool,
    timeout_s: float,
    burst_start: float,
    ready: asyncio.Event,
) -> None:
    """Connect, authenticate, become available (setting ``ready`` either way),
    then record frames until the socket closes.

    A console that fails to get ready within ``timeout_s`` records why in
    ``failure`` and stops; one the server closes later is ``closed_by_server``.
    """
    wire = Wire(codec)
    stage = "connect"
    try:
        async with asyncio.timeout(timeout_s):
            ws = await connect(
                url,
                subprotocols=[Subprotocol(f"qc.v1.{codec}")],
                compression="deflate" if compression else None,
                open_timeout=timeout_s,
                ping_interval=None,  # the server pings; pongs are automatic
                close_timeout=2.0,
                max_size=2**20,
                max_queue=1024,
            )
            console.ws = ws
            console.open_s = time.monotonic() - burst_start
            stage = "welcome"
            await ws.send(wire.encode({"type": "auth", "token": token}))
            await _expect(ws, wire, console, "welcome")
            stage = "pool.snapshot"
            snapshot = await _expect(ws, wire, console, "pool.snapshot")
            requests = snapshot.get("requests")
            console.snapshot_size = len(requests) if isinstance(requests, list) else None
            stage = "status.ok"
            await ws.send(wire.encode({"type": "status", "available": True, "ref": "avail"}))
            ok = await _expect(ws, wire, console, "status.ok")
            if ok.get("available") is not True:
                raise RuntimeError("status.ok did not confirm available")
            console.ready_s = time.monotonic() - burst_start
    except ConnectionClosed as exc:
        console.closed_code = _close_code(exc)
        console.failure = f"closed ({console.closed_code}) while waiting for {stage}"
    except TimeoutError:
        console.failure = f"timed out while waiting for {stage}"
    except Exception as exc:  # refused, bad frame, error frame: this console failed
        console.failure = f"{type(exc).__name__} while waiting for {stage}: {exc}"[:200]
    finally:
        ready.set()
    if console.failure is not None:
        if console.ws is not None:
            with contextlib.suppress(Exception):
                await console.ws.close()
        return
    await _record(console, ws, wire)


async def _record(console: Console, ws: ClientConnection, wire: Wire) -> None:
    try:
        async for data in ws:
            now = time.monotonic()
            try:
                console.on_frame(wire.decode(data), now)
            except (ValueError, msgpack.UnpackException):
                console.error_codes["undecodable_frame"] += 1
    except ConnectionClosed as exc:
        console.closed_code = _close_code(exc)
    else:
        console.closed_code = ws.close_code
    if not console.stopping:
        console.closed_by_server = True


def _close_code(exc: ConnectionClosed) -> int | None:
    return exc.rcvd.code if exc.rcvd is not None else None
