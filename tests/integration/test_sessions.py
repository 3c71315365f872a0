"""Inside a session, over real sockets (PROTOCOL.md §5 "Both, inside a session").

Every test matches a client and a therapist on *different* server processes
of one service, so each frame below crossed the bus. Beyond PROTOCOL.md the
server answers ``session.join`` with ``session.joined`` (``session_id``,
``state``, ``peer_joined``), tells both sides ``session.live`` (``session_id``,
``started_at``) once both joined, and answers ``note.save`` with
``note.saved`` (``session_id``, ``id``, ``saved_at``); ``rtc.signal`` frames
sent to a peer that has not joined yet are held and delivered right after its
join.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import pytest

from .harness import (
    Cluster,
    Frame,
    Matched,
    ServerProcess,
    StartCluster,
    WsClient,
    database_files,
    open_session,
    token,
    with_ref,
)

pytestmark = pytest.mark.integration

#: Frames a participant would see if someone changed its session.
SESSION_EVENTS: Final = (
    "session.peer_joined",
    "session.live",
    "rtc.signal",
    "chat.message",
    "note.saved",
    "session.ended",
)
#: How long "nothing arrives" is watched for. Frames cross the bus in
#: milliseconds on loopback; this is generous.
QUIET_S: Final = 0.7


# -- helpers ---------------------------------------------------------------------------------


def _ts(value: object) -> float:
    """An RFC 3339 time as epoch seconds."""
    assert isinstance(value, str), value
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def _join(ws: WsClient, session_id: str, ref: str) -> Frame:
    await ws.send({"type": "session.join", "session_id": session_id, "ref": ref})
    joined = await ws.expect(("session.joined", "error"), predicate=with_ref(ref))
    assert joined["type"] == "session.joined", joined
    assert joined["session_id"] == session_id
    return joined


async def _go_live(m: Matched) -> tuple[Frame, Frame]:
    """Client joins, then therapist; returns both ``session.live`` frames."""
    await _join(m.client, m.id, "join-c")
    await m.therapist.expect("session.peer_joined")
    await _join(m.therapist, m.id, "join-t")
    await m.client.expect("session.peer_joined")
    live_c = await m.client.expect("session.live")
    live_t = await m.therapist.expect("session.live")
    return live_c, live_t


async def _chat(ws: WsClient, session_id: str, text: str, msg_id: str) -> None:
    await ws.send(
        {
            "type": "chat.send",
            "session_id": session_id,
            "text": text,
            "client_msg_id": msg_id,
            "ref": f"chat-{msg_id}",
        }
    )


def _chat_of(msg_id: str) -> Any:
    def check(frame: Frame) -> bool:
        return bool(frame.get("client_msg_id") == msg_id)

    return check


def _events_since(ws: WsClient, start: int, types: Iterable[str] = SESSION_EVENTS) -> list[str]:
    wanted = set(types)
    return [str(f["type"]) for f in ws.received[start:] if f.get("type") in wanted]


async def _sessions(c: Cluster, server: ServerProcess, role: str, sub: str) -> list[Any]:
    resp = await c.call(server, "GET", "/v1/sessions", token(role, sub))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body.get("sessions"), list), body
    return list(body["sessions"])


async def _get(c: Cluster, server: ServerProcess, path: str, role: str, sub: str) -> Any:
    return await c.call(server, "GET", path, token(role, sub))


async def _end(m: Matched, by: WsClient) -> tuple[Frame, Frame]:
    await by.send({"type": "session.end", "session_id": m.id, "ref": "end"})
    ended_c = await m.client.expect("session.ended", 10)
    ended_t = await m.therapist.expect("session.ended", 10)
    return ended_c, ended_t


async def _claim(c: Cluster, server: ServerProcess, therapist: WsClient, client_id: str) -> Frame:
    """A new request by ``client_id``, claimed by ``therapist``; returns the answer."""
    rid = (await c.create_request(server, client_id))["id"]
    await therapist.send({"type": "claim", "request_id": rid, "ref": f"claim-{rid}"})
    return await therapist.expect(("claim.ok", "error"), 10, with_ref(f"claim-{rid}"))


# -- joining ---------------------------------------------------------------------------------


async def test_join_tells_the_peer_and_both_joined_go_live(start_cluster: StartCluster) -> None:
    c = await start_cluster(2)
    m = await open_session(c, c[0], c[1], "c1", "t1")
    assert m.session["state"] == "ready"
    assert m.session["started_at"] is None

    first = await _join(m.client, m.id, "join-c")
    assert first["ref"] == "join-c"
    assert first["state"] == "ready"
    assert first["peer_joined"] is False
    peer = await m.therapist.expect("session.peer_joined")
    assert peer["session_id"] == m.id
    assert peer["user_id"] == "c1"
    await m.client.no_frame_of("session.live", QUIET_S)

    before = time.time()
    second = await _join(m.therapist, m.id, "join-t")
    assert second["ref"] == "join-t"
    assert second["peer_joined"] is True
    assert second["state"] == "live"
    peer = await m.client.expect("session.peer_joined")
    assert peer == {"type": "session.peer_joined", "session_id": m.id, "user_id": "t1"}
    live_c = await m.client.expect("session.live")
    live_t = await m.therapist.expect("session.live")
    assert live_c["session_id"] == live_t["session_id"] == m.id
    assert live_c["started_at"] == live_t["started_at"]
    assert before - 2 <= _ts(live_c["started_at"]) <= time.time() + 2

    listed = await _sessions(c, c[1], "therapist", "t1")
    assert [(s["id"], s["state"]) for s in listed] == [(m.id, "live")]
    assert listed[0]["started_at"] == live_c["started_at"]


async def test_rtc_signal_goes_to_the_other_participant_alone(
    start_cluster: StartCluster,
) -> None:
    c = await start_cluster(2)
    a, b = c[0], c[1]
    m = await open_session(c, a, b, "c1", "t1")
    await c.put_therapist(a, "t2")
    bystanders = [
        await c.client(a, "c2"),
        await c.client(b, "c3"),
        await c.therapist(a, "t2"),
        await c.operator(b, "op-1"),
    ]

    # Sent before the therapist joined: held, then delivered on its join, in order.
    await _join(m.client, m.id, "join-c")
    early = [
        {"type": "offer", "sdp": f"v=0\r\no=- {i} 1 IN IP4 0.0.0.0\r\n", "seq": i} for i in range(3)
    ] + [{"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host", "sdpMid": "0"}]
    for data in early:
        await m.client.send({"type": "rtc.signal", "session_id": m.id, "data": data})
    await m.therapist.no_frame_of("rtc.signal", QUIET_S)

    mark = len(m.therapist.received)
    await _join(m.therapist, m.id, "join-t")
    relayed = [await m.therapist.expect("rtc.signal") for _ in early]
    assert [f["data"] for f in relayed] == early
    assert {f["from"] for f in relayed} == {"c1"}
    assert {f["session_id"] for f in relayed} == {m.id}
    types = [f["type"] for f in m.therapist.received[mark:]]
    assert types.index("session.joined") < types.index("rtc.signal"), types

    # Both joined: relayed at once, each way, with ``from``; never echoed.
    nested = {"type": "answer", "sdp": "v=0\r\n", "extra": {"list": [1, "two", None], "é": "ü"}}
    await m.therapist.send({"type": "rtc.signal", "session_id": m.id, "data": nested})
    got = await m.client.expect("rtc.signal")
    assert got["data"] == nested
    assert got["from"] == "t1"
    assert got["session_id"] == m.id
    back = {"candidate": "candidate:2 1 udp 1 127.0.0.1 10 typ host", "sdpMid": "0"}
    await m.client.send({"type": "rtc.signal", "session_id": m.id, "data": back})
    got = await m.therapist.expect("rtc.signal")
    assert (got["data"], got["from"]) == (back, "c1")

    await m.client.no_frame_of("rtc.signal", QUIET_S)
    await m.therapist.no_frame_of("rtc.signal", 0.05)
    for ws in bystanders:
        await ws.no_frame_of("rtc.signal", 0.05)
        assert not _events_since(ws, 0), (ws.label, _events_since(ws, 0))


async def test_signals_keep_their_order_across_the_peers_join(
    start_cluster: StartCluster,
) -> None:
    """A stream of signals that starts before the peer joins and goes on after:
    the held ones and the ones relayed at once reach it in the order sent."""
    c = await start_cluster(2)
    m = await open_session(c, c[0], c[1], "c1", "t1")
    await _join(m.client, m.id, "join-c")
    count = 30  # within the per-connection burst (40)

    async def stream() -> None:
        for i in range(count):
            await m.client.send({"type": "rtc.signal", "session_id": m.id, "data": {"seq": i}})
            await asyncio.sleep(0.002)

    sender = asyncio.create_task(stream())
    await asyncio.sleep(0.03)
    await _join(m.therapist, m.id, "join-t")
    await asyncio.wait_for(sender, 10)
    got = [(await m.therapist.expect("rtc.signal"))["data"]["seq"] for _ in range(count)]
    assert got == list(range(count))
    await m.therapist.no_frame_of("rtc.signal", 0.3)


# -- chat and notes --------------------------------------------------------------------------


async def test_chat_is_stored_once_and_shown_to_both(start_cluster: StartCluster) -> None:
    c = await start_cluster(2)
    m = await open_session(c, c[0], c[1], "c1", "t1")
    await _go_live(m)

    await _chat(m.client, m.id, "hello there \u00e9\u00e8 \U0001f600", "m-1")
    mine = await m.client.expect("chat.message", predicate=_chat_of("m-1"))
    theirs = await m.therapist.expect("chat.message", predicate=_chat_of("m-1"))
    for frame in (mine, theirs):
        assert frame["session_id"] == m.id
        assert frame["from"] == "c1"
        assert frame["text"] == "hello there \u00e9\u00e8 \U0001f600"
        assert frame["client_msg_id"] == "m-1"
        assert isinstance(frame["id"], str) and frame["id"]
        assert abs(_ts(frame["sent_at"]) - time.time()) < 30
    assert theirs["id"] == mine["id"]
    assert theirs["sent_at"] == mine["sent_at"]

    # A retry of the same client_msg_id (a lost answer): the sender alone is
    # answered again, with the id of the stored message.
    await _chat(m.client, m.id, "hello there \u00e9\u00e8 \U0001f600", "m-1")
    again = await m.client.expect("chat.message", predicate=_chat_of("m-1"))
    assert again["id"] == mine["id"]
    assert again["sent_at"] == mine["sent_at"]
    await m.therapist.no_frame_of("chat.message", QUIET_S)

    # The same client_msg_id from the other participant is another message.
    longest = "x" * 4000
    await _chat(m.therapist, m.id, longest, "m-1")
    t_mine = await m.therapist.expect("chat.message", predicate=_chat_of("m-1"))
    t_theirs = await m.client.expect("chat.message", predicate=_chat_of("m-1"))
    assert t_mine["id"] == t_theirs["id"] != mine["id"]
    assert t_mine["from"] == "t1"
    assert t_theirs["text"] == longest

    await _chat(m.therapist, m.id, "y" * 4001, "m-long")
    err = await m.therapist.expect("error", predicate=with_ref("chat-m-long"))
    assert err["code"] == "bad_message"
    await _chat(m.client, m.id, "", "m-empty")
    err = await m.client.expect("error", predicate=with_ref("chat-m-empty"))
    assert err["code"] == "bad_message"
    await m.client.no_frame_of("chat.message", QUIET_S)
    await m.therapist.no_frame_of("chat.message", 0.05)

    for server in c.servers:
        resp = await _get(c, server, f"/v1/sessions/{m.id}/transcript", "client", "c1")
        assert resp.status_code == 200, resp.text
        messages = resp.json()["messages"]
        assert [x["id"] for x in messages] == [mine["id"], t_mine["id"]]
        assert [x["text"] for x in messages] == [mine["text"], longest]


async def test_notes_are_the_therapists_alone(start_cluster: StartCluster) -> None:
    c = await start_cluster(2)
    m = await open_session(c, c[0], c[1], "c1", "t1")
    await _go_live(m)
    text = f"assessment {secrets.token_hex(8)}: follow up on sleep"

    await m.therapist.send({"type": "note.save", "session_id": m.id, "text": text, "ref": "n1"})
    saved = await m.therapist.expect(("note.saved", "error"), predicate=with_ref("n1"))
    assert saved["type"] == "note.saved", saved
    assert saved["session_id"] == m.id
    assert isinstance(saved["id"], str) and saved["id"]
    assert abs(_ts(saved["saved_at"]) - time.time()) < 30

    await m.client.send({"type": "note.save", "session_id": m.id, "text": "mine", "ref": "n2"})
    err = await m.client.expect("error", predicate=with_ref("n2"))
    assert err["code"] == "forbidden"

    await m.client.no_frame_of("note.saved", QUIET_S)
    assert not any(text in json.dumps(f) for f in m.client.received)

    resp = await _get(c, c[0], f"/v1/sessions/{m.id}/notes", "therapist", "t1")
    assert resp.status_code == 200, resp.text
    assert resp.json()["notes"] == [{"text": text, "saved_at": saved["saved_at"]}]

    # After the call the therapist may still add notes, over HTTP, on either server.
    await m.client.send({"type": "session.end", "session_id": m.id, "ref": "end"})
    await m.therapist.expect("session.ended", 10)
    path = f"/v1/sessions/{m.id}/notes"
    later = "written after the call"
    resp = await c.call(c[1], "POST", path, token("therapist", "t1"), {"text": later})
    assert resp.status_code == 201, resp.text
    assert resp.json()["note"]["text"] == later
    resp = await _get(c, c[0], path, "therapist", "t1")
    assert [n["text"] for n in resp.json()["notes"]] == [text, later]
    # Nobody else may, and a blank or oversized note is refused.
    for who, body, status in (
        (token("therapist", "t2"), {"text": "x"}, 404),
        (token("client", "c1"), {"text": "x"}, 403),
        (token("therapist", "t1"), {"text": "  "}, 422),
        (token("therapist", "t1"), {"text": "x" * 20001}, 422),
        (token("therapist", "t1"), ["x"], 400),
    ):
        resp = await c.call(c[0], "POST", path, who, body)
        assert resp.status_code == status, resp.text
    resp = await _get(c, c[0], path, "therapist", "t1")
    assert len(resp.json()["notes"]) == 2


# -- the end ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ender", ["client", "therapist"])
async def test_either_side_ends_the_session(start_cluster: StartCluster, ender: str) -> None:
    c = await start_cluster(2)
    m = await open_session(c, c[0], c[1], "c1", "t1")
    live, _ = await _go_live(m)
    await asyncio.sleep(1.2)

    ended_c, ended_t = await _end(m, m.client if ender == "client" else m.therapist)
    for frame in (ended_c, ended_t):
        assert frame["session_id"] == m.id
        assert frame["reason"] == f"ended_by_{ender}"
        assert isinstance(frame["duration_s"], int | float)
        assert 1 <= frame["duration_s"] <= 10, frame["duration_s"]
    assert ended_c["duration_s"] == ended_t["duration_s"]

    # An ended session relays nothing more; ending it again only repeats how it ended.
    other = m.therapist if ender == "client" else m.client
    ws = m.client if ender == "client" else m.therapist
    late_frames: list[Frame] = [
        {"type": "rtc.signal", "data": {"late": True}},
        {"type": "chat.send", "text": "too late", "client_msg_id": "late-1"},
        {"type": "session.join"},
    ]
    for i, late_frame in enumerate(late_frames):
        await ws.send({**late_frame, "session_id": m.id, "ref": f"late-{i}"})
        err = await ws.expect(("error", *SESSION_EVENTS), predicate=with_ref(f"late-{i}"))
        assert (err["type"], err.get("code")) == ("error", "not_found"), err
    await ws.send({"type": "session.end", "session_id": m.id, "ref": "end-again"})
    again = await ws.expect("session.ended", predicate=with_ref("end-again"))
    assert (again["reason"], again["duration_s"]) == (ended_c["reason"], ended_c["duration_s"])
    await asyncio.sleep(QUIET_S)
    late = [f["type"] for f in other.unconsumed() if f.get("type") in SESSION_EVENTS]
    assert late == [], late

    # The therapist is free again: it may claim the next request at once.
    answer = await _claim(c, c[0], m.therapist, "c2")
    assert answer["type"] == "claim.ok", answer
    # And the client may ask again.
    again = await c.create_request(c[1], "c1")
    assert again["state"] == "waiting"

    listed = await _sessions(c, c[0], "client", "c1")
    assert listed[0]["id"] == m.id
    assert listed[0]["state"] == "ended"
    assert listed[0]["duration_s"] == ended_c["duration_s"]
    assert listed[0]["started_at"] == live["started_at"]
    assert _ts(listed[0]["ended_at"]) >= _ts(live["started_at"])


@pytest.mark.parametrize("state", ["live", "ready"])
async def test_peer_lost_past_the_grace(start_cluster: StartCluster, state: str) -> None:
    grace = 1.5
    c = await start_cluster(2, reconnect_grace_s=grace)
    m = await open_session(c, c[0], c[1], "c1", "t1")
    if state == "live":
        await _go_live(m)
        gone, stays = m.therapist, m.client
    else:
        # Only the therapist opened the call; the client drops before joining.
        await _join(m.therapist, m.id, "join-t")
        gone, stays = m.client, m.therapist

    dropped = time.monotonic()
    gone.abort()
    ended = await stays.expect("session.ended", grace + 8)
    waited = time.monotonic() - dropped
    assert ended["session_id"] == m.id
    assert ended["reason"] == "peer_lost"
    assert waited >= grace - 0.3, f"ended {waited:.2f}s after the drop, grace {grace}s"
    if state == "ready":
        assert ended["duration_s"] == 0

    # Back after the end: nothing to resume, and the therapist is free.
    if gone is m.therapist:
        back = await c.therapist(c[0], "t1")
    else:
        back = await c.client(c[0], "c1")
    await back.no_frame_of("session.ready", QUIET_S)
    therapist = back if gone is m.therapist else m.therapist
    answer = await _claim(c, c[1], therapist, "c2")
    assert answer["type"] == "claim.ok", answer


async def test_reconnect_within_the_grace_keeps_the_session(
    start_cluster: StartCluster,
) -> None:
    grace = 2.0
    c = await start_cluster(2, reconnect_grace_s=grace)
    m = await open_session(c, c[0], c[1], "c1", "t1")
    await _go_live(m)

    m.therapist.abort()
    await asyncio.sleep(grace / 4)
    back = await c.ws(c[0], "t1@A-again")
    await back.auth(token("therapist", "t1"))
    ready = await back.expect("session.ready")
    assert ready["session"]["id"] == m.id
    assert ready["session"]["state"] == "live"
    joined = await _join(back, m.id, "rejoin")
    assert joined["peer_joined"] is True

    # Well past the grace: the session goes on, and both ways still work.
    await m.client.no_frame_of("session.ended", grace + 0.5)
    await back.no_frame_of("session.ended", 0.05)
    await _chat(m.client, m.id, "still there?", "after")
    got = await back.expect("chat.message", predicate=_chat_of("after"))
    assert got["from"] == "c1"
    await back.send({"type": "rtc.signal", "session_id": m.id, "data": {"ping": 1}})
    sig = await m.client.expect("rtc.signal")
    assert (sig["data"], sig["from"]) == ({"ping": 1}, "t1")


# -- outsiders -------------------------------------------------------------------------------


async def test_intruders_are_forbidden_every_session_frame(start_cluster: StartCluster) -> None:
    c = await start_cluster(2)
    a, b = c[0], c[1]
    m = await open_session(c, a, b, "c1", "t1")
    await c.put_therapist(a, "t2")
    intruders = [
        await c.client(a, "c2"),
        await c.therapist(b, "t2"),
        await c.therapist(a, "t3", available=False),
        await c.operator(b, "op-1"),
    ]

    async def attack(round_: str) -> None:
        frames: list[Frame] = [
            {"type": "session.join"},
            {"type": "rtc.signal", "data": {"type": "offer", "sdp": "v=0\r\n"}},
            {"type": "chat.send", "text": "let me in", "client_msg_id": "evil-1"},
            {"type": "note.save", "text": "not my session"},
            {"type": "session.end"},
        ]
        for ws in intruders:
            for frame in frames:
                ref = f"{round_}-{frame['type']}"
                await ws.send({**frame, "session_id": m.id, "ref": ref})
                err = await ws.expect(("error", *SESSION_EVENTS), predicate=with_ref(ref))
                assert err["type"] == "error", (ws.label, err)
                assert err["code"] == "forbidden", (ws.label, frame["type"], err["code"])

    # While the session is ready, then while it is live.
    mark_c, mark_t = len(m.client.received), len(m.therapist.received)
    await attack("ready")
    await asyncio.sleep(QUIET_S)
    assert _events_since(m.client, mark_c) == []
    assert _events_since(m.therapist, mark_t) == []

    await _go_live(m)
    mark_c, mark_t = len(m.client.received), len(m.therapist.received)
    await attack("live")
    await asyncio.sleep(QUIET_S)
    assert _events_since(m.client, mark_c) == []
    assert _events_since(m.therapist, mark_t) == []
    for ws in intruders:
        assert _events_since(ws, 0) == [], ws.label

    # Nothing changed: still live, no chat, no notes; the participants go on.
    listed = await _sessions(c, a, "client", "c1")
    assert (listed[0]["id"], listed[0]["state"]) == (m.id, "live")
    resp = await _get(c, a, f"/v1/sessions/{m.id}/transcript", "client", "c1")
    assert resp.json() == {"messages": []}
    resp = await _get(c, b, f"/v1/sessions/{m.id}/notes", "therapist", "t1")
    assert resp.json() == {"notes": []}
    await _chat(m.therapist, m.id, "still private", "ok-1")
    got = await m.client.expect("chat.message", predicate=_chat_of("ok-1"))
    assert got["from"] == "t1"
    ended_c, _ = await _end(m, m.client)
    assert ended_c["reason"] == "ended_by_client"


# -- the call log ----------------------------------------------------------------------------


async def test_call_log_over_http(start_cluster: StartCluster) -> None:
    c = await start_cluster(2)
    a, b = c[0], c[1]

    first = await open_session(
        c, a, b, "c1", "t1", client_name="Alice Example", therapist_name="Dr One"
    )
    await _go_live(first)
    chats: list[Frame] = []
    for ws, msg_id, text in [
        (first.client, "c-1", "hi, first message"),
        (first.therapist, "t-1", "hello, how are you?"),
        (first.client, "c-2", "fine thanks"),
    ]:
        await _chat(ws, first.id, text, msg_id)
        chats.append(await first.client.expect("chat.message", predicate=_chat_of(msg_id)))
    notes: list[Frame] = []
    for i, text in enumerate(["first impression", "plan: two more sessions"]):
        ref = f"note-{i}"
        await first.therapist.send(
            {"type": "note.save", "session_id": first.id, "text": text, "ref": ref}
        )
        notes.append(await first.therapist.expect("note.saved", predicate=with_ref(ref)))
    ended_first, _ = await _end(first, first.client)

    second = await open_session(
        c,
        b,
        a,
        "c1",
        "t2",
        client_name="Alice Example",
        therapist_name="Dr Two",
    )
    await _go_live(second)
    ended_second, _ = await _end(second, second.therapist)

    # The client's log, from either server: newest first, the therapist's name.
    for server in (a, b):
        mine = await _sessions(c, server, "client", "c1")
        assert [s["id"] for s in mine] == [second.id, first.id]
        assert [s["name"] for s in mine] == ["Dr Two", "Dr One"]
        assert [s["therapist_id"] for s in mine] == ["t2", "t1"]
        assert [s["duration_s"] for s in mine] == [
            ended_second["duration_s"],
            ended_first["duration_s"],
        ]
        for s in mine:
            assert s["client_id"] == "c1"
            assert s["state"] == "ended"
            assert {"request_id", "started_at", "ended_at"} <= set(s)
    assert mine[1]["request_id"] == first.request_id

    # Each therapist's log: its own session alone, the client's name (token claim).
    for sub, session in (("t1", first), ("t2", second)):
        theirs = await _sessions(c, a, "therapist", sub)
        assert [(s["id"], s["name"], s["client_id"]) for s in theirs] == [
            (session.id, "Alice Example", "c1")
        ]
    assert await _sessions(c, b, "client", "c-nobody") == []
    resp = await _get(c, a, "/v1/sessions", "operator", "op-1")
    assert resp.status_code == 403, resp.text
    resp = await c.call(a, "GET", "/v1/sessions")
    assert resp.status_code == 401, resp.text

    # The transcript: both participants and an operator; the chat as it was shown.
    path = f"/v1/sessions/{first.id}/transcript"
    shown = [{k: v for k, v in f.items() if k not in ("type", "ref")} for f in chats]
    for role, sub in (("client", "c1"), ("therapist", "t1"), ("operator", "op-1")):
        resp = await _get(c, b, path, role, sub)
        assert resp.status_code == 200, (role, resp.text)
        got = [{k: v for k, v in x.items() if k in shown[0]} for x in resp.json()["messages"]]
        assert got == shown, role
    resp = await _get(c, b, path, "client", "c2")
    assert resp.status_code == 404, resp.text
    resp = await _get(c, b, path, "therapist", "t2")
    assert resp.status_code == 404, resp.text
    resp = await _get(c, b, f"/v1/sessions/{second.id}/transcript", "client", "c1")
    assert resp.json() == {"messages": []}

    # The notes: the session's therapist alone.
    path = f"/v1/sessions/{first.id}/notes"
    resp = await _get(c, a, path, "therapist", "t1")
    assert resp.status_code == 200, resp.text
    assert resp.json()["notes"] == [
        {"text": "first impression", "saved_at": notes[0]["saved_at"]},
        {"text": "plan: two more sessions", "saved_at": notes[1]["saved_at"]},
    ]
    for role, sub, status in (
        ("client", "c1", 403),
        ("operator", "op-1", 403),
        ("therapist", "t2", 404),
    ):
        resp = await _get(c, a, path, role, sub)
        assert resp.status_code == status, (role, sub, resp.status_code, resp.text)
    resp = await _get(c, a, "/v1/sessions/s-no-such-session/notes", "therapist", "t1")
    assert resp.status_code == 404, resp.text


async def test_chat_and_notes_are_encrypted_at_rest(start_cluster: StartCluster) -> None:
    c = await start_cluster(2)
    m = await open_session(c, c[0], c[1], "c1", "t1")
    await _go_live(m)
    chat_text = f"chat-in-clear-{secrets.token_hex(12)}"
    note_text = f"note-in-clear-{secrets.token_hex(12)}"
    await _chat(m.client, m.id, chat_text, "secret-1")
    await m.therapist.expect("chat.message", predicate=_chat_of("secret-1"))
    await m.therapist.send(
        {"type": "note.save", "session_id": m.id, "text": note_text, "ref": "note"}
    )
    await m.therapist.expect("note.saved", predicate=with_ref("note"))
    await _end(m, m.therapist)

    # The API gives the text back...
    resp = await _get(c, c[1], f"/v1/sessions/{m.id}/transcript", "client", "c1")
    assert [x["text"] for x in resp.json()["messages"]] == [chat_text]
    resp = await _get(c, c[1], f"/v1/sessions/{m.id}/notes", "therapist", "t1")
    assert [x["text"] for x in resp.json()["notes"]] == [note_text]

    # ... the database file (with its WAL) holds the session but not the text.
    files = database_files(c[0])
    assert files, f"no database file in {c[0].workdir}"
    stored = b"".join(path.read_bytes() for path in files)
    assert m.id.encode() in stored, "the session is not in the shared database file"
    for secret in (chat_text, note_text):
        assert secret.encode() not in stored
        assert secret.encode("utf-16-le") not in stored


# -- the durable store failing for a moment -----------------------------------------------


class _TableAway:
    """Rename the durable store's ``sessions`` table away and back: every
    server's next write to it fails (``unavailable``) in between."""

    def __init__(self, server: ServerProcess) -> None:
        self._db = sqlite3.connect(server.workdir / "dispatch.db", timeout=10, isolation_level=None)

    def away(self) -> None:
        self._db.execute("ALTER TABLE sessions RENAME TO sessions_away")

    def back(self) -> None:
        self._db.execute("ALTER TABLE sessions_away RENAME TO sessions")

    def close(self) -> None:
        self._db.close()


