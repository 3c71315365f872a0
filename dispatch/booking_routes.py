"""HTTP calls of scheduled care (PROTOCOL.md §8); the rules are :mod:`schedule`'s.

* ``PUT /v1/therapists/{id}/availability`` (that therapist, an operator):
  200 with the availability as stored (and ``weekly_hours``).
* ``GET /v1/therapists/{id}/availability`` (any signed-in user): the same; a
  therapist that set none has none (empty lists in its contact's zone).
* ``GET /v1/therapists/{id}/slots?type=&from=&days=`` (any signed-in user):
  ``{"slots": [{"start", "end"}]}``, plus ``timezone``, ``type``,
  ``length_min`` and ``price_minor`` (additions).
* ``POST /v1/bookings`` (a client for itself; a therapist for a client it has
  had a session with; an operator for any client, an addition: the manual
  match, recorded with ``created_by`` the operator): 201 ``{"bookings":
  [B, ...]}``; with the same ``Idempotency-Key`` again, 200 with the first
  answer and ``Idempotent-Replayed: true``.
* ``GET /v1/bookings?from=&to=`` (client, therapist: their own; operator: all,
  or ``?unmarked=true``: past ones left without an outcome 48 h after their end).
* ``POST /v1/bookings/{id}/cancel`` (its client or therapist, an operator),
  ``POST /v1/bookings/{id}/outcome`` (its therapist, an operator): 200
  ``{"booking": B}``.
* ``POST /v1/bookings/{id}/session`` (its client or therapist): 200
  ``{"session": S}``.
* ``GET /v1/therapists?region=&language=&topics=`` (any signed-in user): the
  directory (:mod:`dispatch.directory`).

A booking that is not the caller's is answered 404, as if it did not exist.
``POST /v1/bookings`` checks, in this order: the body's fields (422), the
caller's role and right (403), the therapist (404), a replay of the
``Idempotency-Key`` (200 with the first answer), the times against the
availability (``outside_availability``), the minimum notice (``too_soon``),
the intro once (``intro_used``), the pause on new clients (``paused``; a
client linked by the therapist's referral code is not new, PROTOCOL.md §10), the
client's forms for a ``session`` (``intake_required``, with ``forms``: the
names still to fill, §10; whoever books it), the funds (402), and then books
atomically (409 ``slot_taken``). A booking made (not replayed) queues the
client's welcome email, once ever (:mod:`dispatch.intake`).
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.clock import rfc3339
from core.errors import (
    BadInput,
    Forbidden,
    InsufficientFunds,
    IntroUsed,
    InvalidField,
    NotFound,
    OutsideAvailability,
    Paused,
    TooSoon,
)
from core.identity import Role, User
from core.validation import parse_idempotency_key, parse_json_body, validate_id
from dispatch import booking_bodies as bodies
from dispatch import booking_mail, directory, intake
from dispatch.context import AppContext
from dispatch.routes import ctx_of, signed_in
from pool import rules
from pool.model import TherapistProfile
from schedule.model import Availability, BookingType, Policy, parse_availability
from schedule.policy import check_join
from schedule.slots import fits, open_slots, weekly_series
from schedule.store import Booking, Bookings

__all__ = ["ROUTES"]

#: Profiles the directory reads at most (the rest are not listed).
DIRECTORY_SCAN_MAX: Final = 1000
#: Of those, the best by topics and pause whose calendars it reads.
DIRECTORY_CALENDARS_MAX: Final = 200


def _bookings(ctx: AppContext) -> Bookings:
    store: Bookings = ctx.bookings
    return store


def policy_of(ctx: AppContext) -> Policy:
    """The cancellation policy of a booking made now (the settings)."""
    s = ctx.settings
    return Policy(
        cancel_window_h=s.cancel_window_h,
        late_fee_pct=s.late_fee_pct,
        late_fee_therapist_pct=s.late_fee_therapist_pct,
    )


def length_min(ctx: AppContext, kind: BookingType) -> int:
    s = ctx.settings
    return s.intro_minutes if kind is BookingType.INTRO else s.session_minutes


def price_minor(ctx: AppContext, profile: TherapistProfile, kind: BookingType) -> int:
    """An intro is free; a session costs the therapist's price, else the setting."""
    if kind is BookingType.INTRO:
        return 0
    if profile.session_price_minor is not None:
        return profile.session_price_minor
    return ctx.settings.session_price_minor


