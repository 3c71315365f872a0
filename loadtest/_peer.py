"""A websocket user of the scenarios (race, lifecycle, idle): a therapist
console or a client app that sends frames and waits for answers.

:meth:`Peer.call` sends a frame with a fresh ``ref`` and waits for the first
frame echoing it (PROTOCOL.md §6.1); :meth:`Peer.waiter` registers, *before*
the action that causes it, a wait for the next frame of a type that matches a
predicate (a ``request.new`` may come before the ``POST`` that caused it has
answered). Every frame is read by one reader task per socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

Frame = dict[str, Any]
Match = Callable[[Frame], bool]


def notes_is(marker: str) -> Match:
    """Matches a ``request.new`` whose request carries ``marker`` as its notes."""

    def match(frame: Frame) -> bool:
        req = frame.get("request")
        return isinstance(req, dict) and req.get("notes") == marker

    return match


class Peer:
    """One authenticated socket of ``user_id`` with role ``role``."""

    def __init__(self, user_id: str, role: str, url: str, token: str) -> None:
        self.user_id = user_id
        self.role = role
        self.url = url
        self.token = token
        self.ws: ClientConnection | None = None
        self.welcome: list[Frame] = []
        self.errors: Counter[str] = Counter()
        self.closed_code: int | None = None
        self.stopping = False
        #: set once :meth:`open` has succeeded
        self.ready = False
        #: seconds :meth:`open` took (connect to ``status.ok``), once it succeeded
        self.open_s: float | None = None
        self._refs = itertools.count()
        self._answers: dict[str, asyncio.Future[tuple[Frame, float]]] = {}
        self._waiters: list[tuple[str, Match, asyncio.Future[tuple[Frame, float]]]] = []
        self._reader: asyncio.Task[None] | None = None

    async def open(self, timeout_s: float, available: bool | None = None) -> None:
        """Connect, authenticate, read the welcome frames; a therapist with
        ``available`` set sends ``status`` and waits for ``status.ok``."""
        t0 = time.monotonic()
        async with asyncio.timeout(timeout_s):
            self.ws = await connect(
                self.url,
                subprotocols=[Subprotocol("qc.v1.json")],
                compression=None,
                open_timeout=timeout_s,
                ping_interval=None,
                close_timeout=2.0,
                max_size=2**20,
                max_queue=4096,
            )
            await self.ws.send(json.dumps({"type": "auth", "token": self.token}))
            frame = json.loads(await self.ws.recv())
            if frame.get("type") != "welcome":
                raise RuntimeError(f"expected welcome, got {frame.get('type')}: {frame}")
            self.welcome.append(frame)
            self._reader = asyncio.create_task(self._read(), name=f"read-{self.user_id}")
            if available is not None:
                ok, _ = await self.call({"type": "status", "available": available}, timeout_s)
                if ok.get("type") != "status.ok":
                    raise RuntimeError(f"status answered {ok}")
        self.ready = True
        self.open_s = time.monotonic() - t0

    async def _read(self) -> None:
        ws = self.ws
        assert ws is not None
        try:
            async for data in ws:
                now = time.monotonic()
                try:
                    frame = json.loads(data)
                except ValueError:
                    self.errors["undecodable"] += 1
                    continue
                self._dispatch(frame, now)
        except ConnectionClosed as exc:
            self.closed_code = exc.rcvd.code if exc.rcvd is not None else None
        else:
            self.closed_code = ws.close_code
        for fut in [*self._answers.values(), *(w[2] for w in self._waiters)]:
            if not fut.done():
                fut.set_exception(ConnectionError(f"closed ({self.closed_code})"))
                fut.exception()  # retrieved: nobody may be waiting any more

    def _dispatch(self, frame: Frame, now: float) -> None:
        kind = frame.get("type")
        ref = frame.get("ref")
        if kind == "error":
            self.errors[str(frame.get("code"))] += 1
        if isinstance(ref, str):
            fut = self._answers.pop(ref, None)
            if fut is not None and not fut.done():
                fut.set_result((frame, now))
        for i, (wkind, match, wfut) in enumerate(self._waiters):
            if wkind == kind and not wfut.done() and match(frame):
                wfut.set_result((frame, now))
                del self._waiters[i]
                break

    def waiter(
        self, kind: str, match: Match = lambda f: True
    ) -> asyncio.Future[tuple[Frame, float]]:
        """A future of the next ``(frame, monotonic time)`` of type ``kind`` that matches."""
        fut: asyncio.Future[tuple[Frame, float]] = asyncio.get_running_loop().create_future()
        self._waiters.append((kind, match, fut))
        return fut

    def drop(self, fut: asyncio.Future[tuple[Frame, float]]) -> None:
        self._waiters = [w for w in self._waiters if w[2] is not fut]

    async def send(self, frame: Frame) -> str:
        """Send ``frame`` with a fresh ``ref`` (returned)."""
        assert self.ws is not None
        ref = f"r{next(self._refs)}"
        await self.ws.send(json.dumps({**frame, "ref": ref}))
        return ref

    def expect_ref(self) -> tuple[str, asyncio.Future[tuple[Frame, float]]]:
        ref = f"r{next(self._refs)}"
        fut: asyncio.Future[tuple[Frame, float]] = asyncio.get_running_loop().create_future()
        self._answers[ref] = fut
        return ref, fut

    async def send_ref(self, frame: Frame, ref: str) -> float:
        """Send ``frame`` carrying ``ref``; the monotonic time it was handed to the socket."""
        assert self.ws is not None
        data = json.dumps({**frame, "ref": ref})
        sent = time.monotonic()
        await self.ws.send(data)
        return sent

    async def call(self, frame: Frame, timeout_s: float) -> tuple[Frame, float]:
        """Send ``frame`` and wait for the first frame echoing its ``ref``:
        ``(answer, seconds from send to answer)``."""
        ref, fut = self.expect_ref()
        sent = await self.send_ref(frame, ref)
        try:
            answer, at = await asyncio.wait_for(fut, timeout_s)
        finally:
            self._answers.pop(ref, None)
        return answer, at - sent

    async def close(self) -> None:
        self.stopping = True
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader


async def open_all(peers: list[Peer], timeout_s: float, available: bool | None) -> list[str]:
    """Open every peer at once; the failures, as text (empty when all opened)."""
    results = await asyncio.gather(
        *(p.open(timeout_s, available) for p in peers), return_exceptions=True
    )
    return [
        f"{p.user_id}: {type(r).__name__}: {r}"[:200]
        for p, r in zip(peers, results, strict=True)
        if isinstance(r, BaseException)
    ]


async def close_all(peers: list[Peer]) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(20):
            await asyncio.gather(*(p.close() for p in peers))