async def test_a_join_retried_after_the_database_failed_still_goes_live(
    start_cluster: StartCluster,
) -> None:
    """The second ``session.join`` fails with ``unavailable`` while the durable
    store cannot record the start; once it is back, the retried join must
    bring the session live for both (``session.live``, ``started_at`` in the
    call log), as any retry after ``unavailable`` would."""
    c = await start_cluster(2)
    m = await open_session(c, c[0], c[1], "c1", "t1")
    await _join(m.client, m.id, "join-c")
    await m.therapist.expect("session.peer_joined")

    # The store's sessions table disappears for a moment (renamed away).
    table = _TableAway(c[0])
    try:
        table.away()
        await m.therapist.send({"type": "session.join", "session_id": m.id, "ref": "join-t"})
        err = await m.therapist.expect("error", predicate=with_ref("join-t"))
        assert err["code"] == "unavailable", err
        table.back()
    finally:
        table.close()

    await _join(m.therapist, m.id, "join-t-again")
    live_c = await m.client.expect("session.live", 5)
    live_t = await m.therapist.expect("session.live", 5)
    assert live_c["started_at"] == live_t["started_at"]
    listed = await _sessions(c, c[0], "client", "c1")
    assert (listed[0]["state"], listed[0]["started_at"]) == ("live", live_c["started_at"])


