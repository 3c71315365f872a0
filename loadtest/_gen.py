"""One load-generator process of the lifecycle scenario (:mod:`loadtest.lifecycle`).

The parent starts several of these (``multiprocessing``, spawn), so the
generator is not the bottleneck: each owns a share of the therapist consoles
and of the clients, and its clients run closed loops of full lifecycles

    POST /v1/requests -> request.new at a console -> claim -> claim.ok
    -> request.offer at the client -> offer.accept -> session.ready -> session.end

each served by an idle console of the same process, named in the request's
notes (only that console claims, so no lifecycle races another). It reports
HDR histograms (encoded) of every step, and counts of what completed and what
failed, on the result queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Final

import httpx
import jwt

from loadtest._hist import Hist
from loadtest._peer import Peer, close_all, notes_is, open_all

#: A step unanswered this long counts as lost (a slow answer is in the histograms).
STEP_TIMEOUT_S: Final = 30.0
#: How many failed lifecycles a generator names by id (the rest are counted only).
FAILED_IDS_MAX: Final = 20
STEPS: Final = ("post", "new", "claim", "offer", "accept", "end", "post_to_ready", "lifecycle")
TERMS: Final = "2024-05"
BODY: Final[dict[str, Any]] = {"region": "GB-ENG", "language": "en", "topics": ["anxiety"]}


@dataclass(frozen=True)
class Job:
    index: int
    run_id: str
    secret: str
    ports: tuple[int, ...]
    therapists: tuple[str, ...]
    clients: tuple[str, ...]
    duration_s: float


def _token(secret: str, role: str, sub: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "role": role, "iat": now, "exp": now + 7200}, secret, "HS256")


class _Gen:
    def __init__(self, job: Job) -> None:
        self.job = job
        self.h = {s: Hist() for s in STEPS}
        self.done = 0
        self.failed: Counter[str] = Counter()
        #: The first few failed lifecycles' request and session ids, to look up
        #: in the servers' logs.
        self.failed_ids: list[dict[str, str | None]] = []
        self.idle: asyncio.Queue[Peer] = asyncio.Queue()
        self.elapsed = 0.0

    def url(self, i: int) -> str:
        return f"ws://127.0.0.1:{self.job.ports[i % len(self.job.ports)]}/v1/ws"

    def base(self, i: int) -> str:
        return f"http://127.0.0.1:{self.job.ports[i % len(self.job.ports)]}"

    async def lifecycle(self, http: httpx.AsyncClient, c: Peer, ci: int, n: int) -> None:
        job, h = self.job, self.h
        t = await self.idle.get()
        marker = f"lt-lc-{job.run_id}-{c.user_id}-{n}"
        new_w = t.waiter("request.new", notes_is(marker))
        offer_w = c.waiter("request.offer")
        step, rid, sid = "post", None, None
        headers = {
            "Authorization": f"Bearer {_token(job.secret, 'client', c.user_id)}",
            "Idempotency-Key": marker,
        }
        try:
            t0 = time.monotonic()
            resp = await http.post(
                f"{self.base(ci)}/v1/requests", json={**BODY, "notes": marker}, headers=headers
            )
            if resp.status_code != 201:
                raise RuntimeError(f"POST answered {resp.status_code}")
            h["post"].record_s(time.monotonic() - t0)
            rid = resp.json()["request"]["id"]
            step = "new"
            _, t_new = await asyncio.wait_for(new_w, STEP_TIMEOUT_S)
            h["new"].record_s(t_new - t0)
            step = "claim"
            t_claim = time.monotonic()
            ok, lat = await t.call({"type": "claim", "request_id": rid}, STEP_TIMEOUT_S)
            if ok.get("type") != "claim.ok":
                raise RuntimeError(f"claim answered {ok.get('type')} {ok.get('code')}")
            h["claim"].record_s(lat)
            step = "offer"
            _, t_offer = await asyncio.wait_for(offer_w, STEP_TIMEOUT_S)
            h["offer"].record_s(t_offer - t_claim)
            step = "accept"
            ready_c = c.waiter("session.ready")
            ended_t = t.waiter("session.ended")
            t_acc = time.monotonic()
            await c.send({"type": "offer.accept", "request_id": rid, "terms_version": TERMS})
            ready, t_ready = await asyncio.wait_for(ready_c, STEP_TIMEOUT_S)
            h["accept"].record_s(t_ready - t_acc)
            h["post_to_ready"].record_s(t_ready - t0)
            step = "end"
            sid = str(ready["session"]["id"])
            ended, lat = await c.call({"type": "session.end", "session_id": sid}, STEP_TIMEOUT_S)
            if ended.get("type") != "session.ended":
                raise RuntimeError(f"session.end answered {ended.get('type')} {ended.get('code')}")
            h["end"].record_s(lat)
            h["lifecycle"].record_s(time.monotonic() - t0)
            step = "session.ended at the console"
            await asyncio.wait_for(ended_t, STEP_TIMEOUT_S)
            self.done += 1
        except Exception as exc:
            self.failed[f"{step}: {type(exc).__name__}: {exc}"[:120]] += 1
            if len(self.failed_ids) < FAILED_IDS_MAX:
                self.failed_ids.append({"step": step, "request_id": rid, "session_id": sid})
            with contextlib.suppress(Exception):  # leave nothing waiting or open behind
                if sid is not None:
                    await c.call({"type": "session.end", "session_id": sid}, STEP_TIMEOUT_S)
                elif rid is not None:
                    await http.delete(f"{self.base(ci)}/v1/requests/{rid}", headers=headers)
            await asyncio.sleep(0.5)
        finally:
            t.drop(new_w)
            c.drop(offer_w)
            self.idle.put_nowait(t)

    async def client_loop(self, http: httpx.AsyncClient, c: Peer, ci: int, end: float) -> None:
        n = 0
        while time.monotonic() < end:
            await self.lifecycle(http, c, ci, n)
            n += 1

    async def run(self, started: Any, start: Any, results: Any) -> None:
        job = self.job
        therapists = [
            Peer(t, "therapist", self.url(i), _token(job.secret, "therapist", t))
            for i, t in enumerate(job.therapists)
        ]
        clients = [
            Peer(c, "client", self.url(i), _token(job.secret, "client", c))
            for i, c in enumerate(job.clients)
        ]
        failures = await open_all(therapists, 60.0, available=True)
        failures += await open_all(clients, 60.0, available=None)
        for t in therapists:
            self.idle.put_nowait(t)
        started.put((job.index, failures))
        loop = asyncio.get_running_loop()
        go = await loop.run_in_executor(None, start.wait, 120.0)
        try:
            if go and not failures:
                limits = httpx.Limits(max_connections=256, keepalive_expiry=2.0)
                async with httpx.AsyncClient(timeout=STEP_TIMEOUT_S, limits=limits) as http:
                    t0 = time.monotonic()
                    end = t0 + job.duration_s
                    await asyncio.gather(
                        *(self.client_loop(http, c, i, end) for i, c in enumerate(clients))
                    )
                    self.elapsed = time.monotonic() - t0
        finally:
            # The parent reads the servers' CPU now, before the closing costs any.
            started.put(("finished", job.index))
            await close_all([*therapists, *clients])
        errors: Counter[str] = Counter()
        for p in [*therapists, *clients]:
            errors.update(p.errors)
        results.put(
            {
                "index": job.index,
                "done": self.done,
                "elapsed_s": self.elapsed,
                "failed": dict(self.failed),
                "failed_ids": self.failed_ids,
                "error_frames": dict(errors),
                "hist": {k: v.encode() for k, v in self.h.items()},
            }
        )


def worker(job: Job, started: Any, start: Any, results: Any) -> None:
    """The process's entry point (spawned by :mod:`loadtest.lifecycle`)."""
    from loadtest._stack import loop_factory

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_Gen(job).run(started, start, results))
