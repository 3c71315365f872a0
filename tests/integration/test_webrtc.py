"""Real WebRTC calls negotiated through the relay (PROTOCOL.md §5 ``rtc.signal``).

Two aiortc peers in this process, a client whose console is on server A and
a therapist whose console is on server B, are matched over the protocol and
negotiate with trickle ICE: each SDP goes out without candidates, and every
candidate follows in its own ``rtc.signal`` frame (see ``rtc_peer.py``), so
the call connects only if the relay carries them. The first to join offers at
once, before the other side has joined: its offer and candidates are held by
the service and delivered right after the other side's ``session.join``; its
candidates also reach the other side before that side has answered.

Media stays on loopback (aioice gathers 127.0.0.1 alone, no ICE server is
configured) and every wait is bounded.
"""

from __future__ import annotations

import asyncio
from typing import Final

import pytest
from av import VideoFrame

from .harness import Cluster, Matched, StartCluster, WsClient, open_session, token, with_ref
from .rtc_peer import RTC_TIMEOUT_S, RtcPeer, loopback_only

pytestmark = pytest.mark.integration

IDS: Final = {"client": "c1", "therapist": "t1"}


@pytest.fixture(autouse=True)
def _loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    loopback_only(monkeypatch)


async def _join(ws: WsClient, session_id: str, ref: str) -> bool:
    """Send ``session.join``; returns the answer's ``peer_joined``."""
    await ws.send({"type": "session.join", "session_id": session_id, "ref": ref})
    joined = await ws.expect(("session.joined", "error"), predicate=with_ref(ref))
    assert joined["type"] == "session.joined", joined
    assert joined["session_id"] == session_id
    return bool(joined["peer_joined"])


class Call:
    """A matched session with a peer connection on each side."""

    def __init__(self, m: Matched) -> None:
        self.m = m
        self.peers = {
            "client": RtcPeer("client", m.id, m.client),
            "therapist": RtcPeer("therapist", m.id, m.therapist),
        }

    async def connect(self, first: str) -> tuple[RtcPeer, RtcPeer]:
        """``first`` joins and offers before the other joins; the other joins,
        answers; the data channel opens. Returns (offerer, answerer)."""
        second = "therapist" if first == "client" else "client"
        offerer, answerer = self.peers[first], self.peers[second]

        assert await _join(offerer.ws, self.m.id, "join-1") is False
        offer_candidates = await offerer.offer(video=True)
        # Held: the other side has not joined, so nothing reaches it yet.
        await answerer.ws.no_frame_of("rtc.signal", 0.3)

        assert await _join(answerer.ws, self.m.id, "join-2") is True
        # The offer first, then every candidate, all sent before this join
        # (and before the answer below), in order.
        got = await answerer.take_signals(1 + len(offer_candidates), IDS[first])
        assert got[0]["type"] == "offer"
        assert got[0]["sdp"] == offerer.sent[0]["sdp"]
        assert got[1:] == offer_candidates
        assert "a=candidate" not in got[0]["sdp"]

        # The answer went out while applying the offer; then its candidates.
        answer_signals = answerer.sent
        assert answer_signals[0]["type"] == "answer"
        back = await offerer.take_signals(len(answer_signals), IDS[second])
        assert back == answer_signals

        for peer in (offerer, answerer):
            live = await peer.ws.expect("session.live", 10)
            assert live["session_id"] == self.m.id
        return offerer, answerer

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.peers.values()))


async def _talk(a: RtcPeer, b: RtcPeer, tag: str) -> None:
    """A data channel message each way."""
    await a.send_text(f"{tag}: {a.label} to {b.label}")
    assert await b.next_message() == f"{tag}: {a.label} to {b.label}"
    await b.send_text(f"{tag}: {b.label} to {a.label}")
    assert await a.next_message() == f"{tag}: {b.label} to {a.label}"


async def _video_frame(peer: RtcPeer) -> VideoFrame:
    track = await peer.remote_track()
    assert track.kind == "video"
    frame = await asyncio.wait_for(track.recv(), RTC_TIMEOUT_S)
    assert isinstance(frame, VideoFrame)
    return frame


async def _call(c: Cluster) -> Call:
    return Call(await open_session(c, c[0], c[1], "c1", "t1"))


@pytest.mark.parametrize("first", ["client", "therapist"])
async def test_call_connects_through_the_relay(start_cluster: StartCluster, first: str) -> None:
    c = await start_cluster(2)
    call = await _call(c)
    try:
        offerer, answerer = await call.connect(first)
        await _talk(offerer, answerer, "hello")
        frame = await _video_frame(answerer)
        assert (frame.width, frame.height) == (640, 480)
        assert call.peers["client"].pc.connectionState == "connected"
        assert call.peers["therapist"].pc.connectionState == "connected"
    finally:
        await call.close()


async def test_call_survives_a_therapist_reconnect_within_the_grace(
    start_cluster: StartCluster,
) -> None:
    grace = 2.5
    c = await start_cluster(2, reconnect_grace_s=grace)
    call = await _call(c)
    try:
        client, therapist = await call.connect("client")
        await _talk(client, therapist, "before")
        track = await therapist.remote_track()

        # The therapist's console (on B) loses its network and comes back on A.
        call.m.therapist.abort()
        await asyncio.sleep(0.2)
        back = await c.ws(c[0], "t1@A-again")
        await back.auth(token("therapist", "t1"))
        ready = await back.expect("session.ready")
        assert ready["session"]["id"] == call.m.id
        assert ready["session"]["state"] == "live"
        therapist.ws = back
        assert await _join(back, call.m.id, "rejoin") is True

        # Media never went through the service: the call went on meanwhile.
        await _talk(client, therapist, "during")
        # The relay reaches the new console (a repeated candidate is harmless).
        await client.signal(client.sent[1])
        assert await therapist.take_signals(1, "c1") == [client.sent[1]]

        # Past the grace the session is still open, and the call still works.
        await call.m.client.no_frame_of("session.ended", grace + 0.5)
        await back.no_frame_of("session.ended", 0.05)
        await _talk(therapist, client, "after")
        frame = await asyncio.wait_for(track.recv(), RTC_TIMEOUT_S)
        assert isinstance(frame, VideoFrame)
        assert client.pc.connectionState == "connected"
    finally:
        await call.close()
