"""HTTP calls of the operator's page beyond the numbers (issue #13; extensions):

* ``GET /v1/pool/live`` (operator): who is where right now
  (:class:`pool.live.PoolLive`): the waiting requests, the claims, the open
  sessions and the therapists online, each list at most
  :data:`pool.live.LIVE_LIMIT` long with its total beside it.
* ``GET /v1/pool/history`` (operator): ``{"at", "interval_s", "window_s",
  "samples"}``: one sample of the pool's numbers per ``interval_s`` over the
  last ``window_s``, oldest first, so the page's charts survive a reload.
"""

from __future__ import annotations

from typing import Final

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.clock import rfc3339
from core.identity import Role
from dispatch.routes import ctx_of, signed_in
from pool.live import HISTORY_WINDOW_S, SAMPLE_INTERVAL_S

__all__ = ["ROUTES"]


async def pool_live(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    signed_in(request, Role.OPERATOR)
    live = await ctx.store.live(ctx.clock())
    return JSONResponse(live.public())


async def pool_history(request: HttpRequest) -> Response:
    ctx = ctx_of(request)
    signed_in(request, Role.OPERATOR)
    now = ctx.clock()
    samples = await ctx.store.history(now)
    return JSONResponse(
        {
            "at": rfc3339(now),
            "interval_s": SAMPLE_INTERVAL_S,
            "window_s": HISTORY_WINDOW_S,
            "samples": samples,
        }
    )


ROUTES: Final = [
    Route("/v1/pool/live", pool_live, methods=["GET"]),
    Route("/v1/pool/history", pool_history, methods=["GET"]),
]