async def test_an_end_retried_after_the_database_failed_reaches_both(
    start_cluster: StartCluster,
) -> None:
    """``session.end`` fails with ``unavailable`` while the store cannot record
    it; the retry must tell both sides and leave the call log ``ended``."""
    c = await start_cluster(2)
    m = await open_session(c, c[0], c[1], "c1", "t1")
    await _go_live(m)
    table = _TableAway(c[0])
    try:
        table.away()
        await m.client.send({"type": "session.end", "session_id": m.id, "ref": "end-1"})
        err = await m.client.expect(("error", "session.ended"), predicate=with_ref("end-1"))
        assert (err["type"], err.get("code")) == ("error", "unavailable"), err
        table.back()
    finally:
        table.close()

    await m.client.send({"type": "session.end", "session_id": m.id, "ref": "end-2"})
    ended = await m.client.expect("session.ended", 5)
    assert ended["reason"] == "ended_by_client"
    ended_t = await m.therapist.expect("session.ended", 5)
    assert ended_t["reason"] == "ended_by_client"
    listed = await _sessions(c, c[1], "therapist", "t1")
    assert (listed[0]["id"], listed[0]["state"]) == (m.id, "ended")


async def test_peer_lost_while_the_database_is_down_is_still_announced(
    start_cluster: StartCluster,
) -> None:
    """The grace runs out while the store cannot record the end: once it is
    back, the participant still connected is told (``peer_lost``) and the call
    log says ``ended``."""
    grace = 1.0
    # Quick background turns, so that a repair made by a periodic loop also counts.
    c = await start_cluster(2, reconnect_grace_s=grace, billing_tick_s=0.2)
    m = await open_session(c, c[0], c[1], "c1", "t1")
    await _go_live(m)
    table = _TableAway(c[0])
    try:
        table.away()
        m.therapist.abort()
        await asyncio.sleep(grace + 1.5)
        table.back()
    finally:
        table.close()
    ended = await m.client.expect("session.ended", 8)
    assert ended["reason"] == "peer_lost"
    listed = await _sessions(c, c[0], "client", "c1")
    assert (listed[0]["id"], listed[0]["state"]) == (m.id, "ended")


