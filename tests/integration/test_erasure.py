"""Erasing a client (PROTOCOL.md §10), done when nothing of it is left to
find: a client chats with its therapist over the websocket on server A,
the therapist saves a note, the client fills its forms, gives feedback with
a comment and leaves its email, each holding a unique marker; an operator
erases it through server B. Then the raw bytes of the shared SQLite file
(and its WAL) and both servers' logs hold no marker, nor any of the sealed
chat, note, form or comment bytes that were in the file before; the old form
ciphertext opens with no data key left in the database; the ledger keeps
the client's entries under its id."""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet, InvalidToken

from .harness import (
    DATA_KEY,
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

CLIENT = "c-erase"
THERAPIST = "t-erase"
TAG = secrets.token_hex(6)
NAME = f"Name Marker {TAG}"
EMAIL = f"email.marker.{TAG}@example.org"
CHAT_C = f"chat-marker-client-{TAG}"
CHAT_T = f"chat-marker-therapist-{TAG}"
NOTE = f"note-marker-{TAG}"
ANSWER = f"answer-marker-{TAG}"
COMMENT = f"comment-marker-{TAG}"
MARKERS = (NAME, EMAIL, CHAT_C, CHAT_T, NOTE, ANSWER, COMMENT)

INTAKE = {
    "reason": ANSWER,
    "emergency_contact_name": "Sam Carter",
    "emergency_contact_phone": "+44 7700 900123",
}
CONSENT = {"agree_therapy": True, "agree_privacy": True}


async def _join(ws: WsClient, session_id: str, ref: str) -> None:
    await ws.send({"type": "session.join", "session_id": session_id, "ref": ref})
    joined = await ws.expect(("session.joined", "error"), predicate=with_ref(ref))
    assert joined["type"] == "session.joined", joined


async def _chat(ws: WsClient, peer: WsClient, session_id: str, text: str, msg_id: str) -> None:
    frame = {
        "type": "chat.send",
        "session_id": session_id,
        "text": text,
        "client_msg_id": msg_id,
        "ref": f"chat-{msg_id}",
    }
    await ws.send(frame)

    def mine(f: Frame) -> bool:
        return bool(f.get("client_msg_id") == msg_id)

    await peer.expect("chat.message", 10, mine)


async def _call_with_everything(c: Cluster, a: ServerProcess) -> Matched:
    m = await open_session(c, a, a, CLIENT, THERAPIST, client_name=NAME)
    await _join(m.client, m.id, "join-c")
    await _join(m.therapist, m.id, "join-t")
    await m.client.expect("session.live", 10)
    await m.therapist.expect("session.live", 10)
    await _chat(m.client, m.therapist, m.id, CHAT_C, "m-c")
    await _chat(m.therapist, m.client, m.id, CHAT_T, "m-t")
    await m.therapist.send({"type": "note.save", "session_id": m.id, "text": NOTE, "ref": "note"})
    saved = await m.therapist.expect(("note.saved", "error"), 10, with_ref("note"))
    assert saved["type"] == "note.saved", saved
    await m.client.send({"type": "session.end", "session_id": m.id, "ref": "end"})
    await m.client.expect("session.ended", 10)
    await m.therapist.expect("session.ended", 10)
    return m


def _rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path, timeout=10)
    try:
        return list(db.execute(sql, args).fetchall())
    finally:
        db.close()


def _stored(server: ServerProcess) -> bytes:
    files = database_files(server)
    assert files, f"no database file in {server.workdir}"
    return b"".join(p.read_bytes() for p in files if not p.name.endswith("-shm"))


async def _ok(c: Cluster, server: ServerProcess, method: str, path: str, tok: str,
              body: Any = None) -> Any:  # fmt: skip
    resp = await c.call(server, method, path, tok, body)
    assert resp.status_code in (200, 201), resp.text
    return resp.json()


