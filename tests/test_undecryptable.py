"""Stored chat and notes that no configured key opens: a clear 409, never a 500.

A session with chat and a note is written under one data key; the app then
runs with another (a key rotated away too soon, or a development restart
before dev keys were kept). Reading them answers ``409 undecryptable`` with a
message naming ``DISPATCH_DATA_KEY``; with the right key they read as before.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from starlette.testclient import TestClient
from test_records import T0, matched

from core.db import Database
from core.identity import mint
from dispatch.app import create_app
from dispatch.settings import load_settings
from signaling.crypto import Cipher, new_key
from signaling.records import Records

SECRET = "undecryptable-test-secret-" + "x" * 32
KEY_A = new_key()
KEY_B = new_key()


async def _write(url: str) -> str:
    db = Database.from_url(url)
    await db.migrate()
    try:
        records = Records(db, Cipher.from_setting(KEY_A))
        session = await matched(records, client="c1", therapist="t1")
        await records.add_chat(session.id, "c1", "m1", "hello", T0 + 1)
        await records.add_note(session.id, "t1", "a private note", T0 + 2)
        return session.id
    finally:
        await db.aclose()


def _app(url: str, data_key: str) -> TestClient:
    overrides = {"dev": True, "secret": SECRET, "data_key": data_key, "database_url": url}
    return TestClient(create_app(load_settings(overrides, env={})))


def _get(client: TestClient, path: str, role: str, sub: str) -> tuple[int, dict[str, object]]:
    r = client.get(path, headers={"Authorization": f"Bearer {mint(SECRET, role, sub)}"})
    return r.status_code, r.json()


def test_data_no_key_opens_is_409_undecryptable(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'dispatch.db'}"
    sid = asyncio.run(_write(url))
    with _app(url, KEY_B) as client:
        for path, role, sub in (
            (f"/v1/sessions/{sid}/transcript", "client", "c1"),
            (f"/v1/sessions/{sid}/notes", "therapist", "t1"),
        ):
            status, body = _get(client, path, role, sub)
            assert status == 409, body
            error = body["error"]
            assert isinstance(error, dict) and error["code"] == "undecryptable"
            assert "DISPATCH_DATA_KEY" in error["message"]
            assert "hello" not in str(body) and "private" not in str(body)
        # The rest of the call log still answers.
        assert _get(client, "/v1/sessions", "client", "c1")[0] == 200
    # Both keys (the new one first): everything reads again.
    with _app(url, f"{KEY_B},{KEY_A}") as client:
        status, body = _get(client, f"/v1/sessions/{sid}/transcript", "client", "c1")
        assert status == 200 and [m["text"] for m in body["messages"]] == ["hello"]
