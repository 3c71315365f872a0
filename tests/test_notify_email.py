"""notify.email against a real SMTP server on loopback (aiosmtpd, in its own
thread): aiosmtplib sends, the server answers as scripted, and the outbox on
SQLite and PostgreSQL records what became of each email."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as Server
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from integration.harness import free_port
from sqlalchemy import select

from core.db import Database
from notify.email import (
    EmailSender,
    EmailWorker,
    Rendered,
    SmtpConfig,
    TemplateError,
    format_amount,
    render,
    withdrawal_email,
)
from notify.outbox import Message, NewMessage, Outbox, retry_delay
from notify.tables import outbox as outbox_table
from notify.worker import Refused, Retry, Sent

T0 = 1_780_000_000.0
ADDRESS = "alice.therapist@example.org"
MAIL_FROM = "Quick Connect <care@example.com>"
PUBLIC_URL = "https://care.example.com/"
PAYLOAD = {
    "amount": "£12.50",
    "payout_date": "2026-12-15",
    "name": "Alice",
    "console_url": "https://care.example.com/console",
}


@dataclass
class Inbox:
    """An aiosmtpd handler: answers RCPT and DATA as scripted, keeps what it took."""

    rcpt_answers: list[str] = field(default_factory=list)
    data_answers: list[str] = field(default_factory=list)
    data_delays: list[float] = field(default_factory=list)  # seconds before answering DATA
    received: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)
    url: str = ""

    async def handle_RCPT(
        self, server: Server, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.rcpt_answers:
            return self.rcpt_answers.pop(0).replace("{to}", address)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Server, session: Session, envelope: Envelope) -> str:
        if self.data_delays:
            await asyncio.sleep(self.data_delays.pop(0))
        if self.data_answers:
            return self.data_answers.pop(0)
        raw = envelope.original_content
        assert isinstance(raw, bytes) and isinstance(envelope.mail_from, str)
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 2.0.0 Ok: queued"

    def authenticate(
        self, server: Server, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login, data.password))
        # handled=False: aiosmtpd answers a refusal itself (535).
        return AuthResult(success=data.password == b"p@ss:w/rd", handled=False)


@contextlib.contextmanager
def smtp_server(inbox: Inbox, port: int, **kw: Any) -> Iterator[str]:
    """A real SMTP server on 127.0.0.1:``port``; yields its URL."""
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **kw)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{port}"
    finally:
        controller.stop()


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    box = Inbox()
    with smtp_server(box, free_port()) as url:
        box.url = url
        yield box


def sender_for(url: str, timeout_s: float = 5.0) -> EmailSender:
    return EmailSender(SmtpConfig.parse(url), MAIL_FROM, timeout_s=timeout_s)


def worker(
    db: Database,
    url: str,
    address: str | None = ADDRESS,
    wanted: bool = True,
    outbox: Outbox | None = None,
    timeout_s: float = 5.0,
) -> EmailWorker:
    async def address_of(message: Message) -> str | None:
        assert message.recipient_id == "t1"
        return address

    async def still_wanted(message: Message) -> bool:
        return wanted

    return EmailWorker(
        outbox or Outbox(db),
        sender_for(url, timeout_s),
        worker="w1",
        address_of=address_of,
        still_wanted=still_wanted,
    )


def withdrawal(withdrawal_id: str = "wd1") -> NewMessage:
    return withdrawal_email(withdrawal_id, "t1", 1250, "GBP", "2026-12-15", "Alice", PUBLIC_URL)


async def queue(db: Database, *messages: NewMessage) -> int:
    async with db.writing() as conn:
        return await Outbox(db).queue(conn, list(messages), T0)


async def errors_of(db: Database) -> list[str | None]:
    async with db.reading() as conn:
        return list((await conn.execute(select(outbox_table.c.error))).scalars())


def ours(buf: io.StringIO) -> list[dict[str, Any]]:
    """Every line but the stand-in server's own (aiosmtpd logs the envelope to
    ``mail.log``): ours, SQLAlchemy's, aiosqlite's, aiosmtplib's."""
    lines = [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]
    return [line for line in lines if not str(line.get("logger", "")).startswith("mail.")]


def email_events(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("component") == "email"]


