"""Consoles driven from several client processes (``multiprocessing``, spawn).

One Python process reading 2000 sockets is itself near saturation: its own
scheduling delay lands in every latency it measures, and the fan-out and the
floor would be judged by their load generator. A :class:`Fleet` splits the
consoles of a run round-robin over ``procs`` worker processes. Each worker
connects its share (the service's consoles authenticate and become
available, :func:`loadtest._console.run_console`; the floor's only connect),
records the first arrival of every frame on the monotonic clock (one clock
for every process of the machine, ``CLOCK_MONOTONIC``), and sends the parent
its counts of first arrivals every :data:`COUNTS_EVERY_S`, so the parent's
:class:`~loadtest._console.Tally` ends a phase as soon as it is complete. On
:meth:`Fleet.close` each worker closes its sockets and sends back what every
console saw; the parent copies it into its own :class:`Console` objects (or
floor records), so the reports read them as when one process drove them all.

A worker exits when told to, when the parent dies (its parent id changes) or
at its own deadline; the parent kills any still alive after :meth:`Fleet.stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from loadtest._console import NEW, Console, Tally, run_console
from loadtest._workers import Workers, next_command

#: How often a worker tells the parent its counts (when they changed).
COUNTS_EVERY_S: Final = 0.02
#: How long the workers have to start (spawn imports everything again).
START_TIMEOUT_S: Final = 120.0
#: How long closing every socket may take in a worker.
CLOSE_TIMEOUT_S: Final = 20.0

#: The Console fields a worker sends back (everything it recorded).
RECORDED: Final = tuple(
    f.name for f in fields(Console) if f.name not in ("index", "user_id", "server", "tally", "ws")
)
#: ... and those it sends once its consoles are connected (the parent needs them then).
CONNECTED: Final = ("open_s", "ready_s", "failure", "closed_code", "snapshot_size")


@dataclass(frozen=True)
class Spec:
    """One console: its index in the run, and where and as whom it connects."""

    index: int
    url: str
    user_id: str = ""
    server: int = 0
    token: str = ""


@dataclass(frozen=True)
class Job:
    worker: int
    #: ``service``: a therapist console of dispatch; ``floor``: a bare socket of the floor.
    kind: str
    specs: tuple[Spec, ...]
    codec: str = "json"
    compression: bool = False
    timeout_s: float = 60.0
    deadline_s: float = 3600.0
    #: Connect this many consoles at a time, each batch once the one before is
    #: ready (a console's ``ready_s`` then counts from its batch's start); 0: all at once.
    batch: int = 0


def split(n: int, procs: int) -> list[list[int]]:
    """Indexes 0..n-1 round-robin over ``procs`` (at most ``n``) non-empty shares."""
    procs = max(1, min(procs, n))
    return [list(range(i, n, procs)) for i in range(procs)]


def service_jobs(
    consoles: Sequence[Console],
    shares: Sequence[Sequence[int]],
    url: Callable[[int], str],
    token: Callable[[str], str],
    **settings: Any,
) -> list[Job]:
    """One ``service`` job per share of ``consoles`` (by index): each console
    connects to ``url(server)`` with ``token(user id)``; ``settings`` are the
    other :class:`Job` fields, the same for every worker."""
    return [
        Job(
            worker=w,
            kind="service",
            specs=tuple(
                Spec(
                    index=c.index,
                    url=url(c.server),
                    user_id=c.user_id,
                    server=c.server,
                    token=token(c.user_id),
                )
                for c in (consoles[i] for i in share)
            ),
            **settings,
        )
        for w, share in enumerate(shares)
    ]


# -- the worker process --------------------------------------------------------------------
class _FloorConsole:
    """A floor console: connect, read the welcome, record each marker's first arrival."""

    def __init__(self, tally: Counter[str]) -> None:
        self.tally = tally
        self.at: dict[str, float] = {}
        self.dups = 0
        self.connected = False
        self.ws: ClientConnection | None = None

    async def run(self, url: str, ready: asyncio.Event) -> None:
        try:
            self.ws = await connect(url, compression=None, ping_interval=None, max_queue=4096)
            await self.ws.recv()  # welcome: the server has it in its set
            self.connected = True
        except Exception:
            return
        finally:
            ready.set()
        with contextlib.suppress(ConnectionClosed):
            async for data in self.ws:
                now = time.monotonic()
                marker = json.loads(data)["request"]["notes"]
                if marker in self.at:
                    self.dups += 1
                else:
                    self.at[marker] = now
                    self.tally[NEW] += 1

    def record(self) -> dict[str, Any]:
        return {"at": self.at, "dups": self.dups, "connected": self.connected}


