"""Deciding texts (PROTOCOL.md §7): one round looks at every request waiting
long enough, applies the pure decision (:func:`notify.texts.recipients`) and
queues what it decides in the outbox, in one database transaction.

Every server runs rounds (:mod:`dispatch.loops`). Two rounds on two servers
at once must not text more than the cap, nor text one therapist twice within
the cooldown: a round locks the contact rows of the therapists it may text
(``FOR UPDATE``, in id order so two rounds never deadlock; SQLite's write lock
does the same) before it reads who was texted, so the second round waits for
the first and sees its rows. The outbox's unique ``dedupe_key``
(``sms:<request>:<therapist>``) is the last guard: one text per pair, ever.

What the pool says (profiles, holds, who has a console open) is read before
the transaction; it may move meanwhile, so the sender checks again that the
request still waits before it sends (:class:`notify.sms.SmsWorker`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Final

from sqlalchemy import func, select

from core.db import Database
from core.logs import get_logger
from notify.contacts import Contacts
from notify.outbox import NewMessage, Outbox
from notify.tables import contacts, outbox
from notify.texts import Candidate, due_at, recipients
from pool import rules
from pool.store import PoolStore

log = get_logger(component="texts")

#: ``(therapist id, client ids) -> those clients it has had sessions with``.
KnownClients = Callable[[str, list[str]], Awaitable[set[str]]]
#: ``now -> therapist ids guarded near a booked session`` (``dispatch.guard``).
GuardedIds = Callable[[float], Awaitable[set[str]]]

#: Outbox states of a text that counts for the cooldown (it went, or will).
_COUNTED: Final = ("queued", "sending", "sent", "delivered", "undelivered")
TEMPLATE: Final = "quick_connect_waiting"


def dedupe_key(request_id: str, therapist_id: str) -> str:
    return f"sms:{request_id}:{therapist_id}"


@dataclass(frozen=True, slots=True)
class TextPolicy:
    """The settings of §7: ``DISPATCH_SMS_DELAY_S``, ``_COOLDOWN_S``, ``_MAX_PER_REQUEST``."""

    delay_s: float = 0.0
    cooldown_s: float = 600.0
    max_per_request: int = 25


class TextRounds:
    def __init__(
        self,
        db: Database,
        outbox_: Outbox,
        store: PoolStore,
        known: KnownClients,
        policy: TextPolicy,
        guarded: GuardedIds | None = None,
    ) -> None:
        self.db = db
        self.outbox = outbox_
        self.store = store
        self.known = known
        self.policy = policy
        #: None: nobody is guarded (no bookings wired in).
        self.guarded = guarded

    async def run(self, now: float) -> int:
        """One round at ``now``; returns how many texts it queued."""
        due = [r for r in await self.store.waiting() if due_at(r, self.policy.delay_s) <= now]
        if not due:
            return 0
        textable = await Contacts(self.db).textable()
        if not textable:
            return 0
        # The pool's view of each therapist who could get a text.
        pool: dict[str, tuple[Candidate, set[str]]] = {}
        client_ids = sorted({r.client_id for r in due})
        guarded = set() if self.guarded is None else await self.guarded(now)
        for contact in textable:
            tid = contact.therapist_id
            profile = await self.store.get_profile(tid)
            if profile is None:
                continue
            busy = await self.store.hold_of(tid) is not None
            watching = await self.store.is_available(tid)
            if busy or watching:
                continue  # cheaper than asking the rest
            known = set(client_ids)
            if not profile.accepting_new_clients:
                known = await self.known(tid, client_ids)
            candidate = Candidate(profile, contact.for_texts(None), guarded=tid in guarded)
            pool[tid] = (candidate, known)
        if not pool:
            return 0
        queued = 0
        async with self.db.writing() as conn:
            ids = sorted(pool)
            # Serialise with any other round about these therapists (module docstring).
            await conn.execute(
                select(contacts.c.therapist_id)
                .where(contacts.c.therapist_id.in_(ids))
                .order_by(contacts.c.therapist_id)
                .with_for_update()
            )
            last = await conn.execute(
                select(outbox.c.recipient_id, func.max(outbox.c.created_at))
                .where(
                    outbox.c.channel == "sms",
                    outbox.c.recipient_id.in_(ids),
                    outbox.c.state.in_(_COUNTED),
                )
                .group_by(outbox.c.recipient_id)
            )
            last_at = {tid: at.timestamp() for tid, at in last.all() if at is not None}
            already: dict[str, set[str]] = {}
            rows = await conn.execute(
                select(outbox.c.about_id, outbox.c.recipient_id).where(
                    outbox.c.channel == "sms", outbox.c.about_id.in_([r.id for r in due])
                )
            )
            for about_id, recipient_id in rows:
                already.setdefault(str(about_id), set()).add(recipient_id)
            messages: list[NewMessage] = []
            for request in sorted(due, key=lambda r: (r.created_at, r.id)):
                candidates = [
                    Candidate(
                        c.profile,
                        replace(c.contact, last_texted_at=last_at.get(tid)),
                        paused_for_client=rules.paused_for(c.profile, request.client_id in known),
                        guarded=c.guarded,
                    )
                    for tid, (c, known) in pool.items()
                ]
                chosen = recipients(
                    request,
                    candidates,
                    now,
                    delay_s=self.policy.delay_s,
                    cooldown_s=self.policy.cooldown_s,
                    max_per_request=self.policy.max_per_request,
                    already=already.get(request.id, set()),
                )
                for tid in chosen:
                    last_at[tid] = now  # the cooldown holds within this round too
                    messages.append(
                        NewMessage(
                            channel="sms",
                            dedupe_key=dedupe_key(request.id, tid),
                            recipient_id=tid,
                            template=TEMPLATE,
                            about_id=request.id,
                        )
                    )
            queued = await self.outbox.queue(conn, messages, now)
        if queued:
            log.info("texts.queued", count=queued)
        return queued
