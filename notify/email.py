"""Emails out over SMTP (PROTOCOL.md §7): the settings, the templates, the
sender, and the worker that drains the outbox's ``email`` rows through it.

:class:`SmtpConfig` is ``DISPATCH_SMTP_URL`` parsed. :func:`render` fills a
template of ``notify/templates`` (``<name>.subject.txt``, ``<name>.txt``,
optionally ``<name>.html``) with a message's payload: every value must be
there, and in the HTML part every value is escaped. :class:`EmailSender` sends
one email (a text/plain part always, an HTML alternative when there is one)
with aiosmtplib, one connection per email (a payload's ``calendar`` object
becomes an ``.ics`` attachment, :mod:`notify.calendar`), and sorts every
outcome into three:
:class:`Sent` (with the Message-ID), :class:`Retry` (a network error, a
timeout, a 4xx, or a fault of our own set-up), :class:`Refused` (a 5xx to the
recipient or to the message: the worker marks the row ``failed``).

:class:`EmailWorker` takes due rows, looks the recipient's address up at the
moment of sending (``address_of``, given the message), renders, sends and records the outcome.
Neither the address, the payload nor the body is ever logged, nor are the
server's replies (they often quote the address): ids and reply codes only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import re
import string
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from functools import lru_cache
from importlib import resources
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

import aiosmtplib

from core.logs import get_logger
from notify.calendar import CalendarError, ics_of
from notify.outbox import Message, NewMessage, Outbox
from notify.worker import OutboxWorker, Outcome, Refused, Retry, Sent

log = get_logger(component="email")

_TEMPLATE_NAME: Final = re.compile(r"[a-z0-9_]+")
_ENHANCED_CODE: Final = re.compile(r"\d\.\d{1,3}\.\d{1,3}")
_SYMBOLS: Final = {"GBP": "£", "EUR": "€", "USD": "$"}
#: The outbox keeps a provider id of at most this many characters.
_PROVIDER_ID_LEN: Final = 64


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """Where and how to hand emails over. ``implicit_tls``: TLS from the first
    byte (``smtps://``); ``starttls``: upgrade a plain connection, and fail
    rather than send in the clear when the server cannot. Neither: plain SMTP
    (what the URL says is what happens; no opportunistic upgrade)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    implicit_tls: bool = False
    starttls: bool = False

    @classmethod
    def parse(cls, url: str) -> SmtpConfig:
        """``smtp://[user:pass@]host[:port][?starttls=1]`` (port 25 by default)
        or ``smtps://[user:pass@]host[:port]`` (465). No error message quotes
        the URL: it may hold a password."""
        parts = urlsplit(url.strip())
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError("SMTP URL: the scheme must be smtp:// or smtps://")
        if not parts.hostname:
            raise ValueError("SMTP URL: no host")
        if parts.path not in ("", "/") or parts.fragment:
            raise ValueError("SMTP URL: no path or fragment expected after host:port")
        try:
            port = parts.port
            if port == 0:
                raise ValueError
        except ValueError:
            raise ValueError("SMTP URL: the port must be a number from 1 to 65535") from None
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        if set(options) - {"starttls"} or options.get("starttls", "0") not in ("0", "1"):
            raise ValueError("SMTP URL: the only option is starttls=1 (or 0)")
        starttls, implicit = options.get("starttls") == "1", parts.scheme == "smtps"
        if implicit and starttls:
            raise ValueError("SMTP URL: smtps:// is TLS already; starttls is for smtp://")
        if (parts.username is None) != (parts.password is None) or parts.username == "":
            raise ValueError("SMTP URL: give both a user and a password, or neither")
        return cls(
            host=parts.hostname,
            port=port or (465 if implicit else 25),
            username=None if parts.username is None else unquote(parts.username),
            password=None if parts.password is None else unquote(parts.password),
            implicit_tls=implicit,
            starttls=starttls,
        )

    def __str__(self) -> str:
        """The URL back, for a start-up line, with the password masked."""
        auth = "" if self.username is None else f"{self.username}:***@"
        query = "?starttls=1" if self.starttls else ""
        return f"smtp{'s' if self.implicit_tls else ''}://{auth}{self.host}:{self.port}{query}"


class TemplateError(ValueError):
    """A template that cannot be rendered: a bad or unknown name, a missing
    value, a broken placeholder. The message names keys, never values."""


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file sent along: ``content_type`` is ``maintype/subtype``."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()


@lru_cache(maxsize=32)
def _load(name: str) -> tuple[string.Template, string.Template, string.Template | None]:
    if not _TEMPLATE_NAME.fullmatch(name):
        raise TemplateError(f"bad template name {name[:64]!r}: only a-z, 0-9 and _")
    # From the package, so it works wherever notify is installed (package-data).
    folder = resources.files("notify") / "templates"
    subject, text, page = (folder / (name + ext) for ext in (".subject.txt", ".txt", ".html"))
    if not (subject.is_file() and text.is_file()):
        raise TemplateError(f"no template {name!r} (its .subject.txt and .txt)")
    return (
        string.Template(subject.read_text(encoding="utf-8")),
        string.Template(text.read_text(encoding="utf-8")),
        string.Template(page.read_text(encoding="utf-8")) if page.is_file() else None,
    )


def _fill(template: string.Template, values: Mapping[str, str]) -> str:
    try:
        return template.substitute(values)  # never safe_substitute: a gap must show
    except KeyError as exc:
        raise TemplateError(f"no value for ${{{exc.args[0]}}}") from None
    except ValueError as exc:
        raise TemplateError(f"broken placeholder: {exc}") from None


def render(template_name: str, payload: Mapping[str, Any]) -> Rendered:
    """The email ``template_name`` says, filled with ``payload``; raises
    :class:`TemplateError` (never sends half an email). A ``calendar`` value
    is no placeholder: it becomes the attachment ``booking.ics``."""
    subject_t, text_t, html_t = _load(template_name)
    attachments: tuple[Attachment, ...] = ()
    if "calendar" in payload:
        try:
            ics = ics_of(payload["calendar"])
        except CalendarError as exc:
            raise TemplateError(str(exc)) from None
        attachments = (Attachment("booking.ics", "text/calendar", ics),)
    values = {str(k): str(v) for k, v in payload.items() if k != "calendar"}
    subject = _fill(subject_t, values).strip()
    if "\n" in subject or "\r" in subject:
        raise TemplateError("the subject must be one line")
    text = _fill(text_t, values)
    escaped = {k: html.escape(v, quote=True) for k, v in values.items()}
    page = None if html_t is None else _fill(html_t, escaped)
    return Rendered(subject, text, page, attachments)


def format_amount(amount_minor: int, currency: str) -> str:
    """``1250, "GBP"`` -> ``£12.50``; a currency without a symbol here:
    ``12.50 CHF``. Two decimals (the currencies the service runs in)."""
    code = currency.upper()
    units, cents = divmod(abs(amount_minor), 100)
    sign = "-" if amount_minor < 0 else ""
    number = f"{units:,}.{cents:02d}"
    symbol = _SYMBOLS.get(code)
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{number} {code}"


def withdrawal_email(
    withdrawal_id: str,
    therapist_id: str,
    amount_minor: int,
    currency: str,
    payout_date_iso: str,
    name: str,
    public_url: str,
) -> NewMessage:
    """The "withdrawal scheduled" email, to queue in the transaction that
    scheduled it (PROTOCOL.md §6): amount and payout date (``YYYY-MM-DD``,
    ValueError otherwise), nothing else about the money."""
    return NewMessage(
        channel="email",
        dedupe_key=f"email:withdrawal_scheduled:{withdrawal_id}",
        recipient_id=therapist_id,
        template="withdrawal_scheduled",
        about_id=withdrawal_id,
        payload={
            "amount": format_amount(amount_minor, currency),
            "payout_date": dt.date.fromisoformat(payout_date_iso).isoformat(),
            "name": name,
            "console_url": public_url.rstrip("/") + "/console",
        },
    )


def _reply(code: int, message: str) -> str:
    """``SMTP 550 5.1.1``: the code and the enhanced code, never the text."""
    enhanced = _ENHANCED_CODE.match(message.strip())
    return f"SMTP {code}" + (f" {enhanced.group()}" if enhanced else "")


class EmailSender:
    """One SMTP server; ``mail_from`` is the From header (``Care
    <care@example.com>`` or a bare address), its address the envelope sender."""

    def __init__(self, config: SmtpConfig, mail_from: str, timeout_s: float = 10.0) -> None:
        address = parseaddr(mail_from)[1]
        if "@" not in address:
            raise ValueError("DISPATCH_MAIL_FROM must hold an email address")
        self.config = config
        self._from = mail_from
        self._envelope_from = address
        self._domain = address.rpartition("@")[2]
        self.timeout_s = timeout_s

    def build(self, to: str, rendered: Rendered) -> EmailMessage:
        """The message as it goes out; raises ValueError for an unusable ``to``
        (anything but one bare address)."""
        if "@" not in to or parseaddr(to)[1] != to or any(c.isspace() for c in to):
            raise ValueError("not one bare address")
        msg = EmailMessage()
        msg["Subject"] = rendered.subject
        msg["From"] = self._from
        msg["To"] = to
        msg["Date"] = formatdate(usegmt=True)
        # Our domain, not the host's name (make_msgid's default looks it up).
        msg["Message-ID"] = make_msgid(domain=self._domain)
        msg.set_content(rendered.text)
        if rendered.html is not None:
            msg.add_alternative(rendered.html, subtype="html")
        for item in rendered.attachments:
            maintype, _, subtype = item.content_type.partition("/")
            msg.add_attachment(
                item.data, maintype=maintype, subtype=subtype, filename=item.filename
            )
        return msg

    async def send(self, to: str, rendered: Rendered) -> Outcome:
        """Send one email to ``to``; never raises for the server's or the
        network's failures (they are outcomes)."""
        try:
            msg = self.build(to, rendered)
        except (ValueError, TypeError, IndexError):
            return Refused("unusable address")
        config = self.config
        try:
            # aiosmtplib's timeout is per command; this bounds the whole exchange.
            async with asyncio.timeout(self.timeout_s):
                await aiosmtplib.send(
                    msg,
                    sender=self._envelope_from,
                    recipients=[to],
                    hostname=config.host,
                    port=config.port,
                    username=config.username,
                    password=config.password,
                    use_tls=config.implicit_tls,
                    start_tls=config.starttls,
                    timeout=self.timeout_s,
                )
        except TimeoutError:  # ours or aiosmtplib's (its timeouts subclass it)
            return Retry("timeout")
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0]
            return _sorted(first.code, _reply(first.code, first.message))
        except (aiosmtplib.SMTPRecipientRefused, aiosmtplib.SMTPDataError) as exc:
            return _sorted(exc.code, _reply(exc.code, exc.message))
        except ValueError:
            # aiosmtplib's own check of the address (the config's are in parse).
            return Refused("unusable address")
        except aiosmtplib.SMTPResponseException as exc:
            # Connect, HELO, AUTH, MAIL FROM: our set-up or the server, not
            # this message; passing or not, the outbox gives up in time.
            return Retry(_reply(exc.code, exc.message))
        except (OSError, aiosmtplib.SMTPException) as exc:
            return Retry(type(exc).__name__)
        return Sent(str(msg["Message-ID"]))