async def test_an_erased_client_leaves_nothing_readable(start_cluster: StartCluster) -> None:
    c = await start_cluster(2)
    a, b = c[0], c[1]
    client_tok = token("client", CLIENT, name=NAME)
    m = await _call_with_everything(c, a)
    await _ok(c, a, "PATCH", "/v1/me/contact", client_tok, {"email": EMAIL})
    await _ok(c, a, "PUT", "/v1/me/forms/intake", client_tok, INTAKE)
    await _ok(c, a, "PUT", "/v1/me/forms/consent", client_tok, CONSENT)
    await _ok(c, a, "POST", f"/v1/sessions/{m.id}/feedback", client_tok,
              {"rating": 4, "comment": COMMENT})  # fmt: skip
    # Reading them back, through the other server: every piece is there.
    doc = await _ok(c, b, "GET", "/v1/me/export", client_tok)
    assert [x["text"] for x in doc["sessions"][0]["chat"]] == [CHAT_C, CHAT_T]
    assert {f["name"]: f["answers"] for f in doc["forms"]}["intake"]["reason"] == ANSWER

    # What the file holds before: names and the email in clear, the rest sealed.
    dbfile = a.workdir / "dispatch.db"
    sealed = [
        bytes(r[0])
        for sql in (
            "SELECT body FROM chat_messages",
            "SELECT body FROM notes",
            "SELECT answers FROM form_answers",
            "SELECT comment FROM feedback",
        )
        for r in _rows(dbfile, sql)
    ]
    assert len(sealed) == 2 + 1 + 2 + 1
    (sealed_key,) = _rows(dbfile, "SELECT sealed_key FROM data_keys WHERE user_id = ?", CLIENT)
    (intake_sealed,) = _rows(
        dbfile, "SELECT answers FROM form_answers WHERE client_id = ? AND form = 'intake'", CLIENT
    )
    client_key = Fernet(DATA_KEY).decrypt(bytes(sealed_key[0]))
    assert ANSWER.encode() in Fernet(client_key).decrypt(bytes(intake_sealed[0]))
    before = _stored(a)
    # (Were these not in the file now, the checks after the erasure would prove nothing.)
    for plain in (NAME, EMAIL):
        assert plain.encode() in before, f"{plain!r} is not in the file before the erasure"
    for blob in sealed:
        assert blob in before, "sealed bytes are not in the file before the erasure"

    # Erased through the other server.
    op = token("operator", "op-erase")
    got = await _ok(c, b, "POST", f"/v1/users/{CLIENT}/erase", op)
    erased = got["erased"]
    assert (erased["chat_messages"], erased["notes"], erased["form_answers"]) == (2, 1, 2)
    assert erased["data_key"] is True and erased["names"] == 1 and erased["contact"] is True

    # Nothing to find in the file, its WAL, or either server's log.
    after = _stored(a)
    assert CLIENT.encode() in after  # the ledger, the sessions' rows: by id
    for marker in MARKERS:
        for form in (marker.encode(), marker.encode("utf-16-le")):
            assert form not in after, f"{marker!r} is still in the database file"
    for blob in sealed:
        assert blob not in after, "sealed bytes of the client's data are still in the file"
    for server in (a, b):
        logged = server.log_path.read_text(errors="replace")
        assert f'"user_id": "{CLIENT}"' in logged or CLIENT in logged
        for marker in MARKERS:
            assert marker not in logged, f"{marker!r} in server {server.name}'s log"

    # The old answers open with no key the database still has.
    assert _rows(dbfile, "SELECT 1 FROM data_keys WHERE user_id = ?", CLIENT) == []
    for (other,) in _rows(dbfile, "SELECT sealed_key FROM data_keys"):
        with pytest.raises(InvalidToken):
            Fernet(Fernet(DATA_KEY).decrypt(bytes(other))).decrypt(bytes(intake_sealed[0]))
    # The money stays, by id.
    entries = _rows(
        dbfile,
        "SELECT COUNT(*) FROM ledger_entries WHERE account_id = ?",
        f"client:{CLIENT}",
    )
    assert entries[0][0] >= 1
    assert _rows(dbfile, "SELECT client_name FROM sessions WHERE client_id = ?", CLIENT) == [
        (None,)
    ]
    # Recorded, audited, and the same answer again.
    assert _rows(dbfile, "SELECT erased_by FROM erasures WHERE user_id = ?", CLIENT) == [
        ("op-erase",)
    ]
    trail = await _ok(c, a, "GET", f"/v1/audit?subject={CLIENT}", op)
    assert ("op-erase", "erase") in [(e["actor_id"], e["record"]) for e in trail["entries"]]
    again = await _ok(c, a, "POST", f"/v1/users/{CLIENT}/erase", op)
    assert again == got
