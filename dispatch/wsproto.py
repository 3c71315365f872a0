"""uvicorn's sans-I/O websocket protocol, holding less per connection.

Measured with tracemalloc (``loadtest.idle --tracemalloc``, which runs a
server with ``DISPATCH_TRACEMALLOC_FRAMES``), most of what an idle console
costs a server is the ASGI server's own per-connection state, not the
service's. :class:`LeanWebSocketProtocol` keeps uvicorn's protocol and
trims three things it holds for the life of every connection:

- the handshake: uvicorn keeps the request and its response (two header
  maps and their raw lines, about 3 KiB) though nothing reads them once the
  101 is sent; they are let go then;
- the receive queue: an ``asyncio.Queue`` (three deques and an
  ``asyncio.Event``, about 3 KiB) for a queue that holds one or two events,
  as uvicorn stops reading the socket until the app takes each message;
  :class:`_Inbox` is a list;
- the "writable" flag: an ``asyncio.Event`` and its deque; :class:`_Flag`
  makes its list of waiters only when someone waits.

Both stand-ins do exactly what uvicorn asks of them (``put_nowait``, ``get``,
``empty``; ``set``, ``clear``, ``wait``) and, like asyncio's, ``wait`` on a
set flag returns without suspending, so a write to a socket with room in its
buffer completes in the caller's step (:class:`dispatch.hub.Conn`).

It also offers the app a way to write a message past the ASGI ``send``
chain (Starlette's ``WebSocket.send``, uvicorn's ``send``: two coroutines
and a message dict per frame), as ``websockets.broadcast`` does: the ASGI
extension :data:`SEND_NOW` in the websocket's scope, a plain function that
writes one message to the socket at once and returns True, or returns False
(writing nothing) whenever the socket cannot take it right now (its buffer is
over the high-water mark, the handshake is not done, a close was sent): the
caller then uses ``send`` as usual, which waits. Profiled with py-spy, the
fan-out's time per console is then the socket write itself.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

#: The scope extension (``scope["extensions"][SEND_NOW]``) holding
#: :meth:`LeanWebSocketProtocol.send_now`.
SEND_NOW = "dispatch.send_now"


class _Waiters:
    """Coroutines waiting for a wake-up; the list is made only when one waits."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] | None = None

    def _wake_all(self) -> None:
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    async def _sleep(self) -> None:
        """Until the next :meth:`_wake_all` (or cancellation)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)


class _Inbox(_Waiters):
    """A FIFO of ASGI receive events with the three calls uvicorn makes."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        super().__init__()
        self._items: list[Any] = []

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self._wake_all()

    async def get(self) -> Any:
        while not self._items:
            await self._sleep()
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class _Flag(_Waiters):
    """``asyncio.Event``'s ``set``/``clear``/``is_set``/``wait``."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        super().__init__()
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        self._wake_all()

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        while not self._set:
            await self._sleep()
        return True


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox()  # type: ignore[assignment]
        writable = _Flag()
        writable.set()
        self.writable = writable  # type: ignore[assignment]

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # The scope has its own copy of the headers; websockets' parser keeps
        # the request object alive, so empty its header map here.
        event.headers.clear()
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][SEND_NOW] = self.send_now

    def send_now(self, payload: bytes, text: bool) -> bool:
        """Write one message (``text``: a text message of UTF-8 ``payload``,
        else binary) now if the socket takes it without waiting; False, with
        nothing written, if not."""
        if (
            not self.handshake_complete
            or self.initial_response is not None
            or self.close_sent
            or self.disconnected
            or not self.writable.is_set()
            or self.transport.is_closing()
        ):
            return False
        try:
            if text:
                self.conn.send_text(payload)
            else:
                self.conn.send_binary(payload)
        except InvalidState:
            return False
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            # The 101 is on the wire: the handshake is not read again.
            self.request = None  # type: ignore[assignment]
            self.response = None  # type: ignore[assignment]