def _sorted(code: int, reason: str) -> Outcome:
    return Refused(reason) if 500 <= code < 600 else Retry(reason)


#: The address a message goes to, looked up when it is sent (from its
#: ``recipient_id``, and its ``template``: a client's or a therapist's address).
AddressOf = Callable[[Message], Awaitable[str | None]]
StillWanted = Callable[[Message], Awaitable[bool]]


class EmailWorker(OutboxWorker):
    """Drains the outbox's emails through ``sender``. ``still_wanted``: None,
    every email queued is still wanted."""

    channel = "email"

    def __init__(
        self,
        outbox: Outbox,
        sender: EmailSender,
        *,
        worker: str,
        address_of: AddressOf,
        still_wanted: StillWanted | None = None,
    ) -> None:
        self.sender = sender
        super().__init__(outbox, worker)
        self.address_of = address_of
        self.still_wanted = still_wanted

    @property
    def timeout_s(self) -> float:
        return self.sender.timeout_s

    async def handle(self, message: Message, now: float) -> None:
        ids = {
            "message_id": message.id,
            "about_id": message.about_id,
            "user_id": message.recipient_id,
            "template": message.template,
        }
        if self.still_wanted is not None and not await self.still_wanted(message):
            await self.outbox.dropped(message.id, self.worker, "no longer wanted", now)
            log.info("email.dropped", reason="not_wanted", **ids)
            return
        address = await self.address_of(message)
        if not address:
            await self.outbox.dropped(message.id, self.worker, "no email address", now)
            log.info("email.dropped", reason="no_address", **ids)
            return
        try:
            rendered = render(message.template, message.payload)
        except TemplateError as exc:
            await self.outbox.failed(message.id, self.worker, f"template: {exc}", now)
            log.error("email.template_failed", reason=str(exc), **ids)
            return
        outcome = await self.sender.send(address, rendered)
        if isinstance(outcome, Sent):
            # A Message-ID on a long domain may not fit: its unique part leads.
            provider_id = outcome.provider_id[:_PROVIDER_ID_LEN]
            await self.outbox.sent(message.id, self.worker, provider_id, now)
            log.info("email.sent", provider_id=provider_id, **ids)
        elif isinstance(outcome, Retry):
            await self.outbox.retry(message, self.worker, outcome.reason, now)
            log.warning("email.retry", reason=outcome.reason, attempts=message.attempts, **ids)
        else:
            await self.outbox.failed(message.id, self.worker, outcome.reason, now)
            log.warning("email.refused", reason=outcome.reason, **ids)