async def test_an_accept_retried_after_the_database_failed_opens_the_session(
    start_cluster: StartCluster,
) -> None:
    """``offer.accept`` fails with ``unavailable`` while the store cannot record
    the new session; the client's retry must open it (``session.ready`` to
    both, and the session in the call log)."""
    c = await start_cluster(2)
    await c.put_therapist(c[1], "t1")
    therapist = await c.therapist(c[1], "t1")
    client = await c.client(c[0], "c1")
    rid = (await c.create_request(c[0], "c1"))["id"]
    await therapist.send({"type": "claim", "request_id": rid, "ref": "claim"})
    await therapist.expect("claim.ok", predicate=with_ref("claim"))
    await client.expect("request.offer")
    accept = {"type": "offer.accept", "request_id": rid, "terms_version": "2024-05-01"}
    table = _TableAway(c[0])
    try:
        table.away()
        await client.send({**accept, "ref": "acc-1"})
        err = await client.expect(("error", "session.ready"), predicate=with_ref("acc-1"))
        assert (err["type"], err.get("code")) == ("error", "unavailable"), err
        table.back()
    finally:
        table.close()

    await client.send({**accept, "ref": "acc-2"})
    answer = await client.expect(("error", "session.ready"), 5)
    assert answer["type"] == "session.ready", answer
    ready_t = await therapist.expect("session.ready", 5)
    assert ready_t["session"]["id"] == answer["session"]["id"]
    listed = await _sessions(c, c[0], "client", "c1")
    assert [s["id"] for s in listed] == [answer["session"]["id"]]


# -- the shared SQLite file ------------------------------------------------------------------


async def test_a_server_starts_while_another_holds_the_new_database_files_lock(
    redis_url: str, tmp_path: Path, dispatch_cli: Path
) -> None:
    """Servers on one host share one SQLite file and may start together. The
    first to open a new file switches it to WAL while holding its lock; the
    others must wait for that lock (the busy timeout is 15 s), not fail to
    start. Here the test holds the write lock of a new (rollback-journal)
    file for a moment, as a peer server in the middle of that switch does."""
    holder = sqlite3.connect(tmp_path / "dispatch.db", isolation_level=None)
    server = ServerProcess("W", redis_url, tmp_path)
    try:
        holder.execute("BEGIN IMMEDIATE")
        server.spawn()
        await asyncio.sleep(2.5)  # the server is up to its migration by now
        holder.execute("ROLLBACK")
        holder.close()
        await server.wait_ready()
        c = Cluster([server])
        try:
            await c.wait_ready(server)
        finally:
            await c.aclose()
    finally:
        holder.close()
        server.kill()
