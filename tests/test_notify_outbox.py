"""notify.outbox on SQLite and PostgreSQL: queued once, taken by one sender at a
time, leases given back, retries with backoff, statuses only forward."""

from __future__ import annotations

import asyncio

import pytest

from core.db import Database
from notify.outbox import MAX_ATTEMPTS, NewMessage, Outbox, retry_delay

T0 = 1_780_000_000.0


def text_for(request_id: str, therapist_id: str) -> NewMessage:
    return NewMessage(
        channel="sms",
        dedupe_key=f"sms:{request_id}:{therapist_id}",
        recipient_id=therapist_id,
        about_id=request_id,
        template="someone_waiting",
    )


async def queue(db: Database, messages: list[NewMessage], now: float = T0) -> int:
    async with db.writing() as conn:
        return await Outbox(db).queue(conn, messages, now)


def test_retry_delay_doubles_to_a_cap() -> None:
    assert [retry_delay(n) for n in range(1, 6)] == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert retry_delay(0) == 2.0 and retry_delay(30) == 300.0


async def test_queued_once_however_often_and_by_however_many(db: Database) -> None:
    messages = [text_for("r1", f"t{i}") for i in range(5)]
    counts = await asyncio.gather(*(queue(db, messages) for _ in range(6)))
    assert sum(counts) == 5  # six deciders at once, each row once
    assert await queue(db, [*messages, text_for("r1", "t9")]) == 1
    about = await Outbox(db).about("r1")
    assert sorted(m.recipient_id for m in about) == ["t0", "t1", "t2", "t3", "t4", "t9"]
    assert {m.state for m in about} == {"queued"} and {m.attempts for m in about} == {0}


async def test_a_rolled_back_decision_queues_nothing(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.writing() as conn:
            await Outbox(db).queue(conn, [text_for("r2", "t1")], T0)
            raise RuntimeError("the deciding step failed")
    assert await Outbox(db).about("r2") == []


async def test_concurrent_takers_never_share_a_row(db: Database) -> None:
    await queue(db, [text_for("r3", f"t{i:02d}") for i in range(40)])
    takers = [Outbox(db) for _ in range(8)]
    batches = await asyncio.gather(
        *(o.take("sms", f"w{i}", T0 + 1, limit=7) for i, o in enumerate(takers))
    )
    ids = [m.id for batch in batches for m in batch]
    assert len(ids) == 40 and len(set(ids)) == 40
    assert await Outbox(db).take("sms", "late", T0 + 2) == []
    assert all(m.state == "sending" and m.attempts == 1 for b in batches for m in b)
    assert await Outbox(db).take("email", "w", T0 + 2) == []  # another channel


async def test_a_dead_takers_rows_come_back_after_the_lease(db: Database) -> None:
    outbox = Outbox(db)
    await queue(db, [text_for("r4", "t1")])
    [taken] = await outbox.take("sms", "dies", T0 + 1, lease_s=30)
    assert await outbox.take("sms", "other", T0 + 30) == []  # still its lease
    [again] = await outbox.take("sms", "other", T0 + 31, lease_s=30)
    assert again.id == taken.id and again.attempts == 2
    # The first taker, back from the dead, can no longer record anything.
    assert await outbox.sent(taken.id, "dies", "SM-late", T0 + 32) is False
    assert await outbox.sent(again.id, "other", "SM1", T0 + 32) is True
    [sent] = await outbox.about("r4")
    assert (sent.state, sent.provider_id) == ("sent", "SM1")
    assert await outbox.take("sms", "third", T0 + 1000) == []  # sent once, never again


async def test_retry_backs_off_then_gives_up(db: Database) -> None:
    outbox = Outbox(db)
    await queue(db, [text_for("r5", "t1")])
    now = T0
    for attempt in range(1, MAX_ATTEMPTS + 1):
        [m] = await outbox.take("sms", "w", now)
        assert m.attempts == attempt
        assert await outbox.retry(m, "w", "HTTP 500", now) is True
        if attempt < MAX_ATTEMPTS:
            assert await outbox.take("sms", "w", now + retry_delay(attempt) - 0.5) == []
            now += retry_delay(attempt)
    [given_up] = await outbox.about("r5")
    assert given_up.state == "failed"
    assert await outbox.take("sms", "w", now + 10_000) == []


async def test_failed_and_dropped_are_final(db: Database) -> None:
    outbox = Outbox(db)
    await queue(db, [text_for("r6", "t1"), text_for("r6", "t2")])
    a, b = await outbox.take("sms", "w", T0)
    assert await outbox.failed(a.id, "w", "HTTP 400: not a mobile number", T0)
    assert await outbox.dropped(b.id, "w", "request claimed", T0)
    assert {m.state for m in await outbox.about("r6")} == {"failed", "dropped"}
    assert await outbox.take("sms", "w", T0 + 10_000) == []
    assert await outbox.count("sms", ["failed"], T0 - 1) == 1


async def test_statuses_only_move_forward(db: Database) -> None:
    outbox = Outbox(db)
    await queue(db, [text_for("r7", "t1")])
    [m] = await outbox.take("sms", "w", T0)
    await outbox.sent(m.id, "w", "SM7", T0 + 1)
    assert await outbox.status("SM7", "delivered", T0 + 2) is True
    assert await outbox.status("SM7", "sent", T0 + 3) is True  # late, known, ignored
    assert await outbox.status("SM7", "delivered", T0 + 4) is True  # a repeat
    [after] = await outbox.about("r7")
    assert after.state == "delivered"
    assert await outbox.status("SM-unknown", "delivered", T0) is False
    assert await outbox.status("SM7", "bogus", T0) is False
    assert await outbox.count("sms", ["sent", "delivered"], T0) == 1
    assert await outbox.oldest_due_age(T0 + 5) == 0.0


async def test_oldest_due_age(db: Database) -> None:
    outbox = Outbox(db)
    await queue(db, [text_for("r8", "t1")], now=T0)
    await queue(db, [text_for("r8", "t2")], now=T0 + 20)
    assert await outbox.oldest_due_age(T0 + 50) == pytest.approx(50.0)
