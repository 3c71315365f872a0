"""The websocket endpoint ``/v1/ws`` (PROTOCOL.md §5).

One connection = one reader (this coroutine) and a :class:`dispatch.hub.Conn`
that writes every frame, answers and broadcasts alike, in order: at once when
the socket takes it, else queued behind the write that waits (a slow socket
only ever fills its own bounded queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from core.clock import rfc3339
from core.errors import BadInput, DispatchError, Forbidden, RateLimited, Unauthorized
from core.identity import Role, User, bearer, verify
from core.logs import Logger, get_logger
from core.wire import JSON_CODEC, Codec, negotiate
from dispatch import frames
from dispatch.context import AppContext
from dispatch.hub import Conn
from dispatch.ratelimit import TokenBucket
from dispatch.service import new_id
from dispatch.wsproto import SEND_NOW

log = get_logger(component="ws")

#: Where the endpoint is served (dispatch.app).
PATH = "/v1/ws"

CLOSE_TOO_BIG = 1009
CLOSE_POLICY = 1008
CLOSE_UNAUTHORIZED = 4401
CLOSE_AUTH_TIMEOUT = 4408

#: Frames other than ``auth`` a connection may send before it authenticates
#: (the first is answered, the rest are not); one more closes it (1008).
PRE_AUTH_FRAMES_MAX = 8


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
    strays = 0
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
            if not isinstance(frame, frames.Auth):
                raise Unauthorized("authenticate first: send an auth frame")
        except (BadInput, Unauthorized) as exc:
            # Only auth is read here: the first other frame is answered, the
            # rest cost no answer, and a client that keeps on is closed.
            strays += 1
            if strays > PRE_AUTH_FRAMES_MAX:
                await _close(websocket, CLOSE_POLICY, "authenticate first")
                return None
            if strays == 1:
                await _send_now(websocket, codec, frames.error_from(exc, ref))
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
            sender=self._send,
            send_now=websocket.scope.get("extensions", {}).get(SEND_NOW),
        )
        self.bucket = TokenBucket(s.ws_rate_per_s, s.ws_rate_burst)
        #: A flood: refused frames with no pause as long as the bucket takes to
        #: refill. Its start (None: none under way) and its latest refusal.
        self.flood_since: float | None = None
        self.last_refused = 0.0
        self.refill_s = s.ws_rate_burst / s.ws_rate_per_s
        #: The timer of the token's next step (§11): ``auth.expiring``, then
        #: the close at ``exp``. A timer, not a task: an idle connection
        #: holds no task of its own besides its reader.
        self.expiry: asyncio.TimerHandle | None = None
        self.warned_for: float | None = None
        #: the task closing the socket whose token expired (kept referenced
        #: until it is done: the loop holds tasks only weakly).
        self.expired_close: asyncio.Task[None] | None = None

    @property
    def log(self) -> Logger:
        """The module's logger with this connection's ids: bound when a line is
        written (rarely), not held by every open connection."""
        return log.bind(conn_id=self.conn.id, user_id=self.user.id, role=str(self.user.role))

    async def run(self) -> None:
        ctx, conn = self.ctx, self.conn
        try:
            await self._open()
            # After the welcome (the answer to auth comes first, §5), even for
            # a token already inside its warning lead.
            self._arm_expiry()
            self.log.info("ws.connected")
            await self._read()
        except DispatchError as exc:  # the store was unavailable while opening
            self.log.warning("ws.open_failed", code=exc.code)
            conn.send_frame(frames.error_from(exc, None))
            # 1013: a passing overload or outage; the console should retry.
            await self._close(1013, "service unavailable; try again")
        finally:
            if self.expiry is not None:
                self.expiry.cancel()
            ctx.hub.remove(conn)
            # Let queued frames go out, unless the console is too slow.
            await conn.flush(0 if conn.closing else 1.0)
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
            conn.send_frame({"type": "pool.stats", **await ctx.stats_body(now)})
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
            now = time.monotonic()
            if not self.bucket.allow(now):
                if await self._refused(raw, now):
                    return
                continue
            await self._handle(raw)

    async def _refused(self, raw: str | bytes, now: float) -> bool:
        """A frame over the rate. The first of a flood is answered ``rate_limited``;
        the rest are dropped unread (no parse, no answer) until the client pauses
        for as long as the bucket takes to refill. A flood that lasts
        ``ws_flood_close_s`` closes the connection (1008): True then."""
        self.ctx.metrics.errors.labels(code="rate_limited").inc()
        if self.flood_since is None or now - self.last_refused >= self.refill_s:
            self.flood_since = now
            self.conn.send_frame(frames.error_from(RateLimited(), self._ref_of(raw)))
        self.last_refused = now
        if now - self.flood_since >= self.ctx.settings.ws_flood_close_s:
            self.log.warning("ws.flood_closed", seconds=round(now - self.flood_since, 1))
            await self._close(CLOSE_POLICY, "rate limit exceeded for too long")
            return True
        return False

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
            case frames.Auth(token=token):
                await self._reauth(token, frame.ref)
            case frames.Status(available=available):
                await d.set_status(self.user, available, origin)
            case frames.Claim(request_id=rid):
                await d.claim(
                    self.user, rid, origin, profile=self.conn.profile, busy=self.conn.busy
                )
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

    async def _reauth(self, token: str, ref: str | None) -> None:
        """A new token on the open socket (PROTOCOL.md §11): for the same ``sub``
        and ``role``, it replaces the old one and is answered ``auth.ok``; a bad
        token, or one for someone else, closes the socket with 4401."""
        try:
            user = verify(self.ctx.settings.secret, token)
        except Unauthorized:
            self.log.info("ws.reauth_refused", reason="bad_token")
            await self._close(CLOSE_UNAUTHORIZED, "bad token")
            return
        if (user.id, user.role) != (self.user.id, self.user.role):
            self.log.info("ws.reauth_refused", reason="other_user")
            await self._close(CLOSE_UNAUTHORIZED, "a new token must be for the same user and role")
            return
        assert user.expires_at is not None  # verify() always sets it
        self.user = self.conn.user = user
        self._arm_expiry()
        self.conn.send_frame(
            {"type": "auth.ok", "expires_at": rfc3339(user.expires_at), "ref": ref}
        )

    def _arm_expiry(self) -> None:
        """Warn ``auth_expiring_s`` before the token's ``exp`` (once per
        token), close 4401 at it; a new token re-arms this for its own."""
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        exp = self.user.expires_at
        if exp is None or self.conn.closing:
            return
        now = time.time()
        loop = asyncio.get_running_loop()
        if now >= exp:
            self.log.info("ws.token_expired")
            self.expired_close = loop.create_task(self._close(CLOSE_UNAUTHORIZED, "token expired"))
            return
        warn_at = exp - self.ctx.settings.auth_expiring_s
        if now >= warn_at and self.warned_for != exp:
            self.warned_for = exp
            self.conn.send_frame({"type": "auth.expiring", "expires_at": rfc3339(exp)})
        # Wall-clock times, a monotonic timer: the step re-reads the clock.
        wake = exp if self.warned_for == exp else warn_at
        self.expiry = loop.call_later(max(wake - now, 0.0), self._arm_expiry)

    async def _send(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_text(data)

    async def _close(self, code: int, reason: str) -> None:
        slow = self.conn.closing  # set by Conn.send when the queue overflowed
        if slow:
            self.ctx.metrics.slow_consumers.inc()
        self.conn.closing = True
        # Flush what is queued (e.g. the error that explains the close).
        await self.conn.flush(0 if slow else 1.0)
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