# --- the URL -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.com:2525", SmtpConfig("mail.example.com", 2525)),
        ("smtp://mail.example.com", SmtpConfig("mail.example.com", 25)),
        ("smtps://mail.example.com", SmtpConfig("mail.example.com", 465, implicit_tls=True)),
        (
            "smtp://me%40example.com:p%40ss%3Aw%2Frd@mail.example.com:587?starttls=1",
            SmtpConfig("mail.example.com", 587, "me@example.com", "p@ss:w/rd", starttls=True),
        ),
        ("smtp://[::1]:25?starttls=0", SmtpConfig("::1", 25)),
    ],
)
def test_smtp_urls_are_parsed(url: str, expected: SmtpConfig) -> None:
    assert SmtpConfig.parse(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "",
        "http://mail.example.com",
        "smtp://",
        "smtp://:25",
        "smtp://mail.example.com:port",
        "smtp://mail.example.com:70000",
        "smtp://mail.example.com:0",
        "smtp://mail.example.com/inbox",
        "smtp://mail.example.com?tls=1",
        "smtp://mail.example.com?starttls=maybe",
        "smtps://mail.example.com?starttls=1",
        "smtp://user@mail.example.com",
        "smtp://:hunter2@mail.example.com",
    ],
)
def test_bad_smtp_urls_are_refused_without_quoting_them(url: str) -> None:
    with pytest.raises(ValueError, match="SMTP URL") as caught:
        SmtpConfig.parse(url)
    assert "hunter2" not in str(caught.value)


def test_the_password_is_in_no_repr() -> None:
    config = SmtpConfig.parse("smtp://me:hunter2@mail.example.com:587?starttls=1")
    assert config.password == "hunter2"
    assert "hunter2" not in repr(config) and "hunter2" not in str(config)
    assert str(config) == "smtp://me:***@mail.example.com:587?starttls=1"
    assert "hunter2" not in repr(EmailSender(config, MAIL_FROM).config)


# --- templates -----------------------------------------------------------------


def test_a_template_renders_plain_and_html() -> None:
    rendered = render("withdrawal_scheduled", PAYLOAD)
    assert rendered.subject == "Your withdrawal of £12.50 is scheduled"
    assert "Your withdrawal of £12.50 is scheduled to be paid on 2026-12-15." in rendered.text
    assert "Hello Alice," in rendered.text and PAYLOAD["console_url"] in rendered.text
    assert rendered.html is not None and '<a href="https://care.example.com/console">' in (
        rendered.html
    )
    assert "$" not in rendered.text + rendered.html + rendered.subject  # every gap filled


def test_every_value_is_escaped_in_the_html_only() -> None:
    rendered = render("withdrawal_scheduled", {**PAYLOAD, "name": '<b>Tom & "Jerry"</b>'})
    assert rendered.html is not None
    assert "Hello &lt;b&gt;Tom &amp; &quot;Jerry&quot;&lt;/b&gt;," in rendered.html
    assert "<b>Tom" not in rendered.html
    assert 'Hello <b>Tom & "Jerry"</b>,' in rendered.text


def test_a_missing_value_raises() -> None:
    payload = {k: v for k, v in PAYLOAD.items() if k != "payout_date"}
    with pytest.raises(TemplateError, match="payout_date"):
        render("withdrawal_scheduled", payload)


def test_a_subject_stays_one_line() -> None:
    with pytest.raises(TemplateError, match="one line"):
        render("withdrawal_scheduled", {**PAYLOAD, "amount": "£1\r\nBcc: x@example.net"})


@pytest.mark.parametrize(
    "name", ["", "../withdrawal_scheduled", "Withdrawal_scheduled", "a-b", "a.b", "no_such"]
)
def test_bad_or_unknown_template_names_are_refused(name: str) -> None:
    with pytest.raises(TemplateError):
        render(name, PAYLOAD)


def test_the_withdrawal_email_is_decided_purely() -> None:
    message = withdrawal()
    assert message == NewMessage(
        channel="email",
        dedupe_key="email:withdrawal_scheduled:wd1",
        recipient_id="t1",
        template="withdrawal_scheduled",
        about_id="wd1",
        payload=PAYLOAD,
    )
    assert [
        format_amount(1250, "GBP"),
        format_amount(5, "eur"),
        format_amount(123456, "USD"),
        format_amount(1250, "CHF"),
    ] == ["£12.50", "€0.05", "$1,234.56", "12.50 CHF"]
    with pytest.raises(ValueError):
        withdrawal_email("wd1", "t1", 1250, "GBP", "15/12/2026", "Alice", PUBLIC_URL)


# --- the sender ----------------------------------------------------------------


async def test_outcomes_are_sorted(inbox: Inbox) -> None:
    inbox.rcpt_answers = ["450 4.2.1 busy", "452 4.5.3 too many", "550 5.1.1 {to} unknown"]
    inbox.data_answers = ["451 4.3.0 later", "554 5.7.1 spam"]
    sender = sender_for(inbox.url)
    mail = Rendered("s", "t")
    got = [await sender.send(ADDRESS, mail) for _ in range(6)]
    assert got[:5] == [
        Retry("SMTP 450 4.2.1"),
        Retry("SMTP 452 4.5.3"),
        Refused("SMTP 550 5.1.1"),
        Retry("SMTP 451 4.3.0"),
        Refused("SMTP 554 5.7.1"),
    ]
    assert isinstance(got[5], Sent) and got[5].provider_id.endswith("@example.com>")
    [(_, _, only_text)] = inbox.received
    assert only_text.get_content_type() == "text/plain"  # no HTML: the plain part alone
    assert only_text.get_content().rstrip() == "t"
    assert await sender.send("not an address", mail) == Refused("unusable address")
    assert await sender.send(f"{ADDRESS}\r\nBcc: x@example.net", mail) == Refused(
        "unusable address"
    )