async def _profile(ctx: AppContext, therapist_id: str) -> TherapistProfile:
    profile = await ctx.store.get_profile(therapist_id)
    if profile is None:
        raise NotFound("no such therapist")
    return profile


async def _availability(ctx: AppContext, therapist_id: str) -> Availability:
    """The therapist's availability; none set: empty, in its contact's zone."""
    av = await _bookings(ctx).get_availability(therapist_id)
    if av is not None:
        return av
    return Availability.empty((await ctx.contacts.get(therapist_id)).timezone)


def _therapist_path(request: HttpRequest) -> str:
    return validate_id(request.path_params["therapist_id"], "therapist id")


# -- availability and slots ------------------------------------------------------------


async def put_availability(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.THERAPIST, Role.OPERATOR)
    tid = _therapist_path(request)
    if user.role is Role.THERAPIST and user.id != tid:
        raise Forbidden("a therapist may set only its own availability")
    now = ctx.clock()
    today = dt.datetime.fromtimestamp(now, tz=dt.UTC).date()
    body = parse_json_body(await request.body())
    if not isinstance(body, dict):
        raise BadInput("request body must be a JSON object")
    av = parse_availability(body, today=today)
    await _profile(ctx, tid)
    await _bookings(ctx).put_availability(tid, av, now)
    return JSONResponse(av.to_wire())


