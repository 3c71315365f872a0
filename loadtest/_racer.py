"""The claim race's therapist consoles, driven from several client processes.

One process that sends 100 claims "at once" sends them one after another from
one event loop, and reads the 100 answers the same way: its own scheduling
lands in every latency it measures. :mod:`loadtest.race` therefore splits its
consoles round-robin over worker processes (``multiprocessing``, spawn); the
parent keeps the HTTP side and steps every worker through each round with
commands on a queue of the worker's own, and they answer on one result queue
as ``(kind, worker, round, payload)``:

    ``("arm", r, marker)``        register ``request.new`` waiters      -> ``armed``
    ``("new", r, rid)``           wait for them (``TIMEOUT_S``)         -> ``new``: missing
    ``("ping", r, at)``           at ``at``, ``ping`` on every console  -> ``ping``
    ``("claim", r, at, rid)``     at ``at``, ``claim`` on every console -> ``claim``
    ``("expect-cancel", r, rid)`` register the winners' waiters         -> ``cancel-armed``
    ``("cancelled", r)``          wait for them (``TIMEOUT_S``)         -> ``cancelled``: missing
    ``("close",)``                close every socket, then exit         -> ``done``: CPU seconds

Waiters are registered before the parent's ``POST``/``DELETE`` that causes
their frame (it may arrive before the HTTP answer). ``at`` is an instant on
the monotonic clock, which is ``CLOCK_MONOTONIC`` and so one clock for every
process of the machine: every worker starts its burst at the same moment.

A worker exits when told to, when the parent dies (its parent id changes) or
at its own deadline; :meth:`Racers.stop` kills any still alive, and a worker
that dies or stops answering is an error of the step that waited for it,
never a hang.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from loadtest._gen import _token
from loadtest._peer import Frame, Peer, close_all, notes_is, open_all
from loadtest._procs import HOST
from loadtest._workers import Command, Workers, next_command

#: A frame or an answer not there this long after it was due counts as lost.
TIMEOUT_S: Final = 15.0
#: How long the parent waits for every worker's answer to one command: the
#: worker's own wait, plus slack for a loaded machine.
STEP_TIMEOUT_S: Final = TIMEOUT_S + 30.0
#: How long the workers have to start (spawn imports everything again) and connect.
START_TIMEOUT_S: Final = 120.0
#: The last stretch before a burst's instant that a worker spins instead of sleeping.
SPIN_S: Final = 0.003


@dataclass(frozen=True)
class Job:
    worker: int
    secret: str
    #: Every server's port; a console's server is its run-wide index modulo their number.
    ports: tuple[int, ...]
    #: ``(run-wide index, therapist id)`` of each console of this worker.
    therapists: tuple[tuple[int, str], ...]
    open_timeout_s: float
    deadline_s: float


async def burst(peers: Sequence[Peer], frame: Frame) -> list[tuple[Frame, float] | None]:
    """Send ``frame`` on every socket at once; each answer and its latency (s)."""
    pending = [p.expect_ref() for p in peers]
    sent = await asyncio.gather(
        *(p.send_ref(frame, ref) for p, (ref, _) in zip(peers, pending, strict=True))
    )
    answers = await asyncio.gather(
        *(asyncio.wait_for(fut, TIMEOUT_S) for _, fut in pending), return_exceptions=True
    )
    out: list[tuple[Frame, float] | None] = []
    for ans, t0 in zip(answers, sent, strict=True):
        out.append(None if isinstance(ans, BaseException) else (ans[0], ans[1] - t0))
    return out


def answer_kind(frame: Frame) -> str:
    """``claim.ok``, or ``error:<code>`` (``error:taken`` for a lost race)."""
    kind = str(frame.get("type"))
    return kind if kind != "error" else f"error:{frame.get('code')}"


# -- the worker process --------------------------------------------------------------------
Waiters = list[tuple[Peer, asyncio.Future[tuple[Frame, float]]]]


class _Racer:
    def __init__(self, job: Job, commands: Any, results: Any) -> None:
        self.job = job
        self.commands = commands
        self.results = results
        self.parent = os.getppid()
        self.peers = [
            Peer(
                t,
                "therapist",
                f"ws://{HOST}:{job.ports[i % len(job.ports)]}/v1/ws",
                _token(job.secret, "therapist", t),
            )
            for i, t in job.therapists
        ]
        self.waiting: Waiters = []
        #: This worker's winners of the last claim burst.
        self.won: list[Peer] = []

    def put(self, kind: str, r: int, payload: Any) -> None:
        self.results.put((kind, self.job.worker, r, payload))

    def arm(self, waiters: Waiters) -> None:
        for p, fut in self.waiting:  # a round the parent gave up on left these
            p.drop(fut)
        self.waiting = waiters

    async def missing(self, match_id: str | None) -> int:
        """Wait for the armed frames; how many did not come (or named another request)."""
        done = await asyncio.gather(
            *(asyncio.wait_for(fut, TIMEOUT_S) for _, fut in self.waiting),
            return_exceptions=True,
        )
        self.arm([])
        if match_id is None:
            return sum(1 for d in done if isinstance(d, BaseException))
        return sum(
            1
            for d in done
            if isinstance(d, BaseException) or (d[0].get("request") or {}).get("id") != match_id
        )

    @staticmethod
    async def until(at: float) -> float:
        """Wait until monotonic instant ``at``; how late (s) the burst starts."""
        # The loop's timers fire up to a millisecond or two late (uvloop counts
        # whole milliseconds), which would skew the workers' bursts by as much:
        # sleep to just before ``at`` and spin the rest.
        await asyncio.sleep(max(0.0, at - time.monotonic() - SPIN_S))
        while time.monotonic() < at:
            pass
        return time.monotonic() - at

    async def handle(self, cmd: Command) -> None:
        kind, r = cmd[0], int(cmd[1])
        if kind == "arm":
            match = notes_is(str(cmd[2]))
            self.arm([(p, p.waiter("request.new", match)) for p in self.peers])
            self.put("armed", r, None)
        elif kind == "new":
            self.put("new", r, await self.missing(str(cmd[2])))
        elif kind == "ping":
            late = await self.until(float(cmd[2]))
            answers = await burst(self.peers, {"type": "ping"})
            latencies = [None if a is None else a[1] for a in answers]
            self.put("ping", r, {"late_s": late, "latencies": latencies})
        elif kind == "claim":
            late = await self.until(float(cmd[2]))
            answers = await burst(self.peers, {"type": "claim", "request_id": cmd[3]})
            self.won = [
                p
                for p, a in zip(self.peers, answers, strict=True)
                if a is not None and a[0].get("type") == "claim.ok"
            ]
            outs = [None if a is None else (answer_kind(a[0]), a[1]) for a in answers]
            self.put("claim", r, {"late_s": late, "answers": outs})
        elif kind == "expect-cancel":
            rid = cmd[2]
            self.arm(
                [
                    (p, p.waiter("claim.cancelled", lambda f: f.get("request_id") == rid))
                    for p in self.won
                ]
            )
            self.put("cancel-armed", r, None)
        elif kind == "cancelled":
            self.put("cancelled", r, await self.missing(None))
        else:
            raise ValueError(f"unknown command {cmd!r}")

    async def run(self) -> None:
        job = self.job
        try:
            async with asyncio.timeout(job.deadline_s):
                failures = await open_all(self.peers, job.open_timeout_s, available=True)
                self.put("ready", -1, failures)
                while (cmd := await next_command(self.commands, self.parent))[0] != "close":
                    await self.handle(cmd)
        except TimeoutError:
            pass  # past its deadline: close, report and exit like when told to
        finally:
            await close_all(self.peers)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.put("done", -1, {"cpu_s": usage.ru_utime + usage.ru_stime})


def worker(job: Job, commands: Any, results: Any) -> None:
    """A worker process's entry point (spawned by :class:`Racers`)."""
    from loadtest._stack import loop_factory

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_Racer(job, commands, results).run())