async def test_user_and_password_reach_the_server_decoded() -> None:
    box = Inbox()
    port = free_port()
    # Plain-text AUTH is fine on loopback (the server would refuse it otherwise).
    with smtp_server(box, port, authenticator=box.authenticate, auth_require_tls=False):
        good = sender_for(f"smtp://me%40example.com:p%40ss%3Aw%2Frd@127.0.0.1:{port}")
        assert isinstance(await good.send(ADDRESS, Rendered("s", "t")), Sent)
        bad = sender_for(f"smtp://me%40example.com:wrong@127.0.0.1:{port}")
        assert await bad.send(ADDRESS, Rendered("s", "t")) == Retry("SMTP 535 5.7.8")
    # aiosmtplib tries each mechanism the server offers before it gives up.
    assert box.logins[0] == (b"me@example.com", b"p@ss:w/rd")
    assert set(box.logins[1:]) == {(b"me@example.com", b"wrong")}
    assert len(box.received) == 1


async def test_a_server_that_never_answers_is_a_retry() -> None:
    ended: list[asyncio.Event] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        done = asyncio.Event()
        ended.append(done)
        await reader.read()  # no greeting, ever: until the client hangs up
        writer.close()
        await writer.wait_closed()
        done.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        outcome = await sender_for(f"smtp://127.0.0.1:{port}", timeout_s=0.5).send(
            ADDRESS, Rendered("s", "t")
        )
        assert len(ended) == 1
        await asyncio.wait_for(ended[0].wait(), 5)  # the client hung up: nothing left open
    finally:
        server.close()
        await server.wait_closed()
    assert outcome == Retry("timeout")


# --- the worker and the outbox ---------------------------------------------------


async def test_a_withdrawal_email_arrives_once(
    db: Database, inbox: Inbox, log_lines: io.StringIO
) -> None:
    assert await queue(db, withdrawal()) == 1
    w = worker(db, inbox.url)
    assert await w.run_once(T0) == 1
    assert await w.run_once(T0 + 10_000) == 0  # sent: never again

    [(mail_from, rcpt_tos, msg)] = inbox.received
    assert (mail_from, rcpt_tos) == ("care@example.com", [ADDRESS])
    assert (msg["To"], msg["From"]) == (ADDRESS, MAIL_FROM)
    assert msg["Subject"] == "Your withdrawal of £12.50 is scheduled"
    assert msg["Date"] and msg["Message-ID"].endswith("@example.com>")
    assert msg.get_content_type() == "multipart/alternative"
    plain, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain is not None and html is not None
    text = plain.get_content()
    assert "Your withdrawal of £12.50 is scheduled to be paid on 2026-12-15." in text
    assert "https://care.example.com/console" in text
    assert "£12.50" in html.get_content()

    [message] = await Outbox(db).about("wd1")
    assert (message.state, message.attempts) == ("sent", 1)
    assert message.provider_id == msg["Message-ID"]
    lines = ours(log_lines)
    [sent] = email_events(lines)
    assert (sent["event"], sent["message_id"], sent["about_id"]) == (
        "email.sent",
        message.id,
        "wd1",
    )
    assert all(ADDRESS not in json.dumps(line) for line in lines)


async def test_the_same_email_decided_twice_is_sent_once(db: Database, inbox: Inbox) -> None:
    counts = await asyncio.gather(*(queue(db, withdrawal()) for _ in range(4)))
    assert sum(counts) == 1 and await queue(db, withdrawal()) == 0
    w = worker(db, inbox.url)
    assert await w.run_once(T0) == 1
    assert await w.run_once(T0 + 10_000) == 0
    assert len(inbox.received) == 1


async def test_451_then_sent_exactly_once(db: Database, inbox: Inbox) -> None:
    inbox.data_answers = ["451 4.3.0 Try again later"]
    await queue(db, withdrawal())
    w = worker(db, inbox.url)
    assert await w.run_once(T0) == 1  # 451: back in the queue
    [message] = await Outbox(db).about("wd1")
    assert (message.state, message.attempts) == ("queued", 1)
    assert await w.run_once(T0 + retry_delay(1) - 0.5) == 0  # not due before the backoff
    assert await w.run_once(T0 + retry_delay(1)) == 1
    assert await w.run_once(T0 + 10_000) == 0
    assert len(inbox.received) == 1 and inbox.data_answers == []
    [message] = await Outbox(db).about("wd1")
    assert (message.state, message.attempts) == ("sent", 2)


