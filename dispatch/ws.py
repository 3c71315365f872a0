"""The websocket endpoint ``/v1/ws`` (PROTOCOL.md §5).

One connection = one reader (this coroutine) and one writer task draining the
connection's bounded queue (see :mod:`dispatch.hub`). The reader never writes
to the socket itself, so a frame answered and a broadcast never interleave
badly and a slow socket only ever fills its own queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from dispatch import frames
from dispatch.codec import JSON_CODEC, Codec, negotiate
from dispatch.context import AppContext
from dispatch.errors import BadInput, DispatchError, Forbidden, RateLimited, Unauthorized
from dispatch.hub import Conn
from dispatch.logs import get_logger
from dispatch.ratelimit import TokenBucket
from dispatch.service import new_id
from dispatch.tokens import User, bearer, verify
from pool.model import Role

log = get_logger(component="ws")

CLOSE_TOO_BIG = 1009
CLOSE_POLICY = 1008
CLOSE_UNAUTHORIZED = 4401
CLOSE_AUTH_TIMEOUT = 4408

#: Consecutive rate-limited frames after which the connection is closed.
_MAX_STRIKES = 50


async def endpoint(websocket: WebSocket) -> None:
    ctx: AppContext = websocket.app.state.ctx
    offered = list(websocket.scope.get("subprotocols") or [])
    codec = negotiate(offered)
    await websocket.accept(subprotocol=codec.name if codec is not None and offered else None)
    codec = codec or JSON_CODEC
    user = await _authenticate(websocket, ctx, codec)
    if user is None:
        return
    await _Session(websocket, ctx, codec, user).run()


async def _authenticate(websocket: WebSocket, ctx: AppContext, codec: Codec) -> User | None:
    header = websocket.headers.get("authorization")
    if header is not None:
        try:
            return verify(ctx.settings.secret, bearer(header) or "")
        except Unauthorized:
            await _close(websocket, CLOSE_UNAUTHORIZED, "bad token")
            return None
    deadline = time.monotonic() + ctx.settings.auth_timeout_s
    while True:
        remaining = deadline - time.monotonic()
        try:
            message = await asyncio.wait_for(websocket.receive(), timeout=max(remaining, 0.001))
        except TimeoutError:
            await _close(websocket, CLOSE_AUTH_TIMEOUT, "no auth within the time allowed")
            return None
        if message["type"] == "websocket.disconnect":
            return None
        data = message.get("text") if message.get("text") is not None else message.get("bytes")
        if data is not None and len(data) > ctx.settings.max_frame_bytes:
            await _close(websocket, CLOSE_TOO_BIG, "frame too big")
            return None
        ref: str | None = None
        try:
            obj = codec.decode(data if data is not None else b"")
            ref = frames.ref_of(obj)
            frame = frames.parse(obj)
        except BadInput as exc:
            await _send_now(websocket, codec, frames.error_from(exc, ref))
            continue
        if not isinstance(frame, frames.Auth):
            err = Unauthorized("authenticate first: send an auth frame")
            await _send_now(websocket, codec, frames.error_from(err, frame.ref))
            continue
        try:
            return verify(ctx.settings.secret, frame.token)
        except Unauthorized:
            await _close(websocket, CLOSE_UNAUTHORIZED, "bad token")
            return None


class _Session:
    """One authenticated connection."""

    def __init__(self, websocket: WebSocket, ctx: AppContext, codec: Codec, user: User) -> None:
        self.ws = websocket
        self.ctx = ctx
        self.user = user
        s = ctx.settings
        self.conn = Conn(
            id=new_id("conn"),
            user=user,
            codec=codec,
            queue_size=s.ws_send_queue,
            closer=self._close,
        )
        self.bucket = TokenBucket(s.ws_rate_per_s, s.ws_rate_burst)
        self.strikes = 0
        self.writer: asyncio.Task[None] | None = None
        self.log = log.bind(conn_id=self.conn.id, user_id=user.id, role=str(user.role))

    async def run(self) -> None:
        ctx, conn = self.ctx, self.conn
        self.writer = asyncio.create_task(self._write(), name=f"ws-writer-{conn.id}")
        try:
            await self._open()
            self.log.info("ws.connected")
            await self._read()
        except DispatchError as exc:  # the store was unavailable while opening
            self.log.warning("ws.open_failed", code=exc.code)
            conn.send_frame(frames.error_from(exc, None))
            # 1013: a passing overload or outage; the console should retry.
            await self._close(1013, "service unavailable; try again")
        finally:
            ctx.hub.remove(conn)
            await self._stop_writer()
            with contextlib.suppress(DispatchError):
                await ctx.store.disconnect(
                    self.user.id, self.user.role, conn.id, ctx.settings.server_id, ctx.clock()
                )
            self.log.info("ws.disconnected")

    async def _open(self) -> None:
        ctx, conn, user = self.ctx, self.conn, self.user
        store = ctx.store
        now = ctx.clock()
        conn.send_frame({"type": "welcome", "user": {"id": user.id, "role": str(user.role)}})
        await store.connect(user.id, user.role, conn.id, ctx.settings.server_id, now)
        if user.role is Role.THERAPIST:
            conn.profile = await store.get_profile(user.id)
            conn.available = await store.is_available(user.id)
            conn.busy = await store.hold_of(user.id) is not None
        # Registered before the state is read, so nothing that happens
        # meanwhile is missed (at worst a frame arrives twice).
        ctx.hub.add(conn)
        if user.role is Role.OPERATOR:
            conn.send_frame({"type": "pool.stats", **(await store.stats(now)).public()})
        else:
            await ctx.resume(conn)

    async def _read(self) -> None:
        max_bytes = self.ctx.settings.max_frame_bytes
        while True:
            try:
                message = await self.ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            text, data = message.get("text"), message.get("bytes")
            raw: str | bytes = text if text is not None else (data or b"")
            size = len(raw.encode("utf-8")) if isinstance(raw, str) else len(raw)
            if size > max_bytes:
                self.log.warning("ws.frame_too_big", size=size)
                await self._close(CLOSE_TOO_BIG, "frame too big")
                return
            if not self.bucket.allow(time.monotonic()):
                self.strikes += 1
                self.ctx.metrics.errors.labels(code="rate_limited").inc()
                if self.strikes >= _MAX_STRIKES:
                    await self._close(CLOSE_POLICY, "rate limit exceeded")
                    return
                self.conn.send_frame(frames.error_from(RateLimited(), self._ref_of(raw)))
                continue
            self.strikes = 0
            await self._handle(raw)

    def _ref_of(self, raw: str | bytes) -> str | None:
        """The frame's ``ref``, if it has a readable one (for errors)."""
        try:
            return frames.ref_of(self.conn.codec.decode(raw))
        except DispatchError:
            return None

    async def _handle(self, raw: str | bytes) -> None:
        ref: str | None = None
        try:
            obj = self.conn.codec.decode(raw)
            ref = frames.ref_of(obj)
            frame = frames.parse(obj)
            self.ctx.metrics.frames_in.labels(type=frame.TYPE).inc()
            if not frames.allowed(frame, self.user.role):
                raise Forbidden(f"a {self.user.role} may not send this frame")
            await self._dispatch(frame)
        except DispatchError as exc:
            self.ctx.metrics.errors.labels(code=exc.code).inc()
            self.conn.send_frame(frames.error_from(exc, ref))
        except Exception:
            self.log.exception("ws.handler_failed")
            err = DispatchError("internal error; the frame was not applied")
            self.conn.send_frame(frames.error_from(err, ref))

    async def _dispatch(self, frame: frames.Inbound) -> None:
        d = self.ctx.dispatcher
        origin = (self.conn.id, frame.ref)
        match frame:
            case frames.Ping():
                self.conn.send_frame({"type": "pong", "ref": frame.ref})
            case frames.Auth():
                raise BadInput("already authenticated")
            case frames.Status(available=available):
                await d.set_status(self.user, available, origin)
            case frames.Claim(request_id=rid):
                await d.claim(self.user, rid, origin)
            case frames.ClaimRelease(request_id=rid):
                await d.release(self.user, rid, origin)
            case frames.OfferAccept(request_id=rid, terms_version=terms):
                change = await d.accept(self.user, rid, terms, origin)
                self.log.info(
                    "offer.accepted",
                    request_id=rid,
                    session_id=change.after.session_id,
                    terms_version=terms,
                )
            case frames.OfferDecline(request_id=rid):
                await d.decline(self.user, rid, origin)
            case _:
                await self.ctx.session_frame(self.user, self.conn, frame)

    async def _write(self) -> None:
        binary = self.conn.codec.binary
        queue = self.conn.queue
        while True:
            item = await queue.get()
            if item is None:
                return
            try:
                if binary:
                    await self.ws.send_bytes(item if isinstance(item, bytes) else item.encode())
                else:
                    await self.ws.send_text(item if isinstance(item, str) else item.decode())
            except Exception:  # the peer is gone; the reader will notice
                return

    async def _stop_writer(self) -> None:
        if self.writer is None:
            return
        if not self.writer.done():
            # Let queued frames go out unless the queue is full (slow consumer).
            try:
                self.conn.queue.put_nowait(None)
                await asyncio.wait_for(asyncio.shield(self.writer), timeout=1.0)
            except (asyncio.QueueFull, TimeoutError):
                self.writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.writer

    async def _close(self, code: int, reason: str) -> None:
        slow = self.conn.closing  # set by Conn.send when the queue overflowed
        if slow:
            self.ctx.metrics.slow_consumers.inc()
        self.conn.closing = True
        if self.writer is not None and not slow:
            # Flush what is queued (e.g. the error that explains the close).
            with contextlib.suppress(asyncio.QueueFull):
                self.conn.queue.put_nowait(None)
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self.writer), timeout=1.0)
        if self.writer is not None and not self.writer.done():
            self.writer.cancel()
        await _close(self.ws, code, reason)


async def _send_now(websocket: WebSocket, codec: Codec, frame: dict[str, Any]) -> None:
    data = codec.encode(frame)
    with contextlib.suppress(Exception):
        if isinstance(data, bytes):
            await websocket.send_bytes(data)
        else:
            await websocket.send_text(data)


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    if websocket.application_state is WebSocketState.DISCONNECTED:
        return
    with contextlib.suppress(Exception):
        await websocket.close(code=code, reason=reason)
