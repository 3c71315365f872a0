"""signaling.records.Records on SQLite and PostgreSQL: sessions, chat, notes,
encryption at rest, key rotation, and a database that does not answer."""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from core.db import Database
from core.errors import NotFound, Unavailable
from dispatch import cli
from pool.model import Request, Session, SessionState, State
from signaling.crypto import Cipher, DataKeyError, new_key
from signaling.records import ChatMessage, Note, Records, SessionRecord
from signaling.tables import chat_messages, notes, sessions

KEY_A = new_key()
KEY_B = new_key()
T0 = 1_760_000_000.25  # a fixed clock: 2025-10-09T08:53:20.250Z


@pytest.fixture
def records(db: Database) -> Records:
    return Records(db, Cipher.from_setting(KEY_A))


def _ids(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


def make(
    client: str = "c1", therapist: str = "t1", created_at: float = T0
) -> tuple[Session, Request]:
    rid, sid = _ids("req"), _ids("ses")
    request = Request(
        id=rid,
        client_id=client,
        region="GB-ENG",
        language="en",
        topics=("anxiety",),
        notes="",
        age=None,
        guardian_consent=False,
        created_at=created_at,
        state=State.MATCHED,
        claimed_by=therapist,
        claimed_at=created_at + 5,
        session_id=sid,
    )
    session = Session(
        id=sid, request_id=rid, client_id=client, therapist_id=therapist, created_at=created_at + 9
    )
    return session, request


async def matched(
    records: Records, client: str = "c1", therapist: str = "t1", at: float = T0
) -> Session:
    session, request = make(client, therapist, at - 10)
    await records.session_matched(
        session,
        request,
        client_name="Client Name",
        therapist_name="Dr Therapist",
        terms_version="terms-2025-01",
        now=at,
    )
    return session


# -- sessions ------------------------------------------------------------------


async def test_session_matched_records_every_column(records: Records) -> None:
    session, request = make(created_at=T0 - 30)
    await records.session_matched(
        session,
        request,
        client_name="Ann",
        therapist_name="Dr Bo",
        terms_version="v7",
        now=T0,
    )
    got = await records.get_session(session.id)
    assert got == SessionRecord(
        id=session.id,
        request_id=request.id,
        client_id="c1",
        therapist_id="t1",
        client_name="Ann",
        therapist_name="Dr Bo",
        state=SessionState.READY,
        terms_version="v7",
        requested_at=T0 - 30,
        claimed_at=T0 - 25,
        matched_at=T0,
        started_at=None,
        ended_at=None,
        end_reason=None,
        duration_s=None,
    )
    assert await records.get_session("ses_missing") is None


async def test_session_matched_is_idempotent(records: Records) -> None:
    session, request = make()
    await records.session_matched(
        session, request, client_name="Ann", therapist_name=None, terms_version="v1", now=T0
    )
    before = await records.get_session(session.id)
    await records.session_matched(
        session, request, client_name="Other", therapist_name="X", terms_version="v2", now=T0 + 99
    )
    assert await records.get_session(session.id) == before
    assert before is not None and before.client_name == "Ann" and before.therapist_name is None
    assert len(await records.sessions_of("c1")) == 1


async def test_session_matched_needs_the_sessions_request(records: Records) -> None:
    session, _ = make()
    _, other_request = make()
    with pytest.raises(ValueError, match="not made from this request"):
        await records.session_matched(
            session,
            other_request,
            client_name=None,
            therapist_name=None,
            terms_version="v1",
            now=T0,
        )


async def test_live_then_ended_first_call_wins(records: Records) -> None:
    session = await matched(records)
    await records.session_live(session.id, T0 + 20)
    await records.session_live(session.id, T0 + 40)  # a repeat changes nothing
    live = await records.get_session(session.id)
    assert live is not None
    assert (live.state, live.started_at, live.ended_at) == (SessionState.LIVE, T0 + 20, None)

    await records.session_ended(session.id, T0 + 80, "ended_by_client", 60)
    await records.session_ended(session.id, T0 + 95, "peer_lost", 75)  # the first end wins
    await records.session_live(session.id, T0 + 100)  # too late: still ended
    ended = await records.get_session(session.id)
    assert ended is not None
    assert (ended.state, ended.started_at, ended.ended_at) == (
        SessionState.ENDED,
        T0 + 20,
        T0 + 80,
    )
    assert (ended.end_reason, ended.duration_s) == ("ended_by_client", 60)


async def test_a_session_can_end_without_going_live(records: Records) -> None:
    session = await matched(records)
    await records.session_ended(session.id, T0 + 5, "peer_lost", 0)
    got = await records.get_session(session.id)
    assert got is not None
    assert (got.state, got.started_at, got.end_reason, got.duration_s) == (
        SessionState.ENDED,
        None,
        "peer_lost",
        0,
    )


async def test_unknown_sessions_are_not_found(records: Records) -> None:
    with pytest.raises(NotFound):
        await records.session_live("ses_nope", T0)
    with pytest.raises(NotFound):
        await records.session_ended("ses_nope", T0, "peer_lost", 0)
    with pytest.raises(NotFound):
        await records.add_chat("ses_nope", "c1", "m1", "hello", T0)
    with pytest.raises(NotFound):
        await records.add_note("ses_nope", "t1", "note", T0)
    assert await records.transcript("ses_nope") == []
    assert await records.notes("ses_nope") == []


async def test_sessions_of_newest_first_as_client_or_therapist(records: Records) -> None:
    s1 = await matched(records, "alice", "tom", at=T0)
    s2 = await matched(records, "bob", "tom", at=T0 + 100)
    s3 = await matched(records, "alice", "tina", at=T0 + 50)
    s4 = await matched(records, "tom", "tina", at=T0 + 200)  # tom as a client, elsewhere
    await matched(records, "carol", "tina", at=T0 + 300)

    assert [r.id for r in await records.sessions_of("alice")] == [s3.id, s1.id]
    assert [r.id for r in await records.sessions_of("tom")] == [s4.id, s2.id, s1.id]
    assert [r.id for r in await records.sessions_of("tom", limit=2)] == [s4.id, s2.id]
    assert len(await records.sessions_of("tina")) == 3
    assert await records.sessions_of("nobody") == []
    for rec in await records.sessions_of("alice"):
        assert "alice" in (rec.client_id, rec.therapist_id)


# -- chat ------------------------------------------------------------------------


async def test_add_chat_and_the_frame(records: Records) -> None:
    session = await matched(records)
    msg, new = await records.add_chat(session.id, "c1", "cm-1", "Hello there", T0 + 1.5)
    assert new is True
    assert msg.id.startswith("msg_") and msg.text == "Hello there" and msg.sent_at == T0 + 1.5
    assert msg.frame() == {
        "type": "chat.message",
        "session_id": session.id,
        "id": msg.id,
        "from": "c1",
        "text": "Hello there",
        "sent_at": "2025-10-09T08:53:21.750Z",
        "client_msg_id": "cm-1",
    }
    assert await records.transcript(session.id) == [msg]


async def test_a_retry_is_stored_once_and_returns_the_first(records: Records) -> None:
    session = await matched(records)
    first, new = await records.add_chat(session.id, "c1", "cm-1", "original", T0)
    again, new_again = await records.add_chat(session.id, "c1", "cm-1", "edited?", T0 + 9)
    assert (new, new_again) == (True, False)
    assert again == first  # same id, text and time
    # The same client_msg_id from the other participant is another message.
    other, other_new = await records.add_chat(session.id, "t1", "cm-1", "reply", T0 + 1)
    assert other_new and other.id != first.id
    assert [m.text for m in await records.transcript(session.id)] == ["original", "reply"]


async def test_concurrent_retries_across_two_databases_store_one_row(
    database_url: str, records: Records
) -> None:
    """Two servers (two Database objects, two connection pools) receive the
    same chat.send at once: one row, and every caller gets its id."""
    session = await matched(records)
    other_db = Database.from_url(database_url)
    other = Records(other_db, Cipher.from_setting(KEY_A))
    try:
        for round_ in range(3):
            cm = f"retry-{round_}"
            results = await asyncio.gather(
                *(
                    (records if i % 2 else other).add_chat(
                        session.id, "c1", cm, f"text {round_}", T0 + round_
                    )
                    for i in range(8)
                )
            )
            assert sum(1 for _, new in results if new) == 1
            assert len({msg.id for msg, _ in results}) == 1
            assert {msg.text for msg, _ in results} == {f"text {round_}"}
        transcript = await records.transcript(session.id)
        assert [m.client_msg_id for m in transcript] == ["retry-0", "retry-1", "retry-2"]
    finally:
        await other_db.aclose()


async def test_concurrent_distinct_messages_keep_one_order(
    database_url: str, records: Records
) -> None:
    session = await matched(records)
    other_db = Database.from_url(database_url)
    other = Records(other_db, Cipher.from_setting(KEY_A))
    try:
        results = await asyncio.gather(
            *(
                (records if i % 2 else other).add_chat(
                    session.id, "c1" if i % 3 else "t1", f"m{i}", f"message {i}", T0 + i
                )
                for i in range(20)
            )
        )
        assert all(new for _, new in results)
        from_a = await records.transcript(session.id)
        from_b = await other.transcript(session.id)
        assert from_a == from_b and len(from_a) == 20
        assert {m.id for m in from_a} == {m.id for m, _ in results}
    finally:
        await other_db.aclose()


async def test_transcript_is_in_stored_order_and_per_session(records: Records) -> None:
    session = await matched(records)
    elsewhere = await matched(records, "c2", "t2")
    # Stored in this order, even though the clocks say otherwise.
    texts = ["first", "second", "third", "fourth"]
    for i, text in enumerate(texts):
        sender = "c1" if i % 2 == 0 else "t1"
        await records.add_chat(session.id, sender, f"m{i}", text, T0 + 10 - i)
        await records.add_chat(elsewhere.id, "c2", f"m{i}", f"other {i}", T0 + i)
    transcript = await records.transcript(session.id)
    assert [m.text for m in transcript] == texts
    assert [m.sender_id for m in transcript] == ["c1", "t1", "c1", "t1"]
    assert [m.sent_at for m in transcript] == [T0 + 10, T0 + 9, T0 + 8, T0 + 7]
    assert all(m.session_id == session.id for m in transcript)
    assert len(await records.transcript(elsewhere.id)) == 4


# -- notes -----------------------------------------------------------------------


async def test_notes_oldest_first_and_per_session(records: Records) -> None:
    session = await matched(records)
    elsewhere = await matched(records, "c2", "t1")
    late = await records.add_note(session.id, "t1", "second thought", T0 + 60)
    early = await records.add_note(session.id, "t1", "first impression", T0 + 10)
    await records.add_note(elsewhere.id, "t1", "another client", T0)
    assert isinstance(late, Note) and late.saved_at == T0 + 60
    assert await records.notes(session.id) == [early, late]
    assert early.public() == {"text": "first impression", "saved_at": "2025-10-09T08:53:30.250Z"}
    assert [n.text for n in await records.notes(elsewhere.id)] == ["another client"]
    # Each save adds a note, even with the same text.
    await records.add_note(session.id, "t1", "second thought", T0 + 61)
    assert len(await records.notes(session.id)) == 3


# -- encryption at rest -----------------------------------------------------------

SECRET_CHAT = "my husband does not know I am here"
SECRET_NOTE = "client reports panic attacks since March"


async def _stored_bodies(db: Database) -> list[bytes]:
    async with db.engine.connect() as conn:
        chat = (await conn.execute(select(chat_messages.c.body))).scalars().all()
        note = (await conn.execute(select(notes.c.body))).scalars().all()
    return [bytes(b) for b in [*chat, *note]]


async def test_the_database_holds_no_text_in_clear(db: Database, records: Records) -> None:
    session = await matched(records)
    await records.add_chat(session.id, "c1", "m1", SECRET_CHAT, T0)
    await records.add_note(session.id, "t1", SECRET_NOTE, T0)
    bodies = await _stored_bodies(db)
    assert len(bodies) == 2
    for body in bodies:
        assert SECRET_CHAT.encode() not in body and SECRET_NOTE.encode() not in body
        assert b"panic" not in body and b"husband" not in body
    cipher = Cipher.from_setting(KEY_A)
    assert {cipher.decrypt(b) for b in bodies} == {SECRET_CHAT, SECRET_NOTE}
    # Nothing else in the row carries the text either.
    async with db.engine.connect() as conn:
        for table in (chat_messages, notes, sessions):
            for row in (await conn.execute(select(table))).all():
                assert not any(isinstance(v, str) and ("husband" in v or "panic" in v) for v in row)


def _files_bytes(directory: Path, prefix: str) -> bytes:
    """The database file and its -wal/-shm companions, if any are left."""
    return b"".join(p.read_bytes() for p in directory.iterdir() if p.name.startswith(prefix))


async def test_the_sqlite_file_holds_no_text_in_clear(tmp_path: Path) -> None:
    path = tmp_path / "records.db"
    db = Database.from_url(f"sqlite+aiosqlite:///{path}")
    await db.migrate()
    records = Records(db, Cipher.from_setting(KEY_A))
    session = await matched(records)
    for i in range(50):
        await records.add_chat(session.id, "c1", f"m{i}", f"{SECRET_CHAT} #{i}", T0 + i)
    await records.add_note(session.id, "t1", SECRET_NOTE, T0)
    await db.aclose()
    raw = await asyncio.to_thread(_files_bytes, tmp_path, "records.db")
    # The scan does see the file's content: names are stored in clear.
    assert b"Dr Therapist" in raw and session.id.encode() in raw
    for needle in (b"husband", b"panic attacks", SECRET_CHAT.encode("utf-16-le")):
        assert needle not in raw


# -- keys --------------------------------------------------------------------------


async def test_rotation_then_the_old_key_can_go(db: Database) -> None:
    old = Records(db, Cipher.from_setting(KEY_A))
    session = await matched(old)
    for i in range(7):
        await old.add_chat(session.id, "c1", f"m{i}", f"chat {i}", T0 + i)
    for i in range(3):
        await old.add_note(session.id, "t1", f"note {i}", T0 + i)
    before = await _stored_bodies(db)

    both = Records(db, Cipher.from_setting(f"{KEY_B},{KEY_A}"))
    # Both keys open everything, old and new data alike, before the rotation.
    await both.add_chat(session.id, "t1", "m-new", "written under B", T0 + 50)
    assert len(await both.transcript(session.id)) == 8
    assert await both.rotate_keys(batch=3) == 8 + 3  # small batches: several rounds
    after = await _stored_bodies(db)
    assert not set(before) & set(after)

    only_new = Records(db, Cipher.from_setting(KEY_B))
    assert [m.text for m in await only_new.transcript(session.id)] == [
        *(f"chat {i}" for i in range(7)),
        "written under B",
    ]
    assert [n.text for n in await only_new.notes(session.id)] == [f"note {i}" for i in range(3)]
    with pytest.raises(DataKeyError):
        await old.transcript(session.id)


async def test_rotating_an_empty_store_counts_nothing(records: Records) -> None:
    assert await records.rotate_keys() == 0


async def test_a_wrong_key_is_a_clear_error(db: Database, records: Records) -> None:
    session = await matched(records)
    await records.add_chat(session.id, "c1", "m1", "hello", T0)
    await records.add_note(session.id, "t1", "a note", T0)
    wrong = Records(db, Cipher.from_setting(KEY_B))
    with pytest.raises(DataKeyError, match="cannot be decrypted with any of the 1 key"):
        await wrong.transcript(session.id)
    with pytest.raises(DataKeyError, match="DISPATCH_DATA_KEY"):
        await wrong.notes(session.id)
    with pytest.raises(DataKeyError):
        await wrong.rotate_keys()
    # A retry read back under the wrong key fails the same way, rather than
    # storing a second copy.
    with pytest.raises(DataKeyError):
        await wrong.add_chat(session.id, "c1", "m1", "hello", T0)
    assert len(await records.transcript(session.id)) == 1


def test_cli_keys_new_prints_a_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["keys", "new"]) == 0
    key = capsys.readouterr().out.strip()
    assert Cipher.from_setting(key).key_count == 1 and key != new_key()


