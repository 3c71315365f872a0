"""Guards uvicorn's HTTP protocol lacks: a deadline to read a request, a cap on connections.

uvicorn closes a keep-alive connection that stays idle between requests
(``timeout_keep_alive``), but any byte cancels that timer, and nothing bounds
the time a request's head and body take to arrive: a client that sends half a
header line, or one byte a second, holds its connection (and a file
descriptor) for good. :func:`guarded_protocol` subclasses uvicorn's httptools
protocol so that:

- every request must arrive whole (head and body) within ``read_timeout_s`` of
  its first byte (for a new connection, of connecting); past it the server
  answers ``408`` with the protocol's error body when it can, and closes;
- a process holds at most ``max_connections`` connections (HTTP and websocket
  alike); one more is answered ``503`` ``unavailable`` and closed at once, so a
  flood costs the server an accept and a write, never a file descriptor for long.

A websocket upgrade stops the read deadline: from there the websocket's own
auth timeout and pings take over.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def _response(status: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_TIMEOUT = _response("408 Request Timeout", "request_timeout", "the request did not arrive in time")
_FULL = _response(
    "503 Service Unavailable",
    "unavailable",
    "the server is at its connection limit; try again",
)


def guarded_protocol(read_timeout_s: float, max_connections: int) -> type[asyncio.Protocol]:
    """A uvicorn ``http`` protocol class with the two guards (module docstring)."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _read_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            # self.connections is the server's set: websockets are in it too.
            if len(self.connections) > max_connections:
                transport.write(_FULL)
                transport.close()
                return
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._read_deadline is None:  # a request on a kept-alive connection
                self._arm()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def handle_websocket_upgrade(self) -> None:
            self._disarm()
            super().handle_websocket_upgrade()

        def _arm(self) -> None:
            self._read_deadline = self.loop.call_later(read_timeout_s, self._read_timed_out)

        def _disarm(self) -> None:
            if self._read_deadline is not None:
                self._read_deadline.cancel()
                self._read_deadline = None

        def _read_timed_out(self) -> None:
            self._read_deadline = None
            if self.transport.is_closing():
                return
            cycle: Any = self.cycle
            # Answer only when no response of the app's is under way on the wire.
            if cycle is None or cycle.response_complete or not cycle.response_started:
                self.transport.write(_TIMEOUT)
            self.transport.close()

    return GuardedHttpToolsProtocol
