"""A real WebRTC peer (aiortc) that signals through the dispatch relay.

:class:`RtcPeer` owns one ``RTCPeerConnection`` and the :class:`WsClient` its
``rtc.signal`` frames travel on (replaceable: a console that reconnects goes
on with the same peer connection). Signaling is trickle ICE, browser style:

* the offer and the answer go out with every ``a=candidate`` line (and
  ``a=end-of-candidates``) taken out, and the default address of each media
  line blanked (``9`` / ``0.0.0.0``), so the SDP alone cannot connect;
* each candidate then goes out as its own ``rtc.signal`` frame,
  ``{"candidate": "candidate:...", "sdpMid", "sdpMLineIndex"}``, the shape of
  a browser's ``RTCIceCandidate.toJSON()``.

Nothing leaves loopback: :func:`loopback_only` makes aioice gather only
127.0.0.1, and the peer connection has no ICE servers (aiortc would otherwise
ask a public STUN server). aiortc never reports a failure when it has no
candidate pair to try, so every wait here is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, Final, TypeVar

import aioice.ice
import pytest
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceCandidate,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.sdp import candidate_from_sdp

from .harness import Frame, WsClient

Signal = dict[str, Any]
T = TypeVar("T")

LOOPBACK: Final = "127.0.0.1"
#: Bound on each WebRTC wait: ICE on loopback and DTLS take well under a second.
RTC_TIMEOUT_S: Final = 15.0
CLOSE_TIMEOUT_S: Final = 5.0


def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make aioice gather host candidates on 127.0.0.1 alone.

    ``aioice.ice.get_host_addresses(use_ipv4, use_ipv6)`` lists the machine's
    addresses *without* loopback; ``Connection.gather_candidates`` calls it
    through the module global, which is what is replaced here."""

    def loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [LOOPBACK] if use_ipv4 else []

    monkeypatch.setattr(aioice.ice, "get_host_addresses", loopback)


def split_candidates(sdp: str) -> tuple[str, list[Signal]]:
    """``sdp`` without its candidates, and the candidates as trickle signals
    (in SDP order, each with the ``mid`` and index of its media section)."""
    lines: list[str] = []
    candidates: list[Signal] = []
    mid: str | None = None
    index = -1
    for line in sdp.splitlines():
        if line.startswith("m="):
            index += 1
            mid = None
            kind, _port, rest = line.split(" ", 2)
            line = f"{kind} 9 {rest}"
        elif line.startswith("c=IN IP4 "):
            line = "c=IN IP4 0.0.0.0"
        elif line.startswith("a=mid:"):
            mid = line.removeprefix("a=mid:")
        elif line.startswith("a=candidate:"):
            candidates.append({"candidate": line[2:], "sdpMid": mid, "sdpMLineIndex": index})
            continue
        elif line == "a=end-of-candidates":
            continue
        lines.append(line)
    return "\r\n".join(lines) + "\r\n", candidates


def candidate_from_signal(data: Signal) -> RTCIceCandidate:
    """The :class:`RTCIceCandidate` of a trickle signal made by :func:`split_candidates`."""
    line = str(data["candidate"]).removeprefix("candidate:")
    candidate = candidate_from_sdp(line)
    candidate.sdpMid = data.get("sdpMid")
    candidate.sdpMLineIndex = data.get("sdpMLineIndex")
    return candidate


