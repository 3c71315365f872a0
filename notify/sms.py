"""Texts out through Twilio (PROTOCOL.md §7): the sender, and the worker that
drains the outbox's ``sms`` rows through it.

:class:`TwilioSender` sends one text with twilio-python's async client
(``AsyncTwilioHttpClient``, opened in the running loop and closed by
:meth:`~TwilioSender.aclose`), against ``api_url`` (``DISPATCH_TWILIO_API_URL``:
Twilio itself, or a loopback stand-in in tests). It sorts every outcome into
three: :class:`Sent` (with Twilio's ``MessageSid``), :class:`Retry` (a network
error, a timeout, a 5xx or a 429: passing), :class:`Refused` (any other 4xx:
this number will not take texts; the worker marks the row ``failed``).

:class:`SmsWorker` takes due rows (:meth:`notify.outbox.Outbox.take`), drops a
text no longer wanted (its request left ``waiting``: ``still_wanted``), looks
the therapist's phone up at the moment of sending (``phone_of``: a number
changed since is used, an erased one is not), sends, and records the
outcome. Neither the number nor the body is ever logged: ids only.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import aiohttp
import twilio.rest
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient

from core.logs import get_logger
from notify.invites import REMINDER_TEXT, reminder_text_body
from notify.outbox import Message, Outbox
from notify.texts import text_body
from notify.worker import OutboxWorker, Outcome, Refused, Retry, Sent

log = get_logger(component="sms")

#: twilio-python logs each request's URL and headers at INFO: kept below that.
_QUIET: Final = logging.getLogger("notify.sms.twilio_http")
_QUIET.setLevel(logging.WARNING)


class _HttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]  # twilio ships no py.typed
    """twilio-python's async client, sending its credentials as a plain
    ``Authorization`` header: it hands them to aiohttp as ``BasicAuth``, which
    aiohttp deprecates (and 4.0 removes)."""

    async def request(
        self,
        method: str,
        url: str,
        params: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- the parent's signature, as twilio calls it
        allow_redirects: bool = False,
    ) -> Any:
        headers = dict(headers or {})
        if auth is not None:
            pair = f"{auth[0]}:{auth[1]}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        return await super().request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            auth=None,
            timeout=timeout,
            allow_redirects=allow_redirects,
        )


class TwilioSender:
    """One Twilio account: ``sender`` is a number (``From``) or a Messaging
    Service SID (``MG...``: ``MessagingServiceSid``)."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        sender: str,
        *,
        api_url: str = "https://api.twilio.com",
        status_callback: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._sid = account_sid
        self._token = auth_token
        self._sender = sender
        self._api_url = api_url.rstrip("/")
        self._status_callback = status_callback
        self.timeout_s = timeout_s
        self._http: _HttpClient | None = None
        self._client: twilio.rest.Client | None = None

    def _open(self) -> twilio.rest.Client:
        if self._client is None:
            # Opens an aiohttp session: only inside the running loop.
            self._http = _HttpClient(timeout=self.timeout_s, logger=_QUIET)
            self._client = twilio.rest.Client(self._sid, self._token, http_client=self._http)
            # The API domain's base URL: Twilio's, or the stand-in's.
            self._client.api.base_url = self._api_url
        return self._client

    async def send(self, to: str, body: str) -> Outcome:
        """Send ``body`` to ``to`` (E.164); never raises for the provider's or
        the network's failures (they are outcomes)."""
        client = self._open()
        fields: dict[str, str] = {"to": to, "body": body}
        if self._sender.startswith("MG"):
            fields["messaging_service_sid"] = self._sender
        else:
            fields["from_"] = self._sender
        if self._status_callback:
            fields["status_callback"] = self._status_callback
        try:
            # The async client does not apply its own timeout on every path.
            message = await asyncio.wait_for(
                client.messages.create_async(**fields), timeout=self.timeout_s
            )
        except TwilioRestException as exc:
            status = int(exc.status or 0)
            reason = f"HTTP {status} (twilio code {exc.code})"
            if status >= 500 or status == 429 or status == 0:
                return Retry(reason)
            return Refused(reason)
        except (TimeoutError, aiohttp.ClientError, OSError, TwilioException) as exc:
            return Retry(type(exc).__name__)
        if not message.sid:
            return Retry("no MessageSid in the answer")
        return Sent(str(message.sid))

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
        self._http = self._client = None


PhoneOf = Callable[[str], Awaitable[str | None]]
StillWanted = Callable[[Message], Awaitable[bool]]
Refusal = Callable[[str], Awaitable[None]]


class SmsWorker(OutboxWorker):
    """Drains the outbox's texts through ``sender``."""

    channel = "sms"

    def __init__(
        self,
        outbox: Outbox,
        sender: TwilioSender,
        *,
        worker: str,
        public_url: str,
        phone_of: PhoneOf,
        still_wanted: StillWanted,
        on_refused: Refusal | None = None,
    ) -> None:
        self.sender = sender
        super().__init__(outbox, worker)
        self.public_url = public_url
        self.body = text_body(public_url)
        self.phone_of = phone_of
        self.still_wanted = still_wanted
        self.on_refused = on_refused

    @property
    def timeout_s(self) -> float:
        return self.sender.timeout_s

    async def handle(self, message: Message, now: float) -> None:
        ids = {"message_id": message.id, "request_id": message.about_id}
        if not await self.still_wanted(message):
            await self.outbox.dropped(message.id, self.worker, "no longer wanted", now)
            log.info("sms.dropped", **ids)
            return
        phone = await self.phone_of(message.recipient_id)
        if phone is None:
            await self.outbox.dropped(message.id, self.worker, "no phone any more", now)
            log.info("sms.dropped", reason="no_phone", **ids)
            return
        body = self.body
        if message.template == REMINDER_TEXT:  # a booking's reminder (PROTOCOL.md §8)
            body = reminder_text_body(self.public_url, message.payload)
        outcome = await self.sender.send(phone, body)
        if isinstance(outcome, Sent):
            await self.outbox.sent(message.id, self.worker, outcome.provider_id, now)
            log.info("sms.sent", sid=outcome.provider_id, **ids)
        elif isinstance(outcome, Retry):
            await self.outbox.retry(message, self.worker, outcome.reason, now)
            log.warning("sms.retry", reason=outcome.reason, attempts=message.attempts, **ids)
        else:
            await self.outbox.failed(message.id, self.worker, outcome.reason, now)
            log.warning("sms.refused", reason=outcome.reason, therapist_id=message.recipient_id)
            if self.on_refused is not None:
                await self.on_refused(message.recipient_id)
