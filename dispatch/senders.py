"""The outbox's senders of one server process, built from its settings
(PROTOCOL.md §7): texts when Twilio is set, emails when SMTP is set. Whichever
is off is said once, at start-up (:func:`announce`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from care.safeguarding import ALERT_TEMPLATE as SAFEGUARDING_TEMPLATE
from care.welcome import WELCOME_TEMPLATE
from core.logs import get_logger
from dispatch.settings import Settings, env_name
from dispatch.texting import STATUS_PATH
from notify.contacts import ClientContacts, Contacts
from notify.email import EmailSender, EmailWorker, SmtpConfig
from notify.invites import CLIENT_TEMPLATES
from notify.outbox import Message, Outbox
from notify.rounds import TEMPLATE as WAITING_TEXT
from notify.rounds import GuardedIds, KnownClients, TextPolicy, TextRounds
from notify.sms import SmsWorker, TwilioSender
from pool.model import State
from pool.store import PoolStore

log = get_logger(component="senders")

#: The longest one text or email may take to hand over.
SEND_TIMEOUT_S: Final = 10.0


def texts(
    settings: Settings,
    outbox: Outbox,
    contacts: Contacts,
    store: PoolStore,
    known: KnownClients,
    clock: Callable[[], float],
    guarded: GuardedIds | None = None,
) -> tuple[TextRounds, SmsWorker] | None:
    """Who decides texts and who sends them; None when texting is off.
    ``guarded``: the therapists near a booked session (no texts for them)."""
    if not settings.texting:
        return None
    assert settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from
    assert settings.public_url  # Settings insists on it when texting is on
    public_url = settings.public_url.rstrip("/")
    rounds = TextRounds(
        outbox.db,
        outbox,
        store,
        known,
        TextPolicy(
            delay_s=settings.sms_delay_s,
            cooldown_s=settings.sms_cooldown_s,
            max_per_request=settings.sms_max_per_request,
        ),
        guarded=guarded,
    )
    sender = TwilioSender(
        settings.twilio_account_sid,
        settings.twilio_auth_token,
        settings.twilio_from,
        api_url=settings.twilio_api_url,
        status_callback=public_url + STATUS_PATH,
        timeout_s=send_timeout_s(settings),
    )

    async def phone_of(therapist_id: str) -> str | None:
        # Looked up when sending: a number changed since is used; one erased,
        # refused, or opted out of since is not.
        contact = await contacts.get(therapist_id)
        if not contact.sms_opt_in or contact.phone_failed:
            return None
        return contact.phone

    async def still_wanted(message: Message) -> bool:
        # A request claimed, cancelled or expired before its text goes sends none.
        # (A booking's reminder is about a booking, not a request: it goes.)
        if message.about_id is None or message.template != WAITING_TEXT:
            return True
        request = await store.get(message.about_id)
        return request is not None and request.state is State.WAITING

    async def refused(therapist_id: str) -> None:
        await contacts.flag_phone(therapist_id, clock())

    worker = SmsWorker(
        outbox,
        sender,
        worker=settings.server_id,
        public_url=public_url,
        phone_of=phone_of,
        still_wanted=still_wanted,
        on_refused=refused,
    )
    return rounds, worker


def emails(
    settings: Settings, outbox: Outbox, contacts: Contacts, client_contacts: ClientContacts
) -> EmailWorker | None:
    """Who sends emails; None when emails are off."""
    if not settings.emailing:
        return None
    assert settings.smtp_url and settings.mail_from

    async def address_of(message: Message) -> str | None:
        # Looked up when sending: an address changed since is used; one
        # removed since is not (the email is dropped).
        if message.template in CLIENT_TEMPLATES or message.template == WELCOME_TEMPLATE:
            return await client_contacts.email(message.recipient_id)
        if message.template == SAFEGUARDING_TEMPLATE:
            # The setting as it is now (unset since: the email is dropped).
            return settings.safeguarding_email
        return (await contacts.get(message.recipient_id)).email

    sender = EmailSender(
        SmtpConfig.parse(settings.smtp_url), settings.mail_from, timeout_s=send_timeout_s(settings)
    )
    return EmailWorker(outbox, sender, worker=settings.server_id, address_of=address_of)


def send_timeout_s(settings: Settings) -> float:
    """A send gives up well inside the outbox lease, so no other server takes
    a row whose send may still succeed."""
    return min(SEND_TIMEOUT_S, settings.outbox_lease_s / 3)


def announce(settings: Settings) -> None:
    """Say once, at start-up, what is off and what turns it on."""
    if not settings.texting:
        log.info(
            "texting.off",
            hint=f"set {env_name('twilio_account_sid')}, {env_name('twilio_auth_token')} "
            f"and {env_name('twilio_from')} to text therapists who are away",
        )
    if not settings.emailing:
        log.info(
            "email.off",
            hint=f"set {env_name('smtp_url')} and {env_name('mail_from')} to send emails",
        )
    if not settings.emailing or settings.safeguarding_email is None:
        log.info(
            "safeguarding_email.off",
            hint=f"set {env_name('safeguarding_email')} (and emails on) to email "
            "safeguarding alerts; operators' pages show them either way",
        )