class RtcPeer:
    """One side of a call: an aiortc peer connection plus its signaling socket."""

    def __init__(self, label: str, session_id: str, ws: WsClient) -> None:
        self.label = label
        self.session_id = session_id
        #: The socket ``rtc.signal`` frames go out on and come in from.
        self.ws = ws
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        #: Every signal this peer sent, in order.
        self.sent: list[Signal] = []
        #: Every signal this peer applied, in order.
        self.applied: list[Signal] = []
        self.messages: asyncio.Queue[str] = asyncio.Queue()
        self.tracks: asyncio.Queue[MediaStreamTrack] = asyncio.Queue()
        self._channel: asyncio.Future[RTCDataChannel] = asyncio.get_running_loop().create_future()
        self.pc.on("track", self.tracks.put_nowait)
        self.pc.on("datachannel", self._on_channel)

    # -- signaling out -----------------------------------------------------------------
    async def signal(self, data: Signal) -> None:
        await self.ws.send({"type": "rtc.signal", "session_id": self.session_id, "data": data})
        self.sent.append(data)

    async def _send_description(self, kind: str) -> list[Signal]:
        """Send the local description (no candidates), then each candidate;
        returns the candidate signals sent."""
        local = self.pc.localDescription
        assert local is not None and local.type == kind
        sdp, candidates = split_candidates(local.sdp)
        assert candidates, f"{self.label}: aiortc gathered no candidate on {LOOPBACK}"
        await self.signal({"type": kind, "sdp": sdp})
        for candidate in candidates:
            await self.signal(candidate)
        return candidates

    async def offer(self, video: bool = True) -> list[Signal]:
        """Open a data channel (and a synthetic video track), send the offer and
        its candidates; returns the candidate signals."""
        self._on_channel(self.pc.createDataChannel("chat"))
        if video:
            self.pc.addTrack(VideoStreamTrack())
        # setLocalDescription gathers every candidate before it returns.
        await _bounded(self.pc.setLocalDescription(await self.pc.createOffer()), "gather")
        return await self._send_description("offer")

    # -- signaling in ------------------------------------------------------------------
    async def apply(self, data: Signal) -> None:
        """Apply one relayed signal: an offer (answered at once), an answer or a candidate."""
        if data.get("type") == "offer":
            await self.pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "offer"))
            await _bounded(self.pc.setLocalDescription(await self.pc.createAnswer()), "answer")
            self.applied.append(data)
            await self._send_description("answer")
        elif data.get("type") == "answer":
            await self.pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "answer"))
            self.applied.append(data)
        elif "candidate" in data:
            await self.pc.addIceCandidate(candidate_from_signal(data))
            self.applied.append(data)
        else:
            raise AssertionError(f"{self.label}: unknown signal keys {sorted(data)}")

    async def take_signals(self, n: int, from_id: str, timeout: float = 5.0) -> list[Signal]:  # noqa: ASYNC109 -- a per-frame wait, like WsClient.expect
        """Receive ``n`` relayed ``rtc.signal`` frames of this session (each
        from ``from_id``), apply them in order, and return their data."""
        got: list[Signal] = []
        for _ in range(n):
            frame: Frame = await self.ws.expect("rtc.signal", timeout, self._ours)
            assert frame["from"] == from_id, (self.label, frame["from"])
            data = frame["data"]
            assert isinstance(data, dict)
            got.append(data)
            await self.apply(data)
        return got

    def _ours(self, frame: Frame) -> bool:
        return bool(frame.get("session_id") == self.session_id)

    # -- media -------------------------------------------------------------------------
    def _on_channel(self, channel: RTCDataChannel) -> None:
        channel.on("message", self._on_message)
        if not self._channel.done():
            self._channel.set_result(channel)

    def _on_message(self, message: str | bytes) -> None:
        self.messages.put_nowait(message if isinstance(message, str) else message.decode())

    async def channel(self, timeout: float = RTC_TIMEOUT_S) -> RTCDataChannel:  # noqa: ASYNC109 -- bounded wait, part of the API
        """The data channel, once open (bounded)."""
        channel = await _bounded(asyncio.shield(self._channel), "data channel", timeout)
        if channel.readyState != "open":
            opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def on_open() -> None:
                if not opened.done():
                    opened.set_result(None)

            channel.once("open", on_open)
            if channel.readyState != "open":
                await _bounded(opened, f"{self.label}: data channel open", timeout)
        return channel

    async def send_text(self, text: str) -> None:
        (await self.channel()).send(text)

    async def next_message(self, timeout: float = RTC_TIMEOUT_S) -> str:  # noqa: ASYNC109 -- bounded wait, part of the API
        return await _bounded(self.messages.get(), f"{self.label}: data channel message", timeout)

    async def remote_track(self, timeout: float = RTC_TIMEOUT_S) -> MediaStreamTrack:  # noqa: ASYNC109 -- bounded wait, part of the API
        return await _bounded(self.tracks.get(), f"{self.label}: remote track", timeout)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), CLOSE_TIMEOUT_S)


async def _bounded(aw: Awaitable[T], what: str, timeout: float = RTC_TIMEOUT_S) -> T:  # noqa: ASYNC109 -- the one bounded wait
    try:
        result = await asyncio.wait_for(aw, timeout)
    except TimeoutError:
        raise AssertionError(f"{what}: nothing within {timeout}s") from None
    return result
