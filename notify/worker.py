"""What every outbox sender does with a batch (texts, emails): take due rows of
its channel, and handle each while its lease surely covers the send.

A row still unsent when its lease passes may be taken, and sent, by another
server too. So a batch sends only while what it has spent plus one more
send's timeout fits in :data:`LEASE_SHARE` of the lease; the rest go back to
the queue (:meth:`notify.outbox.Outbox.retry`), and a sender whose timeout
could never fit is refused when it is built.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Final

from core.logs import get_logger
from notify.outbox import Message, Outbox

log = get_logger(component="outbox")

#: The share of the outbox lease a batch may use before it gives rows back.
LEASE_SHARE: Final = 0.8


@dataclass(frozen=True, slots=True)
class Sent:
    """The provider took the message; ``provider_id`` is its id for it
    (Twilio's ``MessageSid``, an email's ``Message-ID``)."""

    provider_id: str


@dataclass(frozen=True, slots=True)
class Retry:
    """A passing failure (network, timeout, 5xx, 429, a 4xx SMTP reply): again later."""

    reason: str


@dataclass(frozen=True, slots=True)
class Refused:
    """The provider will not take this message to this address: ``failed``."""

    reason: str


#: What a sender makes of one send; it never raises for the provider's failures.
Outcome = Sent | Retry | Refused


class OutboxWorker(ABC):
    """Drains one channel of the outbox; one per server process (``worker``
    names it in the rows it takes)."""

    #: The outbox channel this worker sends.
    channel: ClassVar[str]

    def __init__(self, outbox: Outbox, worker: str) -> None:
        if self.timeout_s >= LEASE_SHARE * outbox.lease_s:
            raise ValueError(
                f"the {self.channel} sender's timeout must be well within the outbox's lease"
            )
        self.outbox = outbox
        self.worker = worker

    @property
    @abstractmethod
    def timeout_s(self) -> float:
        """The longest one send may take."""

    @abstractmethod
    async def handle(self, message: Message, now: float) -> None:
        """Send ``message`` (taken by this worker) and record the outcome."""

    async def run_once(self, now: float, limit: int = 20) -> int:
        """Take and handle one batch; returns how many rows it took."""
        taken = await self.outbox.take(self.channel, self.worker, now, limit=limit)
        started = time.monotonic()
        for message in taken:
            spent = time.monotonic() - started
            if spent + self.timeout_s > LEASE_SHARE * self.outbox.lease_s:
                await self.outbox.retry(message, self.worker, "not reached within its lease", now)
                log.info(
                    "outbox.deferred",
                    channel=self.channel,
                    message_id=message.id,
                    about_id=message.about_id,
                )
                continue
            await self.handle(message, now)
        return len(taken)
