"""The Starlette application: wiring of settings, pool, bus, hub and routes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from care.audit import AuditTrail
from care.datakeys import DataKeys
from care.erasure import Erasures
from care.export import CareExport
from care.feedback import FeedbackStore
from care.forms import load_forms
from care.referral import Referrals
from care.safeguarding import Safeguarding
from core.bus import Bus, LocalBus, RedisBus
from core.db import Database
from core.errors import Conflict, DispatchError, NotBookable, NotFound
from core.logs import configure, get_logger
from dispatch import (
    booking_routes,
    calllog,
    contact_routes,
    demo,
    feedback_routes,
    forms_routes,
    intake,
    ops_routes,
    pages,
    payment_routes,
    photo_routes,
    privacy_routes,
    referral_routes,
    routes,
    safeguarding_routes,
    senders,
    texting,
    wallet_routes,
    ws,
)
from dispatch.context import AppContext
from dispatch.guard import Guard
from dispatch.hub import Hub
from dispatch.metrics import Metrics
from dispatch.ratelimit import KeyedLimiter
from dispatch.service import Dispatcher
from dispatch.settings import Settings
from notify.contacts import ClientContacts, Contacts
from notify.outbox import Outbox
from photos.store import Photos
from pool.effects import Effect
from pool.memory import MemoryPool
from pool.store import PoolStore
from schedule.store import Bookings
from signaling.crypto import Cipher
from signaling.ice import make_provider
from signaling.metering import Metering
from signaling.records import Records
from signaling.relay import Signaling
from wallet.billing import min_balance_minor
from wallet.ledger import Ledger

log = get_logger(component="app")


def build_context(settings: Settings, clock: Callable[[], float] = time.time) -> AppContext:
    store: PoolStore
    bus: Bus[Effect]
    if settings.redis_url:
        from pool.redis_store import RedisPool

        redis_pool = RedisPool.from_url(
            settings.redis_url,
            settings.timeouts(),
            max_connections=settings.redis_max_connections,
        )
        store, bus = redis_pool, RedisBus(redis_pool.client, Effect.from_wire)
    else:
        store, bus = MemoryPool(settings.timeouts()), LocalBus[Effect]()
    metrics = Metrics()
    db = Database.from_url(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
    )
    cipher = Cipher.from_setting(settings.data_key)
    records = Records(db, cipher)
    ice = make_provider(
        list(settings.ice_servers),
        settings.twilio_account_sid,
        settings.twilio_auth_token,
        settings.turn_ttl_s,
    )
    ledger = Ledger(
        db,
        currency=settings.currency,
        therapist_share_pct=settings.therapist_share_pct,
        timezone=settings.timezone,
    )
    bookings = Bookings(db, ledger)
    # The quick-connect guard near a booked session (PROTOCOL.md §8), off with
    # DISPATCH_QC_GUARD_MIN=0; it holds on through a session's length after its
    # start while the booking is still scheduled (a late client is awaited).
    guard = Guard(
        bookings.next_start if settings.qc_guard_min > 0 else None,
        guard_min=settings.qc_guard_min,
        late_min=settings.session_minutes,
    )
    hub = Hub(
        store,
        metrics,
        records.clients_known,
        guarded=guard.ids,
        clock=clock,
        known_to=records.therapists_known_to,
    )
    metering = Metering(
        ledger,
        store,
        bus,
        price_per_minute_minor=settings.price_per_minute_minor,
        clock=clock,
        on_booked_end=_booked_end(bookings, settings, clock),
    )
    dispatcher = Dispatcher(
        store,
        bus,
        metrics,
        ice,
        records,
        ledger,
        min_balance_minor=min_balance_minor(
            settings.price_per_minute_minor, settings.min_balance_minutes
        ),
        clock=clock,
        guarded=guard.ids,
    )
    # Referral (PROTOCOL.md §10): a referred client's requests are its
    # therapist's alone for the head start (0: none).
    referrals = Referrals(db)
    dispatcher.referrer_of = referrals.therapist_of
    dispatcher.head_start_s = settings.referral_head_start_s
    # Offer to a few at a time (issue #16; 0: to every eligible therapist).
    dispatcher.offer_fanout = settings.offer_fanout
    dispatcher.offer_widen_s = settings.offer_widen_s
    signaling = Signaling(
        store,
        bus,
        records,
        metering,
        held_frames_max=settings.held_frames_max,
        clock=clock,
    )
    outbox, contacts = Outbox(db, settings.outbox_lease_s), Contacts(db)
    client_contacts = ClientContacts(db)
    data_keys, audit = DataKeys(db, cipher), AuditTrail(db)
    text_senders = senders.texts(
        settings, outbox, contacts, store, records.clients_known, clock, guard.ids
    )
    return AppContext(
        settings=settings,
        store=store,
        bus=bus,
        metrics=metrics,
        hub=hub,
        dispatcher=dispatcher,
        signaling=signaling,
        db=db,
        ice=ice,
        ledger=ledger,
        outbox=outbox,
        contacts=contacts,
        client_contacts=client_contacts,
        texts=text_senders[0] if text_senders else None,
        sms=text_senders[1] if text_senders else None,
        mail=senders.emails(settings, outbox, contacts, client_contacts),
        safeguarding=Safeguarding(db, cipher),
        feedback=FeedbackStore(db, cipher),
        data_keys=data_keys,
        audit=audit,
        referrals=referrals,
        erasures=Erasures(db, data_keys, audit),
        care_export=CareExport(db, cipher, data_keys, audit),
        photos=Photos(db),
        metering=metering,
        payments=payment_routes.payments_of(settings, ledger),
        bookings=bookings,
        guard=guard,
        clock=clock,
        http_limiter=KeyedLimiter(settings.http_rate_per_s, settings.http_rate_burst),
    )


def _booked_end(
    bookings: Bookings, settings: Settings, clock: Callable[[], float]
) -> Callable[[str, bool], Awaitable[None]]:
    """The hook a booked call's end calls, once across servers
    (:meth:`signaling.metering.Metering.settle_booked`): a call both sides
    joined marks its booking ``occurred`` (PROTOCOL.md §8). Idempotent: a
    booking marked or cancelled meanwhile, or a call that ended before the
    booking's start, is left as it is; a database down raises (retried)."""

    async def booked_end(booking_id: str, both_joined: bool) -> None:
        if not both_joined:
            return
        try:
            await bookings.mark_outcome(
                booking_id, "occurred", clock(), settings.therapist_share_pct
            )
        except (Conflict, NotBookable, NotFound) as exc:
            log.info("booking.end_not_marked", booking_id=booking_id, code=exc.code)

    return booked_end


