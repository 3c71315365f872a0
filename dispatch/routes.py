"""HTTP calls of PROTOCOL.md §3: requests, therapist profiles, pool stats, health."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.clock import rfc3339
from core.errors import DispatchError, Forbidden, NotFound, RateLimited, Unauthorized
from core.identity import Role, User, bearer, refresh, verify
from core.validation import parse_idempotency_key, parse_json_body, validate_id
from dispatch import intake, validation
from dispatch.context import AppContext
from dispatch.metrics import CONTENT_TYPE_LATEST


def ctx_of(request: HttpRequest) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def signed_in(request: HttpRequest, *roles: Role) -> User:
    """The signed-in caller; 401 without a valid token, 403 for another role."""
    ctx = ctx_of(request)
    token = bearer(request.headers.get("authorization"))
    if token is None:
        raise Unauthorized("missing bearer token")
    user = verify(ctx.settings.secret, token)
    if not ctx.http_limiter.allow(user.id, time.monotonic()):
        raise RateLimited()
    if roles and user.role not in roles:
        raise Forbidden(f"a {user.role} may not do this")
    return user


async def _body(request: HttpRequest) -> Any:
    return parse_json_body(await request.body())


def _request_body(ctx: AppContext, req: Any, position: int | None) -> dict[str, Any]:
    return {"request": req.public(position)}


async def create_request(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.CLIENT)
    key = parse_idempotency_key(request.headers.get("idempotency-key"))
    draft = validation.parse_draft(await _body(request))
    # A minor's guardian consent recorded before the request exists, the
    # welcome email queued after (each once, §10).
    req, created = await intake.make_request(ctx, user, draft, key)
    # Its place when it was created (the creating step read it); a replay's now.
    position = (
        created.position
        if created is not None and created.position is not None
        else await ctx.store.position(req.id)
    )
    headers = {} if created is not None else {"Idempotent-Replayed": "true"}
    return JSONResponse(_request_body(ctx, req, position), status_code=201, headers=headers)


async def get_request(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.CLIENT, Role.OPERATOR)
    rid = validate_id(request.path_params["request_id"], "request_id")
    req, position = await ctx.dispatcher.get_request(user, rid)
    return JSONResponse(_request_body(ctx, req, position))


async def cancel_request(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.CLIENT)
    rid = validate_id(request.path_params["request_id"], "request_id")
    change = await ctx.dispatcher.cancel(user, rid)
    return JSONResponse(_request_body(ctx, change.after, None))


async def put_therapist(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    signed_in(request, Role.OPERATOR)
    tid = validate_id(request.path_params["therapist_id"], "id")
    profile = validation.parse_profile(tid, await _body(request))
    existed = await ctx.store.get_profile(tid) is not None
    await ctx.dispatcher.put_profile(profile)
    contact = await ctx.contacts.get(tid)
    body = {**profile.public(), **contact.public()}  # the profile as anyone reads it
    return JSONResponse(body, status_code=200 if existed else 201)


def _sees_private(user: User, therapist_id: str) -> bool:
    return user.role is Role.OPERATOR or (user.role is Role.THERAPIST and user.id == therapist_id)


async def get_therapist(request: HttpRequest) -> Response:
    """The public profile; its contact details too for itself and operators."""
    ctx = ctx_of(request)
    user = signed_in(request)
    tid = validate_id(request.path_params["therapist_id"], "id")
    profile = await ctx.store.get_profile(tid)
    if profile is None:
        raise NotFound("no such therapist")
    contact = await ctx.contacts.get(tid)
    private = _sees_private(user, tid)
    return JSONResponse(
        {**profile.public(), **(contact.private() if private else contact.public())}
    )


async def patch_therapist(request: HttpRequest) -> Response:
    """PROTOCOL.md §7: a therapist edits its own profile (an operator any):
    name and bio in the pool's profile, contact details in notify's store;
    credentials are an operator's alone (403 for a therapist)."""
    ctx = ctx_of(request)
    user = signed_in(request, Role.THERAPIST, Role.OPERATOR)
    tid = validate_id(request.path_params["therapist_id"], "id")
    if not _sees_private(user, tid):
        raise Forbidden("a therapist may edit only its own profile")
    profile_changes, contact_changes = validation.parse_profile_patch(
        await _body(request), operator=user.role is Role.OPERATOR
    )
    profile = await ctx.store.get_profile(tid)
    if profile is None:
        raise NotFound("no such therapist")
    if profile_changes:
        profile = dataclasses.replace(profile, **profile_changes)
        await ctx.dispatcher.put_profile(profile)
    contact = await ctx.contacts.get(tid)
    if contact_changes:
        contact = await ctx.contacts.update(tid, contact_changes, ctx.clock())
    return JSONResponse({**profile.public(), **contact.private()})


async def refresh_token(request: HttpRequest) -> Response:
    """A fresh token for the caller (PROTOCOL.md §11): what a page sends in a
    new ``auth`` frame when its socket says ``auth.expiring``."""
    ctx = ctx_of(request)
    signed_in(request)
    token = refresh(
        ctx.settings.secret,
        bearer(request.headers.get("authorization")) or "",
        ctx.settings.token_max_age_s,
    )
    fresh = verify(ctx.settings.secret, token)
    assert fresh.expires_at is not None  # verify() always sets it
    return JSONResponse({"token": token, "expires_at": rfc3339(fresh.expires_at)})


async def pool_stats(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    signed_in(request, Role.OPERATOR)
    return JSONResponse(await ctx.stats_body(ctx.clock()))


async def metrics(request: HttpRequest) -> Response:
    return Response(ctx_of(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def healthz(request: HttpRequest) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    try:
        await ctx.store.ping()
        await ctx.db.ping()
    except DispatchError as exc:
        return JSONResponse(
            {"status": "unavailable", "error": {"code": exc.code, "message": exc.message}},
            status_code=503,
        )
    return JSONResponse({"status": "ready"})


ROUTES = [
    Route("/v1/requests", create_request, methods=["POST"]),
    Route("/v1/requests/{request_id}", get_request, methods=["GET"]),
    Route("/v1/requests/{request_id}", cancel_request, methods=["DELETE"]),
    Route("/v1/therapists/{therapist_id}", put_therapist, methods=["PUT"]),
    Route("/v1/therapists/{therapist_id}", get_therapist, methods=["GET"]),
    Route("/v1/therapists/{therapist_id}", patch_therapist, methods=["PATCH"]),
    Route("/v1/auth/refresh", refresh_token, methods=["POST"]),
    Route("/v1/pool/stats", pool_stats, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]
