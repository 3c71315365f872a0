"""Clients' own data keys (care/datakeys.py, PROTOCOL.md §10): made once
however many servers ask at once, sealed by DISPATCH_DATA_KEY, re-sealed by
`dispatch keys rotate`, and destroyed for good by an erasure."""

from __future__ import annotations

import asyncio

import pytest
from conftest import outcomes
from sqlalchemy import select

from care.datakeys import DataKeys
from care.tables import data_keys
from core.db import Database
from dispatch import cli
from signaling.crypto import Cipher, DataKeyError, new_key

KEY_A = new_key()
KEY_B = new_key()


async def test_a_key_is_made_once_and_opens_what_it_sealed(db: Database) -> None:
    keys = DataKeys(db, Cipher([KEY_A]))
    assert await keys.cipher_for("c-1", create=False) is None
    mine = await keys.cipher_for("c-1", create=True)
    assert mine is not None
    token = mine.encrypt("my answers")
    again = await keys.cipher_for("c-1", create=False)
    assert again is not None and again.decrypt(token) == "my answers"
    # Another client's key is another key.
    theirs = await keys.cipher_for("c-2", create=True)
    assert theirs is not None
    with pytest.raises(DataKeyError):
        theirs.decrypt(token)
    # The stored key is sealed by the master cipher, never the key itself.
    async with db.reading() as conn:
        sealed = (
            await conn.execute(select(data_keys.c.sealed_key).where(data_keys.c.user_id == "c-1"))
        ).scalar_one()
    assert Cipher([KEY_A]).decrypt(bytes(sealed)).encode() not in bytes(sealed)


async def test_two_servers_making_a_key_at_once_agree(db: Database, other_db: Database) -> None:
    one, two = DataKeys(db, Cipher([KEY_A])), DataKeys(other_db, Cipher([KEY_A]))
    results = await outcomes(
        [k.cipher_for("c-race", create=True) for k in (one, two, one, two, one, two)]
    )
    ciphers = [r for r in results if isinstance(r, Cipher)]
    assert len(ciphers) == len(results), results
    token = ciphers[0].encrypt("same key")
    assert {c.decrypt(token) for c in ciphers} == {"same key"}


async def test_destroying_a_key_makes_its_records_unreadable(db: Database) -> None:
    keys = DataKeys(db, Cipher([KEY_A]))
    mine = await keys.cipher_for("c-gone", create=True)
    assert mine is not None
    token = mine.encrypt("erase me")
    async with db.session() as s, s.begin():
        assert await keys.destroy(s, "c-gone") is True
    async with db.session() as s, s.begin():
        assert await keys.destroy(s, "c-gone") is False
    assert await keys.cipher_for("c-gone", create=False) is None
    # A new key made later is a new key: the old records stay closed.
    fresh = await keys.cipher_for("c-gone", create=True)
    assert fresh is not None
    with pytest.raises(DataKeyError):
        fresh.decrypt(token)


def test_cli_keys_rotate_reseals_client_keys(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def seed() -> bytes:
        db = Database.from_url(database_url)
        await db.migrate()
        try:
            mine = await DataKeys(db, Cipher([KEY_A])).cipher_for("c-rot", create=True)
            assert mine is not None
            return mine.encrypt("rotated")
        finally:
            await db.aclose()

    async def read(key: str, token: bytes) -> str:
        db = Database.from_url(database_url)
        try:
            mine = await DataKeys(db, Cipher([key])).cipher_for("c-rot", create=False)
            assert mine is not None
            return mine.decrypt(token)
        finally:
            await db.aclose()

    token = asyncio.run(seed())
    monkeypatch.delenv("DISPATCH_DATABASE_URL", raising=False)
    monkeypatch.setenv("DISPATCH_DATA_KEY", f"{KEY_B},{KEY_A}")
    assert cli.main(["keys", "rotate", "--database-url", database_url]) == 0
    assert capsys.readouterr().out.strip() == "1"
    # Under the new master key alone the client's key (and so its records) opens.
    assert asyncio.run(read(KEY_B, token)) == "rotated"
    with pytest.raises(DataKeyError):
        asyncio.run(read(KEY_A, token))