class _Worker:
    def __init__(self, job: Job, commands: Any, events: Any) -> None:
        self.job = job
        self.commands = commands
        self.events = events
        self.parent = os.getppid()
        self.counts: Counter[str] = Counter()
        self.tally = Tally()
        self.consoles: list[Console] = []
        self.floor: list[_FloorConsole] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def report_counts(self) -> None:
        sent: dict[str, int] = {}
        while True:
            await asyncio.sleep(COUNTS_EVERY_S)
            now = {**self.tally.counts, **self.counts}
            if now != sent:
                self.events.put(("counts", self.job.worker, now))
                sent = now

    async def connect(self, burst_start: float) -> None:
        """Connect every console (in batches when the job says so) and wait
        until each is ready or has failed."""
        specs, size = self.job.specs, self.job.batch or len(self.job.specs)
        for i in range(0, len(specs), max(1, size)):
            start = burst_start if i == 0 else time.monotonic()
            ready = self.start_consoles(specs[i : i + size], start)
            await asyncio.gather(*(ev.wait() for ev in ready))

    def start_consoles(self, specs: Sequence[Spec], burst_start: float) -> list[asyncio.Event]:
        job = self.job
        events = [asyncio.Event() for _ in specs]
        for spec, ready in zip(specs, events, strict=True):
            if job.kind == "floor":
                f = _FloorConsole(self.counts)
                self.floor.append(f)
                coro = f.run(spec.url, ready)
            else:
                c = Console(
                    index=spec.index, user_id=spec.user_id, server=spec.server, tally=self.tally
                )
                self.consoles.append(c)
                coro = run_console(
                    c,
                    spec.url,
                    spec.token,
                    codec=job.codec,
                    compression=job.compression,
                    timeout_s=job.timeout_s,
                    burst_start=burst_start,
                    ready=ready,
                )
            self.tasks.append(asyncio.create_task(coro))
        return events

    async def close(self) -> list[dict[str, Any]]:
        for c in self.consoles:
            c.stopping = True
        sockets = [c.ws for c in self.consoles] + [f.ws for f in self.floor]

        async def close(ws: ClientConnection | None) -> None:
            if ws is not None:
                with contextlib.suppress(Exception):
                    await ws.close()

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await asyncio.gather(*(close(ws) for ws in sockets))
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        return self.records(RECORDED)

    def records(self, names: Sequence[str]) -> list[dict[str, Any]]:
        if self.job.kind == "floor":
            return [f.record() for f in self.floor]
        return [{k: getattr(c, k) for k in names} for c in self.consoles]

    async def run(self) -> None:
        job = self.job
        self.events.put(("up", job.worker, None))
        reporter = asyncio.create_task(self.report_counts())
        try:
            async with asyncio.timeout(job.deadline_s):
                cmd = await next_command(self.commands, self.parent)
                if cmd[0] == "connect":
                    await self.connect(float(cmd[1]))
                    self.events.put(("ready", job.worker, self.records(CONNECTED)))
                    cmd = await next_command(self.commands, self.parent)
        except TimeoutError:
            pass
        records = await self.close()
        reporter.cancel()
        self.events.put(("counts", job.worker, {**self.tally.counts, **self.counts}))
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_s = usage.ru_utime + usage.ru_stime
        self.events.put(("done", job.worker, {"records": records, "cpu_s": cpu_s}))


def worker(job: Job, commands: Any, events: Any) -> None:
    """A worker process's entry point (spawned by :class:`Fleet`)."""
    from loadtest._stack import loop_factory, raise_nofile

    raise_nofile(len(job.specs) + 1024)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_Worker(job, commands, events).run())