# -- the parent's side ---------------------------------------------------------------------
class Racers:
    """The worker processes of one race. Call :meth:`start`, then :meth:`ask`
    per step, :meth:`close` at the end, and always :meth:`stop`."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        self.jobs = list(jobs)
        self._workers = Workers(worker, self.jobs)
        #: Each worker's own CPU seconds over its life (sent as it finishes).
        self.cpu_s: dict[int, float] = {}

    async def gather(self, kind: str, r: int, timeout_s: float = STEP_TIMEOUT_S) -> list[Any]:
        """Every worker's payload of its ``kind`` answer for round ``r``, in worker
        order; raises when a worker exits or is silent for ``timeout_s``."""
        loop = asyncio.get_running_loop()
        got: dict[int, Any] = {}
        deadline = time.monotonic() + timeout_s
        dead_before: list[str] = []
        while len(got) < len(self.jobs):
            msg = await loop.run_in_executor(None, self._workers.get)
            if msg is not None:
                mkind, w, mr, payload = msg
                if mkind == kind and mr == r:
                    got[w] = payload
            # A worker that has exited cannot answer any more; its last words are
            # in the queue before it exits, so it is dead only after one more poll.
            dead = [
                f"worker {w} (exit code {self._workers.procs[w].exitcode})"
                for w in self._workers.exited()
                if w not in got
            ]
            if dead and msg is None and dead_before:
                raise RuntimeError(f"client worker(s) exited before saying {kind}: {dead}")
            dead_before = dead if msg is None else []
            if time.monotonic() > deadline:
                silent = sorted(set(range(len(self.jobs))) - set(got))
                raise TimeoutError(f"client worker(s) {silent} never said {kind} (round {r})")
        return [got[w] for w in range(len(self.jobs))]

    async def ask(self, cmd: Command, kind: str) -> list[Any]:
        """Give every worker ``cmd`` (of round ``cmd[1]``); their ``kind`` answers."""
        self._workers.send_all(cmd)
        return await self.gather(kind, int(cmd[1]))

    async def start(self) -> list[str]:
        """Start the workers; once each has connected its consoles, the failures."""
        self._workers.start()
        failed = await self.gather("ready", -1, START_TIMEOUT_S + self.jobs[0].open_timeout_s)
        return [f for fs in failed for f in fs]

    async def close(self) -> None:
        """Every worker closes its sockets and exits; their CPU seconds in :attr:`cpu_s`."""
        self._workers.send_all(("close",))
        done = await self.gather("done", -1, STEP_TIMEOUT_S)
        self.cpu_s = {w: float(d["cpu_s"]) for w, d in enumerate(done)}

    def stop(self) -> None:
        """Join every worker, killing any still alive after a few seconds. After
        :meth:`close` they have exited; after a failed step they are told to
        close now (a worker waiting on a frame does so within ``TIMEOUT_S``)."""
        self._workers.stop()

    def kill(self) -> None:
        """Kill every worker now (from the watchdog's thread, when the loop is stuck)."""
        self._workers.kill()
