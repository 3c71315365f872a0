"""How a connection writes (dispatch.hub.Conn): at once in the sender's own
step when the socket takes the frame, queued in order behind a write that has
to wait, and closed 1013 when a slow console lets its queue fill."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from core.identity import Role, User
from core.wire import JSON_CODEC, Encoded
from dispatch.hub import CLOSE_SLOW_CONSUMER, Conn


class Socket:
    """A socket whose writes complete at once while ``open`` is set and wait
    for it otherwise (as uvicorn's send waits while the transport's buffer is
    over its high-water mark)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.open = asyncio.Event()
        self.open.set()
        self.fail: Exception | None = None
        self.cancelled = 0

    async def send(self, data: str | bytes) -> None:
        if self.fail is not None:
            raise self.fail
        try:
            await self.open.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        assert isinstance(data, str)
        self.sent.append(json.loads(data)["n"])


def make(sock: Socket, queue_size: int = 8) -> tuple[Conn, list[tuple[int, str]]]:
    closes: list[tuple[int, str]] = []

    async def closer(code: int, reason: str) -> None:
        closes.append((code, reason))

    conn = Conn(
        "conn-1", User("t1", Role.THERAPIST), JSON_CODEC, queue_size, closer, sender=sock.send
    )
    return conn, closes


def frame(n: int) -> Encoded:
    return Encoded({"type": "x", "n": n})


async def test_a_frame_is_written_in_the_senders_own_step() -> None:
    sock = Socket()
    conn, _ = make(sock)
    assert conn.send(frame(1))
    assert conn.send_frame({"type": "x", "n": 2})
    # No await in between: both are on the socket already, no task made.
    assert sock.sent == [1, 2]
    assert conn.drain is None and conn.pending is None


async def test_frames_behind_a_waiting_write_go_out_in_order_then_writes_are_direct() -> None:
    sock = Socket()
    conn, closes = make(sock)
    sock.open.clear()
    for n in (1, 2, 3):
        assert conn.send(frame(n))
    assert sock.sent == []
    assert conn.drain is not None
    assert conn.pending is not None and len(conn.pending) == 2
    drain = conn.drain
    sock.open.set()
    await drain
    assert sock.sent == [1, 2, 3]
    assert conn.drain is None and not conn.pending
    assert conn.send(frame(4))
    assert sock.sent == [1, 2, 3, 4]
    assert closes == []


async def test_a_slow_console_is_closed_1013_when_its_queue_is_full() -> None:
    sock = Socket()
    conn, closes = make(sock, queue_size=2)
    sock.open.clear()
    assert conn.send(frame(1))  # the write that waits
    assert conn.send(frame(2)) and conn.send(frame(3))  # the queue: 2 frames
    assert not conn.send(frame(4))  # one more: too slow
    assert conn.closing
    await asyncio.sleep(0)  # the close runs in a task of its own
    assert closes == [(CLOSE_SLOW_CONSUMER, "send queue full")]
    assert not conn.send(frame(5))  # nothing more is taken
    await conn.flush(0)  # a slow consumer's frames are dropped at once
    assert conn.drain is None
    assert sock.cancelled == 1 and sock.sent == []


async def test_a_failed_write_drops_later_frames_without_raising() -> None:
    sock = Socket()
    conn, closes = make(sock)
    sock.fail = ConnectionResetError("peer gone")
    assert conn.send(frame(1))
    assert conn.dead
    sock.fail = None
    assert conn.send(frame(2))  # dropped: the reader notices the close
    assert sock.sent == [] and closes == []


async def test_a_write_failing_after_it_waited_marks_the_connection_dead() -> None:
    sock = Socket()
    conn, _ = make(sock)
    sock.open.clear()
    conn.send(frame(1))
    conn.send(frame(2))
    drain = conn.drain
    assert drain is not None
    sock.fail = ConnectionResetError("peer gone")  # the queued frame's write fails
    sock.open.set()
    await drain
    assert sock.sent == [1]
    assert conn.dead and conn.drain is None


async def test_flush_waits_for_the_queue_then_gives_up() -> None:
    sock = Socket()
    conn, _ = make(sock)
    sock.open.clear()
    conn.send(frame(1))
    conn.send(frame(2))
    asyncio.get_running_loop().call_later(0.05, sock.open.set)
    await conn.flush(5.0)
    assert sock.sent == [1, 2]

    sock.open.clear()
    conn.send(frame(3))
    await conn.flush(0.05)  # never opens: the write is abandoned
    assert conn.drain is None and sock.cancelled == 1
    assert sock.sent == [1, 2]


@pytest.mark.parametrize("binary", [False, True])
async def test_without_a_socket_frames_stay_pending(binary: bool) -> None:
    from core.wire import MSGPACK_CODEC

    codec = MSGPACK_CODEC if binary else JSON_CODEC

    async def closer(code: int, reason: str) -> None:
        raise AssertionError("not closed")

    conn = Conn("c", User("u", Role.CLIENT), codec, 4, closer)
    frames: list[Any] = [frame(n) for n in range(3)]
    for f in frames:
        assert conn.send(f)
    assert conn.pending is not None
    assert list(conn.pending) == [f.for_codec(codec) for f in frames]


async def test_send_now_writes_past_the_asgi_chain_and_falls_back_when_refused() -> None:
    sock = Socket()
    taken: list[tuple[bytes, bool]] = []
    accept = True

    def send_now(payload: bytes, text: bool) -> bool:
        if accept:
            taken.append((payload, text))
        return accept

    closes: list[tuple[int, str]] = []

    async def closer(code: int, reason: str) -> None:
        closes.append((code, reason))

    conn = Conn(
        "c", User("t1", Role.THERAPIST), JSON_CODEC, 8, closer, sender=sock.send, send_now=send_now
    )
    shared = frame(1)
    assert conn.send(shared)
    assert taken == [(shared.payload(JSON_CODEC), True)] and sock.sent == []
    assert shared.payload(JSON_CODEC) is shared.payload(JSON_CODEC)  # encoded once
    accept = False  # the socket's buffer is full: the ASGI send, which waits
    sock.open.clear()
    assert conn.send(frame(2))
    assert conn.drain is not None
    accept = True
    assert conn.send(frame(3))  # behind the waiting write: queued, not sent now
    assert len(taken) == 1
    drain = conn.drain
    sock.open.set()
    await drain
    assert sock.sent == [2, 3] and conn.drain is None
    assert conn.send(frame(4))
    assert len(taken) == 2 and json.loads(taken[1][0])["n"] == 4
