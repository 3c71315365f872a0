"""The forms' hooks into requests and bookings (PROTOCOL.md §10); the forms
themselves are :mod:`care.forms`'.

* :func:`require_forms`: ``POST /v1/bookings`` of a ``session`` (whoever
  books it: the client, its therapist, an operator) answers 422
  ``intake_required`` with ``forms`` (the names still to fill) while the
  client's forms are not complete. An intro call needs none.
* :func:`after_request`: a minor's request made with
  ``guardian_consent: true`` is recorded as a ``guardian`` consent (its
  ``about_id`` the request, its version the consent form's), once per
  request; then the welcome email.
* :func:`welcome`: after a client's first request or booking, the welcome
  email (:mod:`care.welcome`), queued once ever, only when emails are on and
  the client gave an address. A failure to queue it is logged and never
  fails the request or the booking.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from care.consents import GUARDIAN
from care.forms import FormStore, form_named, load_forms
from care.welcome import welcome_email
from core.errors import DispatchError, IntakeRequired
from core.logs import get_logger
from pool.model import Request

if TYPE_CHECKING:
    from dispatch.context import AppContext

__all__ = ["after_request", "forms_of", "require_forms", "welcome"]

log = get_logger(component="forms")

#: The form whose version a guardian's consent is recorded at.
GUARDIAN_FORM: Final = "consent"


def forms_of(ctx: AppContext) -> FormStore:
    """The clients' form answers (a light view over the context's database
    and data keys)."""
    assert ctx.data_keys is not None, "build_context sets the data keys"
    return FormStore(ctx.db, ctx.data_keys)


async def require_forms(ctx: AppContext, client_id: str) -> None:
    """Raise :class:`IntakeRequired` naming the forms ``client_id`` must
    still fill (missing ones, and a consent agreed at an older version)."""
    missing = await forms_of(ctx).missing(client_id)
    if missing:
        raise IntakeRequired(
            "the client's forms must be filled in before a session is booked: "
            + ", ".join(missing),
            forms=missing,
        )


async def welcome(ctx: AppContext, client_id: str) -> None:
    """Queue the welcome email for ``client_id`` (once ever: the outbox's
    dedupe key), listing the forms it has still to fill."""
    public_url = ctx.settings.public_url
    if ctx.mail is None or public_url is None:
        return
    try:
        if await ctx.client_contacts.email(client_id) is None:
            return
        missing = set(await forms_of(ctx).missing(client_id))
        to_fill = [f for f in load_forms() if f.name in missing]
        async with ctx.db.writing() as conn:
            queued = await ctx.outbox.queue(
                conn, [welcome_email(client_id, to_fill, public_url)], ctx.clock()
            )
    except DispatchError as exc:
        log.warning("forms.welcome_not_queued", user_id=client_id, code=exc.code)
        return
    if queued:
        log.info("forms.welcome_queued", user_id=client_id, forms_to_fill=len(to_fill))


async def after_request(ctx: AppContext, request: Request) -> None:
    """What a client's quick-connect request records besides itself: a
    guardian's consent for a minor, and the welcome email. Called for a
    replayed request too (both are written once)."""
    if request.age is not None and request.age < 18 and request.guardian_consent:
        version = form_named(GUARDIAN_FORM).version
        written = await forms_of(ctx).consents.give_once(
            request.client_id, GUARDIAN, version, request.id, ctx.clock()
        )
        if written:
            log.info(
                "forms.guardian_consent",
                request_id=request.id,
                user_id=request.client_id,
                version=version,
            )
    await welcome(ctx, request.client_id)
