"""The forms' hooks into requests and bookings (PROTOCOL.md §10); the forms
themselves are :mod:`care.forms`'.

* :func:`require_forms`: ``POST /v1/bookings`` of a ``session`` (whoever
  books it: the client, its therapist, an operator) answers 422
  ``intake_required`` with ``forms`` (the names still to fill) while the
  client's forms are not complete. An intro call needs none.
* :func:`make_request`: a minor's request made with
  ``guardian_consent: true`` is recorded as a ``guardian`` consent (its
  ``about_id`` the request, its version the consent form's) before the
  request enters the pool, once per request; then the welcome email.
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
from core.errors import Conflict, DispatchError, IntakeRequired
from core.identity import User
from core.logs import get_logger
from pool.effects import Change
from pool.model import Draft, Request

if TYPE_CHECKING:
    from dispatch.context import AppContext

__all__ = ["forms_of", "make_request", "require_forms", "welcome"]

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


async def make_request(
    ctx: AppContext, user: User, draft: Draft, idempotency_key: str | None
) -> tuple[Request, Change | None]:
    """``POST /v1/requests`` past its body: the request (or the replay of the
    first under ``idempotency_key``), then the welcome email.

    A minor's request made with ``guardian_consent: true`` has its
    ``guardian`` consent recorded *before* the pool step (its ``about_id``
    the request's id, its version the consent form's): a request never
    exists without it, and when the record cannot be written no request is
    made (the error is answered). When the pool then makes none (it refused:
    ``409``; or a replay answered the first request, which has its own),
    the record is removed again; when the pool's answer is unknown (Redis
    down mid-step) it stays, since the request may exist."""
    written: list[str] = []

    async def guardian_first(request_id: str) -> None:
        if not (draft.minor and draft.guardian_consent):
            return
        version = form_named(GUARDIAN_FORM).version
        await forms_of(ctx).consents.give(user.id, GUARDIAN, version, request_id, ctx.clock())
        written.append(request_id)

    try:
        req, created = await ctx.dispatcher.create_request(
            user, draft, idempotency_key, before_pool=guardian_first
        )
    except Conflict:
        await _forget_unmade(ctx, user.id, written)
        raise
    if created is None:
        await _forget_unmade(ctx, user.id, written)
    elif written:
        log.info("forms.guardian_consent", request_id=req.id, user_id=user.id)
    await welcome(ctx, user.id)
    return req, created


async def _forget_unmade(ctx: AppContext, client_id: str, request_ids: list[str]) -> None:
    """Remove guardian consents written for requests the pool did not make;
    a failure leaves a record about a request that does not exist (said in
    the log), never fails the answer."""
    try:
        await forms_of(ctx).consents.forget_unmade(client_id, GUARDIAN, request_ids)
    except DispatchError as exc:
        log.warning("forms.guardian_consent_left", user_id=client_id, code=exc.code)