async def get_availability(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    signed_in(request)
    tid = _therapist_path(request)
    await _profile(ctx, tid)
    return JSONResponse((await _availability(ctx, tid)).to_wire())


async def _open_slots(
    ctx: AppContext,
    therapist_id: str,
    av: Availability,
    kind: BookingType,
    first_day: dt.date,
    days: int,
) -> list[tuple[float, float]]:
    s = ctx.settings
    # Bookings that may reach into these dates, with a day's margin each side
    # (zones are at most 14 h from UTC; a booking is shorter than a day).
    lo = dt.datetime(first_day.year, first_day.month, first_day.day, tzinfo=dt.UTC).timestamp()
    busy = await _bookings(ctx).busy(therapist_id, lo - 86400.0, lo + (days + 1) * 86400.0)
    return open_slots(
        av,
        first_day=first_day,
        days=days,
        length_min=length_min(ctx, kind),
        step_min=s.slot_step_min,
        buffer_min=s.booking_buffer_min,
        min_notice_s=s.booking_min_notice_h * 3600.0,
        now=ctx.clock(),
        busy=busy,
    )


async def get_slots(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    signed_in(request)
    tid = _therapist_path(request)
    query = bodies.parse_slot_query(request.query_params)
    profile = await _profile(ctx, tid)
    av = await _availability(ctx, tid)
    first = query.first_day or dt.datetime.fromtimestamp(ctx.clock(), tz=av.zone).date()
    slots = await _open_slots(ctx, tid, av, query.type, first, query.days)
    return JSONResponse(
        {
            "slots": [{"start": rfc3339(a), "end": rfc3339(b)} for a, b in slots],
            "timezone": av.timezone,
            "type": query.type.value,
            "length_min": length_min(ctx, query.type),
            "price_minor": price_minor(ctx, profile, query.type),
            "policy": policy_of(ctx).to_wire(),
        }
    )


# -- bookings ----------------------------------------------------------------------------


def _client_of(user: User, draft: bodies.BookingDraft) -> str:
    """The client a booking is for: a client books for itself; a therapist
    and an operator name the client."""
    if user.role is Role.CLIENT:
        if draft.client_id is not None and draft.client_id != user.id:
            raise Forbidden("a client books for itself")
        return user.id
    if draft.client_id is None:
        raise InvalidField("client_id is required", field="client_id")
    return draft.client_id


async def post_booking(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.CLIENT, Role.THERAPIST, Role.OPERATOR)
    key = parse_idempotency_key(request.headers.get("idempotency-key"))
    draft = bodies.parse_booking(parse_json_body(await request.body()))
    client_id = _client_of(user, draft)
    tid = draft.therapist_id
    if user.role is Role.THERAPIST:
        if tid != user.id:
            raise Forbidden("a therapist books follow-ups with itself")
        if client_id not in await ctx.signaling.records.clients_known(tid, [client_id]):
            raise Forbidden("a therapist books follow-ups for clients it has had a session with")
    profile = await _profile(ctx, tid)
    store = _bookings(ctx)
    replay = None if key is None else await store.replay(user.id, key)
    if replay is not None:
        return _created(replay, replayed=True)

    s, now = ctx.settings, ctx.clock()
    minutes = length_min(ctx, draft.type)
    av = await store.get_availability(tid)
    if av is None:
        raise OutsideAvailability("this therapist has set no availability")
    starts = [draft.start]
    if draft.repeat_weekly is not None:
        starts = weekly_series(draft.start, av.timezone, draft.repeat_weekly)
    for start in starts:
        if not fits(av, start, minutes, s.slot_step_min):
            raise OutsideAvailability(
                f"{rfc3339(start)} is not one of the therapist's open times", start=rfc3339(start)
            )
    if draft.start < now + s.booking_min_notice_h * 3600.0:
        raise TooSoon(f"a booking must start at least {s.booking_min_notice_h} h ahead")
    if draft.type is BookingType.INTRO and await store.intro_used(client_id, tid):
        raise IntroUsed()
    if not profile.accepting_new_clients and user.role is not Role.THERAPIST:
        knows = client_id in await ctx.signaling.records.clients_known(tid, [client_id])
        # A client who came with this therapist's referral code is its own
        # (PROTOCOL.md §10): it may book it while it takes no new clients.
        if not knows and ctx.referrals is not None:
            knows = await ctx.referrals.refers(tid, client_id)
        if rules.paused_for(profile, knows):
            raise Paused()
    if draft.type is BookingType.SESSION:
        await intake.require_forms(ctx, client_id)
    price = price_minor(ctx, profile, draft.type)
    total = price * len(starts)
    if total > 0:
        held = await ctx.ledger.held(client_id)
        balance = await ctx.ledger.balance(client_id)
        if balance - held < total:
            # The same fields as the store's own refusal (and §6's quick-connect 402).
            raise InsufficientFunds(
                "not enough money in the wallet for this booking",
                balance_minor=balance,
                held_minor=held,
                required_minor=total,
            )
    made = await store.create(
        therapist_id=tid,
        client_id=client_id,
        type=draft.type,
        starts=starts,
        length_min=minutes,
        buffer_min=s.booking_buffer_min,
        price_minor=price,
        policy=policy_of(ctx),
        created_by=user.id,
        created_by_role=user.role.value,
        idempotency_key=key,
        now=now,
    )
    if made.replayed:
        return _created(made.bookings, replayed=True)
    # A live quick-connect call of this client may now spend less (the hold).
    await ctx.metering.replan(client_id)
    await booking_mail.booked(ctx, made.bookings)
    await intake.welcome(ctx, client_id)
    return _created(made.bookings, replayed=False)


def _created(made: list[Booking], *, replayed: bool) -> Response:
    body = {"bookings": [b.to_wire() for b in made]}
    if replayed:
        return JSONResponse(body, status_code=200, headers={"Idempotent-Replayed": "true"})
    return JSONResponse(body, status_code=201)


async def list_bookings(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.CLIENT, Role.THERAPIST, Role.OPERATOR)
    store, now = _bookings(ctx), ctx.clock()
    if bodies.parse_flag(request.query_params, "unmarked"):
        if user.role is not Role.OPERATOR:
            raise Forbidden("only an operator lists unmarked bookings")
        found = await store.unmarked(now)
    else:
        lo, hi = bodies.parse_range(request.query_params, now)
        if user.role is Role.OPERATOR:
            found = await store.list_all(lo, hi)
        else:
            found = await store.list_for(user.id, user.role.value, lo, hi)
    return JSONResponse({"bookings": [b.to_wire() for b in found]})


async def _booking_of(ctx: AppContext, request: HttpRequest, user: User) -> Booking:
    """The booking in the path, if the caller is one of its two sides or an
    operator; 404 otherwise (ids reveal nothing)."""
    bid = validate_id(request.path_params["booking_id"], "booking id")
    booking = await _bookings(ctx).get(bid)
    if booking is None or (
        user.role is not Role.OPERATOR and user.id not in (booking.client_id, booking.therapist_id)
    ):
        raise NotFound("no such booking")
    return booking


def _side(user: User, booking: Booking) -> str:
    """``client``, ``therapist`` or ``operator``: in which capacity ``user`` acts."""
    if user.role is Role.OPERATOR:
        return "operator"
    if user.role is Role.CLIENT and user.id == booking.client_id:
        return "client"
    if user.role is Role.THERAPIST and user.id == booking.therapist_id:
        return "therapist"
    raise NotFound("no such booking")


async def cancel_booking(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.CLIENT, Role.THERAPIST, Role.OPERATOR)
    booking = await _booking_of(ctx, request, user)
    side = _side(user, booking)
    after = await _bookings(ctx).cancel(
        booking.id, user.id, side, ctx.clock(), ctx.settings.therapist_share_pct
    )
    await ctx.metering.replan(after.client_id)
    await booking_mail.cancelled(ctx, after, side)
    return JSONResponse({"booking": after.to_wire()})


async def post_outcome(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.CLIENT, Role.THERAPIST, Role.OPERATOR)
    booking = await _booking_of(ctx, request, user)
    if _side(user, booking) == "client":
        raise Forbidden("the booking's therapist or an operator marks its outcome")
    outcome = bodies.parse_outcome(parse_json_body(await request.body()))
    after = await _bookings(ctx).mark_outcome(
        booking.id, outcome, ctx.clock(), ctx.settings.therapist_share_pct
    )
    await ctx.metering.replan(after.client_id)
    return JSONResponse({"booking": after.to_wire()})


async def open_session(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.CLIENT, Role.THERAPIST)
    booking = await _booking_of(ctx, request, user)
    _side(user, booking)
    check_join(booking.state, start=booking.start, end=booking.end, now=ctx.clock())
    session = await ctx.dispatcher.open_booked(
        user, booking.id, booking.client_id, booking.therapist_id
    )
    if booking.session_id != session.id:
        await _bookings(ctx).attach_session(booking.id, session.id)
    ice = await ctx.ice.ice_servers()
    return JSONResponse({"session": session.public(ice)})


# -- the directory -------------------------------------------------------------------------


async def list_therapists(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    signed_in(request)
    wanted = directory.parse_query(request.query_params)
    store = _bookings(ctx)
    ids = await store.therapist_ids(DIRECTORY_SCAN_MAX)
    profiles = [p for p in [await ctx.store.get_profile(t) for t in ids] if p is not None]
    fitting = [p for p in profiles if directory.fits(p, wanted)]
    fitting.sort(key=lambda p: (*directory.pre_rank(p, wanted), p.id))
    now = ctx.clock()
    found: list[tuple[TherapistProfile, float | None, str]] = []
    for profile in fitting[:DIRECTORY_CALENDARS_MAX]:
        av = await _availability(ctx, profile.id)
        today = dt.datetime.fromtimestamp(now, tz=av.zone).date()
        slots = await _open_slots(
            ctx, profile.id, av, BookingType.SESSION, today, directory.HORIZON_DAYS
        )
        found.append((profile, slots[0][0] if slots else None, av.timezone))
    zones = {p.id: tz for p, _, tz in found}
    ranked = directory.rank([(p, n) for p, n, _ in found], wanted)
    return JSONResponse(
        {
            "therapists": [
                {
                    **p.public(),
                    "timezone": zones[p.id],
                    "session_price_minor": price_minor(ctx, p, BookingType.SESSION),
                    "next_slot": None if n is None else rfc3339(n),
                    "topics_shared": directory.shared(p, wanted),
                }
                for p, n in ranked
            ]
        }
    )


ROUTES: Final = [
    Route("/v1/therapists", list_therapists, methods=["GET"]),
    Route("/v1/therapists/{therapist_id}/availability", put_availability, methods=["PUT"]),
    Route("/v1/therapists/{therapist_id}/availability", get_availability, methods=["GET"]),
    Route("/v1/therapists/{therapist_id}/slots", get_slots, methods=["GET"]),
    Route("/v1/bookings", post_booking, methods=["POST"]),
    Route("/v1/bookings", list_bookings, methods=["GET"]),
    Route("/v1/bookings/{booking_id}/cancel", cancel_booking, methods=["POST"]),
    Route("/v1/bookings/{booking_id}/outcome", post_outcome, methods=["POST"]),
    Route("/v1/bookings/{booking_id}/session", open_session, methods=["POST"]),
]
