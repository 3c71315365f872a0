"""The emails and texts bookings send (PROTOCOL.md §8), queued in notify's
outbox once each (every row's dedupe key names the booking, the kind and the
recipient): confirmed (with an ``.ics``), cancelled (whether a fee applies),
and the reminder 24 h before (email, and a text to a therapist who opted in).

They are queued right after the booking's own transaction commits (the
booking store keeps no outbox rows); a failure to queue is logged and
never undoes or fails the booking. Emails go only when emails are on, texts
only when texting is on. Both sides get each email, in their own words and
with their own dedupe keys: the therapist (at its contact's address) and the
client, when it gave an address (``PATCH /v1/me/contact``; none, no email).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from core.errors import DispatchError
from core.logs import get_logger
from notify.invites import (
    Slot,
    Terms,
    cancelled_email,
    client_cancelled_email,
    client_confirmed_email,
    client_reminder_email,
    confirmed_email,
    reminder_email,
    reminder_text,
)
from notify.outbox import NewMessage
from schedule.policy import late_fee
from schedule.store import Booking

if TYPE_CHECKING:
    from dispatch.context import AppContext

log = get_logger(component="booking_mail")

#: A reminder goes this long before the start.
REMINDER_BEFORE_S: Final = 24 * 3600.0


def slot_of(booking: Booking) -> Slot:
    return Slot(
        booking_id=booking.id,
        therapist_id=booking.therapist_id,
        type=str(booking.type),
        start=float(booking.start),
        end=float(booking.end),
    )


async def _who(ctx: AppContext, therapist_id: str) -> tuple[str, str]:
    """The therapist's name and the zone its bookings are told in (its
    availability's, else its contact's)."""
    profile = await ctx.store.get_profile(therapist_id)
    name = profile.name if profile is not None else ""
    av = await ctx.bookings.get_availability(therapist_id)
    timezone = av.timezone if av is not None else (await ctx.contacts.get(therapist_id)).timezone
    return name, timezone


async def _client_wants_email(ctx: AppContext, client_id: str) -> bool:
    """Whether the client gave an address for booking emails (none: no row
    is queued for it; one removed later is dropped by the sender)."""
    return await ctx.client_contacts.email(client_id) is not None


def terms_of(ctx: AppContext, booking: Booking) -> Terms:
    """The cancellation terms the client is told: the booking's own policy
    snapshot and price."""
    price = int(booking.price_minor)
    fee = late_fee(booking.policy, price, ctx.settings.therapist_share_pct).charge_minor
    return Terms(
        price_minor=price,
        cancel_window_h=int(booking.policy.cancel_window_h),
        late_fee_minor=fee,
        currency=ctx.settings.currency,
    )


async def _queue(ctx: AppContext, messages: Sequence[NewMessage], what: str, about: str) -> None:
    if not messages:
        return
    try:
        async with ctx.db.writing() as conn:
            await ctx.outbox.queue(conn, messages, ctx.clock())
    except DispatchError as exc:
        log.warning("booking_mail.not_queued", kind=what, booking_id=about, code=exc.code)


async def booked(ctx: AppContext, bookings: Sequence[Booking]) -> None:
    """The confirmation of what one ``POST /v1/bookings`` made."""
    public_url = ctx.settings.public_url
    if ctx.mail is None or public_url is None or not bookings:
        return
    first = bookings[0]
    try:
        name, timezone = await _who(ctx, first.therapist_id)
        to_client = await _client_wants_email(ctx, first.client_id)
    except DispatchError as exc:
        log.warning("booking_mail.not_queued", kind="confirmed", code=exc.code)
        return
    slots, now = [slot_of(b) for b in bookings], ctx.clock()
    messages = [
        confirmed_email(slots, name=name, timezone=timezone, public_url=public_url, now=now)
    ]
    if to_client:
        messages.append(
            client_confirmed_email(
                slots,
                client_id=first.client_id,
                terms=terms_of(ctx, first),
                name=name,
                timezone=timezone,
                public_url=public_url,
                now=now,
            )
        )
    await _queue(ctx, messages, "confirmed", first.id)


async def cancelled(ctx: AppContext, booking: Booking, by: str) -> None:
    """The cancellation, saying whether a fee applies and how much."""
    public_url = ctx.settings.public_url
    if ctx.mail is None or public_url is None:
        return
    try:
        name, timezone = await _who(ctx, booking.therapist_id)
        to_client = await _client_wants_email(ctx, booking.client_id)
    except DispatchError as exc:
        log.warning("booking_mail.not_queued", kind="cancelled", code=exc.code)
        return
    slot, now, currency = slot_of(booking), ctx.clock(), ctx.settings.currency
    fee_minor = int(booking.fee_minor)
    messages = [
        cancelled_email(
            slot,
            by=by,
            fee_minor=fee_minor,
            currency=currency,
            name=name,
            timezone=timezone,
            public_url=public_url,
            now=now,
        )
    ]
    if to_client:
        messages.append(
            client_cancelled_email(
                slot,
                client_id=booking.client_id,
                by=by,
                fee_minor=fee_minor,
                currency=currency,
                name=name,
                timezone=timezone,
                public_url=public_url,
                now=now,
            )
        )
    await _queue(ctx, messages, "cancelled", booking.id)


async def remind(ctx: AppContext, booking: Booking) -> None:
    """The reminder 24 h before: an email to each side (the client's only
    when it gave an address), and a text (the sender sends it only to a
    therapist who opted in, with a phone)."""
    public_url = ctx.settings.public_url
    if public_url is None or (ctx.mail is None and ctx.sms is None):
        return
    name, timezone = await _who(ctx, booking.therapist_id)
    slot = slot_of(booking)
    messages: list[NewMessage] = []
    if ctx.mail is not None:
        messages.append(reminder_email(slot, name=name, timezone=timezone, public_url=public_url))
        if await _client_wants_email(ctx, booking.client_id):
            messages.append(
                client_reminder_email(
                    slot,
                    client_id=booking.client_id,
                    terms=terms_of(ctx, booking),
                    name=name,
                    timezone=timezone,
                    public_url=public_url,
                )
            )
    if ctx.sms is not None:
        messages.append(reminder_text(slot, timezone=timezone))
    await _queue(ctx, messages, "reminder", booking.id)
