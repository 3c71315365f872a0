"""notify.sms against a loopback Twilio stand-in (a real HTTP server on 127.0.0.1):
twilio-python's own async client sends, the stand-in answers as scripted."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import pytest
import pytest_asyncio
from integration.harness import free_port, serve_asgi
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from core.db import Database
from notify.outbox import Message, NewMessage, Outbox, retry_delay
from notify.sms import SmsWorker, TwilioSender
from notify.worker import Refused, Retry, Sent

SID, TOKEN = "AC" + "0" * 32, "stand-in-auth-token"
T0 = 1_780_000_000.0
PHONE = "+447700900123"


@dataclass
class StandIn:
    """Twilio's Messages API, as far as a text goes."""

    answers: list[int] = field(default_factory=list)  # status codes to answer, in turn
    delay_s: float = 0.0  # how long each answer takes
    received: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    async def messages(self, request: Request) -> JSONResponse:
        expected = "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return JSONResponse({"code": 20003, "message": "Authenticate", "status": 401}, 401)
        # Twilio's client posts application/x-www-form-urlencoded.
        self.received.append(dict(parse_qsl((await request.body()).decode())))
        status = self.answers.pop(0) if self.answers else 201
        await asyncio.sleep(self.delay_s)
        if status != 201:
            return JSONResponse(
                {"code": 21211 if status < 500 else 20500, "message": "no", "status": status},
                status_code=status,
            )
        n = len(self.received)
        return JSONResponse(
            {"sid": f"SM{n:032d}", "status": "queued", "account_sid": SID}, status_code=201
        )


@pytest_asyncio.fixture
async def twilio() -> AsyncIterator[StandIn]:
    stand_in = StandIn()
    app = Starlette(
        routes=[
            Route(f"/2010-04-01/Accounts/{SID}/Messages.json", stand_in.messages, methods=["POST"])
        ]
    )
    async with serve_asgi(app) as url:
        stand_in.url = url
        yield stand_in


@contextlib.asynccontextmanager
async def sender_for(url: str, sender: str = "+15005550006") -> AsyncIterator[TwilioSender]:
    s = TwilioSender(
        SID,
        TOKEN,
        sender,
        api_url=url,
        status_callback="https://care.example.com/v1/twilio/status",
        timeout_s=5.0,
    )
    try:
        yield s
    finally:
        await s.aclose()


async def queued_text(db: Database, request_id: str = "r1", therapist_id: str = "t1") -> None:
    message = NewMessage(
        channel="sms",
        dedupe_key=f"sms:{request_id}:{therapist_id}",
        recipient_id=therapist_id,
        about_id=request_id,
        template="someone_waiting",
    )
    async with db.writing() as conn:
        await Outbox(db).queue(conn, [message], T0)


def worker(
    db: Database, sender: TwilioSender, wanted: bool = True, refused: list[str] | None = None
) -> SmsWorker:
    async def phone_of(therapist_id: str) -> str | None:
        return PHONE

    async def still_wanted(message: Message) -> bool:
        return wanted

    async def on_refused(therapist_id: str) -> None:
        assert refused is not None
        refused.append(therapist_id)

    return SmsWorker(
        Outbox(db),
        sender,
        worker="w1",
        public_url="https://care.example.com",
        phone_of=phone_of,
        still_wanted=still_wanted,
        on_refused=on_refused,
    )


async def test_a_text_is_sent_with_the_contract_fields(twilio: StandIn) -> None:
    async with sender_for(twilio.url) as s:
        assert await s.send(PHONE, "hello") == Sent("SM" + "1".zfill(32))
    async with sender_for(twilio.url, sender="MG" + "9" * 32) as s:
        await s.send(PHONE, "hello")
    first, second = twilio.received
    assert first == {
        "To": PHONE,
        "From": "+15005550006",
        "Body": "hello",
        "StatusCallback": "https://care.example.com/v1/twilio/status",
    }
    assert second["MessagingServiceSid"] == "MG" + "9" * 32 and "From" not in second


async def test_outcomes_are_sorted(twilio: StandIn) -> None:
    twilio.answers = [500, 503, 429, 400, 404]
    async with sender_for(twilio.url) as s:
        got = [await s.send(PHONE, "x") for _ in range(5)]
    assert [type(o) for o in got] == [Retry, Retry, Retry, Refused, Refused]
    assert "HTTP 500" in got[0].reason and "HTTP 400" in got[3].reason  # type: ignore[union-attr]
    async with sender_for(f"http://127.0.0.1:{free_port()}") as s:  # nobody listening
        assert isinstance(await s.send(PHONE, "x"), Retry)


async def test_500_twice_then_one_text_exactly(db: Database, twilio: StandIn) -> None:
    twilio.answers = [500, 500]
    await queued_text(db)
    async with sender_for(twilio.url) as s:
        w = worker(db, s)
        now = T0
        assert await w.run_once(now) == 1  # 500: back in the queue
        assert await w.run_once(now) == 0  # not due before the backoff
        now += retry_delay(1)
        assert await w.run_once(now) == 1  # 500 again
        now += retry_delay(2)
        assert await w.run_once(now) == 1  # 201
        assert await w.run_once(now + 10_000) == 0  # sent: never again
    assert len(twilio.received) == 3
    assert {r["Body"] for r in twilio.received} == {
        "Someone is waiting on quick connect. Open your console: https://care.example.com/console"
    }
    [message] = await Outbox(db).about("r1")
    assert (message.state, message.attempts) == ("sent", 3)
    assert message.provider_id == "SM" + "3".zfill(32)


async def test_a_refused_number_fails_the_text_and_flags_the_phone(
    db: Database, twilio: StandIn
) -> None:
    twilio.answers = [400]
    await queued_text(db)
    refused: list[str] = []
    async with sender_for(twilio.url) as s:
        assert await worker(db, s, refused=refused).run_once(T0) == 1
    [message] = await Outbox(db).about("r1")
    assert message.state == "failed" and refused == ["t1"]


async def test_a_request_no_longer_waiting_sends_nothing(db: Database, twilio: StandIn) -> None:
    await queued_text(db)
    async with sender_for(twilio.url) as s:
        assert await worker(db, s, wanted=False).run_once(T0) == 1
    assert twilio.received == []
    [message] = await Outbox(db).about("r1")
    assert message.state == "dropped"


async def test_a_batch_gives_back_what_its_lease_may_not_cover(
    db: Database, twilio: StandIn
) -> None:
    """Rows still unsent when the lease passes could be taken and sent by
    another server too: the worker sends only what fits in 80% of the lease."""
    twilio.delay_s = 0.9
    for rid in ("r1", "r2", "r3"):
        await queued_text(db, rid)
    async with sender_for(twilio.url) as s:
        s.timeout_s = 1.0
        w = worker(db, s)
        w.outbox = Outbox(db, lease_s=3.0)
        assert await w.run_once(T0) == 3
        # 0.9 s + 1 s fits in 2.4 s, 1.8 s + 1 s does not.
        assert len(twilio.received) == 2
        states = {
            m.about_id: m.state for rid in ("r1", "r2", "r3") for m in await w.outbox.about(rid)
        }
        assert sorted(states.values()) == ["queued", "sent", "sent"]
        with pytest.raises(ValueError, match="within the outbox's lease"):
            SmsWorker(
                Outbox(db, lease_s=1.0),
                s,
                worker="w2",
                public_url="https://care.example.com",
                phone_of=lambda _: asyncio.sleep(0, PHONE),
                still_wanted=lambda _: asyncio.sleep(0, True),
            )