def test_cli_keys_rotate(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def seed() -> str:
        db = Database.from_url(database_url)
        await db.migrate()
        try:
            records = Records(db, Cipher.from_setting(KEY_A))
            session = await matched(records)
            await records.add_chat(session.id, "c1", "m1", "before rotation", T0)
            await records.add_note(session.id, "t1", "noted", T0)
            return session.id
        finally:
            await db.aclose()

    async def read(key: str, session_id: str) -> list[str]:
        db = Database.from_url(database_url)
        try:
            records = Records(db, Cipher.from_setting(key))
            texts = [m.text for m in await records.transcript(session_id)]
            return texts + [n.text for n in await records.notes(session_id)]
        finally:
            await db.aclose()

    session_id = asyncio.run(seed())
    monkeypatch.delenv("DISPATCH_DATABASE_URL", raising=False)
    monkeypatch.setenv("DISPATCH_DATA_KEY", f"{KEY_B},{KEY_A}")
    assert cli.main(["keys", "rotate", "--database-url", database_url]) == 0
    assert capsys.readouterr().out.strip() == "2"
    assert asyncio.run(read(KEY_B, session_id)) == ["before rotation", "noted"]
    # From the environment too; rotating again is harmless.
    monkeypatch.setenv("DISPATCH_DATABASE_URL", database_url)
    monkeypatch.setenv("DISPATCH_DATA_KEY", KEY_B)
    assert cli.main(["keys", "rotate"]) == 0
    assert capsys.readouterr().out.strip() == "2"


def test_cli_keys_rotate_refuses_bad_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'k.db'}"
    monkeypatch.delenv("DISPATCH_DATA_KEY", raising=False)
    assert cli.main(["keys", "rotate", "--database-url", url]) == 2
    assert "DISPATCH_DATA_KEY is not set" in capsys.readouterr().err
    monkeypatch.setenv("DISPATCH_DATA_KEY", f"{KEY_A},nope")
    assert cli.main(["keys", "rotate", "--database-url", url]) == 2
    err = capsys.readouterr().err
    assert "DISPATCH_DATA_KEY (key 2 of 2) is not a Fernet key" in err and KEY_A not in err
    monkeypatch.setenv("DISPATCH_DATA_KEY", KEY_A)
    assert (
        cli.main(
            ["keys", "rotate", "--database-url", f"postgresql://u@127.0.0.1:{_closed_port()}/x"]
        )
        == 1
    )
    assert "unavailable" in capsys.readouterr().err