# -- the parent's side ---------------------------------------------------------------------
class Fleet:
    """The worker processes of one run and the parent's view of them.

    ``jobs`` come from the caller (one per worker, see :func:`split`); counts
    of first arrivals merge into ``tally``. Use ``start``, ``connect``, then
    ``close`` (the consoles' records), and always ``stop``. One reader task
    takes the workers' messages off their queue (in a thread, for at most
    :data:`loadtest._workers.POLL_S` at a time) and handles them on the event loop.
    """

    def __init__(self, jobs: Sequence[Job], tally: Tally) -> None:
        self.jobs = list(jobs)
        self.tally = tally
        self._workers = Workers(worker, self.jobs)
        self._counts: dict[int, dict[str, int]] = {}
        self._seen: dict[str, set[int]] = {"up": set(), "ready": set(), "done": set()}
        self._records: dict[int, list[dict[str, Any]]] = {}
        #: Each worker's own CPU seconds over its life (sent as it finishes).
        self.cpu_s: dict[int, float] = {}
        self._changed = asyncio.Event()
        self._reading = False
        self._reader: asyncio.Task[None] | None = None

    def _handle(self, kind: str, w: int, payload: Any) -> None:
        if kind == "counts":
            self._counts[w] = payload
            total: Counter[str] = Counter()
            for counts in self._counts.values():
                total.update(counts)
            self.tally.set_counts(total)
            return
        self._seen[kind].add(w)
        if kind == "done":
            self._records[w] = payload["records"]
            self.cpu_s[w] = payload["cpu_s"]
        elif payload is not None:
            self._records[w] = payload
        self._changed.set()

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while self._reading:
            event = await loop.run_in_executor(None, self._workers.get)
            if event is not None:
                self._handle(*event)
            elif self._died():
                self._changed.set()  # a worker died: let the waiter see it

    def _died(self) -> list[int]:
        """Workers that failed: exited with an error before saying they were
        done. (One that exited cleanly has said so; its message may still be
        on the queue, behind the reader.)"""
        procs = self._workers.procs
        return [
            w
            for w in self._workers.exited()
            if procs[w].exitcode != 0 and w not in self._seen["done"]
        ]

    async def _until(self, kind: str, timeout_s: float) -> None:
        """Wait until every worker has said ``kind``."""
        deadline = time.monotonic() + timeout_s
        while len(self._seen[kind]) < len(self.jobs):
            dead = self._died()
            if dead:
                raise RuntimeError(f"a console worker died: {dead}")
            left = deadline - time.monotonic()
            if left <= 0:
                missing = len(self.jobs) - len(self._seen[kind])
                raise TimeoutError(f"{missing} console worker(s) never said {kind}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 1.0)):
                    await self._changed.wait()

    async def start(self) -> None:
        self._workers.start()
        self._reading = True
        self._reader = asyncio.create_task(self._read())
        await self._until("up", START_TIMEOUT_S)

    async def connect(
        self, burst_start: float, timeout_s: float
    ) -> dict[int, list[dict[str, Any]]]:
        """Every worker connects its consoles now; returns when each has all its
        consoles ready (or failed), with how each went, by worker (for the
        service's consoles: :data:`CONNECTED`; for the floor's, its record)."""
        self._workers.send_all(("connect", burst_start))
        await self._until("ready", timeout_s + 30.0)
        return dict(self._records)

    async def close(self) -> dict[int, list[dict[str, Any]]]:
        """Every worker closes its sockets; the consoles' records by worker."""
        self._workers.send_all(("close",))
        try:
            await self._until("done", CLOSE_TIMEOUT_S + 30.0)
        finally:
            await self._stop_reading()
        return self._records

    async def _stop_reading(self) -> None:
        self._reading = False
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    def stop(self) -> None:
        """Join every worker (killing any still alive after a few seconds)."""
        self._workers.stop()


def copy_into(
    consoles: Sequence[Console],
    records: dict[int, list[dict[str, Any]]],
    shares: Sequence[Sequence[int]],
) -> None:
    """Copy each worker's console records into the parent's consoles (by index)."""
    for w, share in enumerate(shares):
        for i, rec in zip(share, records.get(w, []), strict=False):
            for k, v in rec.items():
                setattr(consoles[i], k, v)