async def test_550_fails_for_good_and_the_reply_is_not_kept(
    db: Database, inbox: Inbox, log_lines: io.StringIO
) -> None:
    # Servers quote the address in their replies: neither the row nor a log keeps it.
    inbox.rcpt_answers = ["550 5.1.1 <{to}>: Recipient address rejected: User unknown"]
    await queue(db, withdrawal())
    w = worker(db, inbox.url)
    assert await w.run_once(T0) == 1
    assert await w.run_once(T0 + 10_000) == 0  # not retried
    [message] = await Outbox(db).about("wd1")
    assert message.state == "failed" and inbox.received == []
    assert await errors_of(db) == ["SMTP 550 5.1.1"]
    lines = ours(log_lines)
    [refused] = email_events(lines)
    assert (refused["event"], refused["reason"]) == ("email.refused", "SMTP 550 5.1.1")
    assert all(ADDRESS not in json.dumps(line) for line in lines)


async def test_smtp_down_is_retried_with_backoff_and_not_lost(
    db: Database, log_lines: io.StringIO
) -> None:
    port = free_port()  # nobody listens yet
    await queue(db, withdrawal())
    w = worker(db, f"smtp://127.0.0.1:{port}")
    now = T0
    for attempt in (1, 2):
        assert await w.run_once(now) == 1
        [message] = await Outbox(db).about("wd1")
        assert (message.state, message.attempts) == ("queued", attempt)
        assert await w.run_once(now + retry_delay(attempt) - 0.5) == 0
        now += retry_delay(attempt)
    box = Inbox()
    with smtp_server(box, port):  # back on the same address
        assert await w.run_once(now) == 1
    assert len(box.received) == 1
    [message] = await Outbox(db).about("wd1")
    assert (message.state, message.attempts) == ("sent", 3)
    lines = ours(log_lines)
    events = [line["event"] for line in email_events(lines)]
    assert events == ["email.retry", "email.retry", "email.sent"]
    assert all(ADDRESS not in json.dumps(line) for line in lines)


async def test_no_address_or_no_longer_wanted_is_dropped(db: Database, inbox: Inbox) -> None:
    await queue(db, withdrawal("wd1"))
    assert await worker(db, inbox.url, address=None).run_once(T0) == 1
    await queue(db, withdrawal("wd2"))
    assert await worker(db, inbox.url, wanted=False).run_once(T0) == 1
    assert [m.state for m in await Outbox(db).about("wd1")] == ["dropped"]
    assert [m.state for m in await Outbox(db).about("wd2")] == ["dropped"]
    assert sorted(e or "" for e in await errors_of(db)) == ["no email address", "no longer wanted"]
    assert inbox.received == []


async def test_a_broken_template_fails_its_email_and_not_the_loop(
    db: Database, inbox: Inbox
) -> None:
    broken = NewMessage(
        channel="email",
        dedupe_key="email:withdrawal_scheduled:wd0",
        recipient_id="t1",
        template="withdrawal_scheduled",
        about_id="wd0",
        payload={"amount": "£1.00"},
    )
    await queue(db, broken, withdrawal("wd1"))
    assert await worker(db, inbox.url).run_once(T0) == 2
    [failed] = await Outbox(db).about("wd0")
    [sent] = await Outbox(db).about("wd1")
    assert (failed.state, sent.state) == ("failed", "sent")
    assert len(inbox.received) == 1


async def test_a_batch_never_outlives_its_lease(db: Database, inbox: Inbox) -> None:
    # A slow server: what the lease could not cover goes back to the queue
    # rather than being sent after another server may have taken it too.
    inbox.data_delays = [0.7]
    await queue(db, withdrawal("wd1"), withdrawal("wd2"))
    # 80% of the lease (1.28 s) is what a batch may spend: the first email's
    # timeout (1 s) fits; after its 0.7 s, the second's does not.
    w = worker(db, inbox.url, outbox=Outbox(db, lease_s=1.6), timeout_s=1.0)
    assert await w.run_once(T0) == 2
    # Queued together: either may be the first.
    both = [*await Outbox(db).about("wd1"), *await Outbox(db).about("wd2")]
    assert sorted((m.state, m.attempts) for m in both) == [("queued", 1), ("sent", 1)]
    assert await w.run_once(T0 + retry_delay(1)) == 1
    both = [*await Outbox(db).about("wd1"), *await Outbox(db).about("wd2")]
    assert [m.state for m in both] == ["sent", "sent"]
    assert len(inbox.received) == 2
    with pytest.raises(ValueError, match="lease"):
        worker(db, inbox.url, outbox=Outbox(db, lease_s=1.6), timeout_s=1.5)
