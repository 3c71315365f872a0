"""The live pages and, in ``--dev`` only, the demo sign-in.

``/console``, ``/talk`` and ``/ops``; for scheduled care (PROTOCOL.md §8) ``/find``
(the directory) and ``/book/{therapist_id}`` (one therapist's booking page, shareable);
for care records (§10) ``/forms`` (a client's forms, before its first booked session)
and ``/r/{code}`` (a therapist's referral link: keeps the code, goes on to ``/talk``).

The pages are static files (plain JavaScript modules, no build step) that
speak only the public protocol: HTTP calls with a bearer token and the
``/v1/ws`` websocket. A page gets its token from the embedding platform
(``?token=`` in the URL fragment or ``sessionStorage``); with ``--dev`` the
sign-in page at ``/`` lets a newcomer pick a demo user and mints the token
through ``POST /dev/token``. Without ``--dev`` neither exists (404).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request as HttpRequest
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from core.errors import InvalidField, NotFound
from core.identity import SUB_RE, Role, mint
from core.validation import parse_json_body
from dispatch import demo
from dispatch.routes import ctx_of

STATIC = Path(__file__).parent / "static"

#: A page may be framed by no one and load scripts from this origin alone.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob: https:; media-src 'self' blob:; "
        "connect-src 'self' ws: wss:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_DEV_TOKEN_TTL_S = 12 * 3600


def html_page(name: str) -> Response:
    """The page ``dispatch/static/<name>`` with the pages' headers (the CSP above)."""
    return FileResponse(STATIC / name, headers=_HEADERS, media_type="text/html")


def _page(name: str) -> Route:
    async def page(request: HttpRequest) -> Response:
        return html_page(name)

    return Route(f"/{name.removesuffix('.html')}", page, methods=["GET"], name=name)


async def book(request: HttpRequest) -> Response:
    """``/book/{therapist_id}``: one therapist's booking page (the id is read by book.js)."""
    return html_page("book.html")


async def referral(request: HttpRequest) -> Response:
    """``/r/{code}``: a therapist's share link (PROTOCOL.md §10). The page
    keeps the code in the browser and goes on to ``/talk``, which links the
    client to that therapist once it is signed in (referral.js)."""
    return html_page("referral.html")


async def signin(request: HttpRequest) -> Response:
    if not ctx_of(request).settings.dev:
        raise NotFound("not found")
    return FileResponse(STATIC / "signin.html", headers=_HEADERS, media_type="text/html")


async def dev_users(request: HttpRequest) -> Response:
    """The demo users a newcomer can sign in as (``--dev`` only)."""
    if not ctx_of(request).settings.dev:
        raise NotFound("not found")
    users: list[dict[str, Any]] = [
        {"id": p.id, "role": "therapist", "name": p.name} for p in demo.DEMO_THERAPISTS
    ]
    users += [
        {"id": c, "role": "client", "name": f"Demo client {i}"}
        for i, c in enumerate(demo.DEMO_CLIENTS, start=1)
    ]
    users.append({"id": demo.DEMO_OPERATOR, "role": "operator", "name": "Demo operator"})
    return JSONResponse({"users": users})


async def dev_token(request: HttpRequest) -> Response:
    """Mint a token for any user id and role (``--dev`` only)."""
    ctx = ctx_of(request)
    if not ctx.settings.dev:
        raise NotFound("not found")
    body = parse_json_body(await request.body())
    if not isinstance(body, dict):
        raise InvalidField("the body must be a JSON object", field="body")
    role, sub, name = body.get("role"), body.get("sub"), body.get("name")
    if not isinstance(role, str) or role not in {r.value for r in Role}:
        raise InvalidField("role must be client, therapist or operator", field="role")
    if not isinstance(sub, str) or not SUB_RE.fullmatch(sub):
        raise InvalidField("sub must be 1..64 characters [A-Za-z0-9_.-]", field="sub")
    if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= 100):
        raise InvalidField("name must be a string of 1..100 characters", field="name")
    token = mint(ctx.settings.secret, role, sub, name=name, ttl_s=_DEV_TOKEN_TTL_S)
    return JSONResponse({"token": token, "user": {"id": sub, "role": role, "name": name}})


ROUTES = [
    Route("/", signin, methods=["GET"]),
    Route("/dev/users", dev_users, methods=["GET"]),
    Route("/dev/token", dev_token, methods=["POST"]),
    _page("console.html"),
    _page("talk.html"),
    _page("ops.html"),
    _page("find.html"),
    _page("forms.html"),
    Route("/book/{therapist_id:str}", book, methods=["GET"], name="book.html"),
    Route("/r/{code:str}", referral, methods=["GET"], name="referral.html"),
    Mount("/static", StaticFiles(directory=STATIC), name="static"),
]