# -- a database that does not answer ---------------------------------------------


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("postgresql+asyncpg://postgres@127.0.0.1:{port}/dispatch", id="postgresql"),
        pytest.param("sqlite+aiosqlite:////nonexistent-dir/{port}/dispatch.db", id="sqlite"),
    ],
)
async def test_ping_and_records_raise_unavailable(url: str) -> None:
    db = Database.from_url(url.format(port=_closed_port()), connect_timeout_s=2)
    records = Records(db, Cipher.from_setting(KEY_A))
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable) as info:
            await db.ping()
        assert info.value.code == "unavailable" and info.value.status == 503
        with pytest.raises(Unavailable):
            await db.migrate()
        with pytest.raises(Unavailable):
            await records.transcript("ses_1")
        with pytest.raises(Unavailable):
            await records.add_chat("ses_1", "c1", "m1", "hello", T0)
        assert time.monotonic() - started < 10
    finally:
        await db.aclose()
        await _aiosqlite_threads_done()


async def _aiosqlite_threads_done() -> None:
    """aiosqlite stops the worker thread of a connection that failed to open
    by queueing a call that answers a future on this loop; if the loop closes
    first, the thread raises "Event loop is closed". Let those threads end."""
    for thread in threading.enumerate():
        if "_connection_worker_thread" in thread.name:
            await asyncio.to_thread(thread.join, 5)


async def test_ping_answers_while_the_database_does(db: Database) -> None:
    await db.ping()


def test_messages_are_values() -> None:
    msg = ChatMessage("msg_1", "ses_1", "c1", "cm", "hi", T0)
    assert msg == ChatMessage("msg_1", "ses_1", "c1", "cm", "hi", T0)
    with pytest.raises(AttributeError):
        msg.text = "changed"  # type: ignore[misc]
