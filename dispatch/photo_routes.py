"""HTTP calls for therapists' photos (PROTOCOL.md §7).

``PUT /v1/therapists/{id}/photo``: that therapist or an operator uploads a
JPEG or PNG as the raw body (its ``Content-Type`` says which). The body is
read against a hard cap: a ``Content-Length`` over :data:`MAX_BYTES` is refused
before a byte is read, and a body that turns out longer (chunked, or a lying
header) as soon as it passes the cap, so an upload never costs more than 2 MiB
of memory. The image is checked and re-encoded without metadata by
:func:`photos.image.process` in a worker thread (decoding takes tens of
milliseconds of CPU, too long for the event loop), at most
:data:`_DECODERS_MAX` at a time per process, which bounds the memory decoding
takes. The profile's ``photo_url`` then becomes ``/v1/therapists/{id}/photo?v=<digest>``,
a new URL per version, and the answer is the full profile, as ``PATCH``'s.

``GET /v1/therapists/{id}/photo`` is served without a token (an ``<img>``
sends none). Asked with ``?v=`` the current digest, the answer is cached for
good (``immutable``): that URL never names other bytes. Without it, or with an
old one, caches must revalidate (``no-cache``) so a stale link shows the new
photo; ``If-None-Match`` with the ``ETag`` answers 304.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from typing import Final

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.errors import BadInput, Forbidden, NotFound, TooLarge
from core.identity import Role
from core.validation import validate_id
from dispatch.routes import ctx_of, signed_in
from photos.image import MAX_BYTES, Photo, declared_type, process

PATH: Final = "/v1/therapists/{therapist_id}/photo"
#: Photo decodes one process runs at once; more wait in their worker thread.
_DECODERS_MAX: Final = 2
_decoders = threading.BoundedSemaphore(_DECODERS_MAX)

_IMMUTABLE: Final = "public, max-age=31536000, immutable"
_REVALIDATE: Final = "no-cache"


def photo_url(therapist_id: str, digest: str) -> str:
    """Where a profile points for this version of the therapist's photo."""
    return f"/v1/therapists/{therapist_id}/photo?v={digest}"


async def put_photo(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    user = signed_in(request, Role.THERAPIST, Role.OPERATOR)
    tid = validate_id(request.path_params["therapist_id"], "id")
    if user.role is Role.THERAPIST and user.id != tid:
        raise Forbidden("a therapist may change only its own photo")
    if await ctx.store.get_profile(tid) is None:
        raise NotFound("no such therapist")
    # A wrong type is refused before the body is read.
    declared = declared_type(request.headers.get("content-type"))
    data = await _read_capped(request, MAX_BYTES)
    photo = await asyncio.to_thread(_process, data, declared)
    await ctx.photos.put(tid, photo, ctx.clock())
    # Read again now, not before the upload: a PATCH made meanwhile is kept.
    profile = await ctx.store.get_profile(tid)
    if profile is None:
        raise NotFound("no such therapist")
    profile = dataclasses.replace(profile, photo_url=photo_url(tid, photo.digest))
    await ctx.dispatcher.put_profile(profile)
    contact = await ctx.contacts.get(tid)
    return JSONResponse({**profile.public(), **contact.private()})


async def get_photo(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    tid = validate_id(request.path_params["therapist_id"], "id")
    photo = await ctx.photos.get(tid)
    if photo is None:
        raise NotFound("no photo for this therapist")
    fresh_link = request.query_params.get("v") == photo.digest
    headers = {
        "ETag": f'"{photo.digest}"',
        "Cache-Control": _IMMUTABLE if fresh_link else _REVALIDATE,
        "X-Content-Type-Options": "nosniff",
        # Opened on its own, the image runs nothing and loads nothing.
        "Content-Security-Policy": "default-src 'none'; sandbox",
    }
    if _etag_matches(request.headers.get("if-none-match"), photo.digest):
        return Response(status_code=304, headers=headers)
    return Response(photo.data, media_type=photo.content_type, headers=headers)


def _process(data: bytes, content_type: str) -> Photo:
    with _decoders:
        return process(data, content_type)


async def _read_capped(request: HttpRequest, limit: int) -> bytes:
    """The body, or :class:`TooLarge` as soon as it is known to pass ``limit``
    bytes (from ``Content-Length``, else while streaming; the rest is not read)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadInput("Content-Length must be a number of bytes")
        if int(declared) > limit:
            raise TooLarge(f"a photo may be at most {limit} bytes (2 MiB)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"a photo may be at most {limit} bytes (2 MiB)")
    return bytes(body)


def _etag_matches(header: str | None, digest: str) -> bool:
    """Whether ``If-None-Match`` names this version (weak comparison, RFC 9110
    §13.1.2: ``W/"x"`` matches ``"x"``; ``*`` matches any)."""
    if header is None:
        return False
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == f'"{digest}"':
            return True
    return False


ROUTES = [
    Route(PATH, put_photo, methods=["PUT"]),
    Route(PATH, get_photo, methods=["GET"]),
]