async def _dispatch_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DispatchError)
    request.app.state.ctx.metrics.errors.labels(code=exc.code).inc()
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(exc.as_body(), status_code=exc.status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    body = {"error": {"code": code, "message": str(exc.detail)}}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("http.unhandled", path=request.url.path, error=type(exc).__name__)
    body = {"error": {"code": "internal", "message": "internal error"}}
    return JSONResponse(body, status_code=500)


def websocket_first(app: Starlette) -> ASGIApp:
    """``app``, with ``/v1/ws`` served straight from the server rather than
    through Starlette's middleware and router: those hold a coroutine frame
    and a copy of the scope each for as long as a socket is open (about
    5 KiB per console, measured with tracemalloc), and do nothing for it (the
    endpoint answers its own errors; the HTTP middleware skips websockets).
    What ``dispatch serve`` runs; the route stays in ``app`` for in-process use."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == ws.PATH:
            scope["app"] = app
            await ws.endpoint(WebSocket(scope, receive, send))
        else:
            await app(scope, receive, send)

    return asgi


def create_app(settings: Settings, clock: Callable[[], float] = time.time) -> Starlette:
    configure(settings.log_level, settings.log_json)
    # The care forms are data files: a broken one stops the start, naming the
    # file, rather than the first client who opens the forms.
    load_forms()
    ctx = build_context(settings, clock)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        senders.announce(settings)
        await ctx.db.migrate()
        if settings.demo:
            await demo.seed(ctx.store, ctx.ledger, ctx.clock(), ctx.bookings, intake.forms_of(ctx))
        await ctx.start()
        try:
            yield
        finally:
            await ctx.stop()

    app = Starlette(
        routes=[
            *routes.ROUTES,
            *calllog.ROUTES,
            *wallet_routes.ROUTES,
            *payment_routes.ROUTES,
            *booking_routes.ROUTES,
            *contact_routes.ROUTES,
            *feedback_routes.ROUTES,
            *forms_routes.ROUTES,
            *privacy_routes.ROUTES,
            *referral_routes.ROUTES,
            *safeguarding_routes.ROUTES,
            *ops_routes.ROUTES,
            *texting.ROUTES,
            *photo_routes.ROUTES,
            *pages.ROUTES,
            WebSocketRoute(ws.PATH, ws.endpoint),
        ],
        exception_handlers={
            DispatchError: _dispatch_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    return app
