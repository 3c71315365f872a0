"""Fan-out load test: many therapist consoles, several servers, one Redis.

    python -m loadtest.fanout [--consoles 1000] [--servers 2] [--interval 0.3]
                              [--requests 100] [--codec json|msgpack] [--out FILE.json]
                              [--offer-fanout K] [--client-procs N]

It starts its own ``redis-server`` (append-only file on) on a free 127.0.0.1
port in a temporary directory and ``--servers`` ``dispatch serve`` processes
sharing it, creates one therapist profile per console (each eligible for every
request), connects every console at once, spread round-robin over the
servers, and makes each available. Then it creates one request every
``--interval`` seconds, each from its own client and with a unique marker in
its notes, and records when each console gets its ``request.new``; after a
bounded wait it cancels every request at the same pace and records each
``request.gone``.

It reports how long consoles took to connect and become available, the
fan-out latency of every delivery (see :mod:`loadtest._report`), deliveries
expected against received (every available console must get every request
exactly once), consoles the server closed (1013 is a slow consumer), and
errors. With ``--offer-fanout K`` (``DISPATCH_OFFER_FANOUT=K`` on the servers)
each request reaches only the K consoles it is offered to (every console is
equally placed, so which K is the server's choice): a request is then
counted against K deliveries (fewer is lost, more is an offer too wide), and
its ``request.gone`` against the consoles that got its ``request.new``. Each
run also reports what one request cost: frames queued by the servers, and
the servers' (and Redis's) CPU over the create and cancel phases. A summary
goes to stdout, the full report to ``--out`` as JSON.
Exit status: 0 when nothing was lost, duplicated or refused; 1 when something
was; 2 when the run could not be set up or passed its deadline.

Everything is bounded: counts are capped, every wait has a timeout, the whole
run has a hard deadline (``--deadline``; a watchdog kills everything a minute
past it), only 127.0.0.1 is used, and the processes it started are always
stopped (SIGTERM, then SIGKILL; the kernel kills them if this script dies).

The consoles are driven from ``--client-procs`` processes (2;
:mod:`loadtest._fleet`), so one client's scheduling delay does not land in
every delivery; they share the machine with the servers all the same, so the
timings compare runs on one machine and promise nothing elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import resource
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Final

import httpx

from loadtest import _fleet, _hist, _report
from loadtest._config import Config, parse_args
from loadtest._console import GONE, NEW, Console, Tally
from loadtest._procs import Proc, metric_values
from loadtest._report import Posted, Results
from loadtest._stack import (
    LANGUAGE,
    REGION,
    Stack,
    raise_nofile,
    run_async,
    start_profiler,
    stop_profiler,
    write_report,
)
from loadtest.floor import run_floor

METRICS: Final = (
    "dispatch_ws_slow_consumers_total",
    'dispatch_ws_connections{role="therapist"}',
    'dispatch_ws_frames_out_total{type="request.new"}',
    'dispatch_ws_frames_out_total{type="request.gone"}',
)

#: Seconds after the connect burst before the servers' RSS is read again.
RSS_SETTLE_S: Final = 2.0

EXIT_OK: Final = 0
EXIT_LOST: Final = 1
EXIT_SETUP: Final = 2

_Step = Callable[[Posted], Coroutine[Any, Any, None]]


class Run:
    """One run: its :class:`~loadtest._stack.Stack` (Redis and the servers), its
    consoles and requests, and what it recorded."""

    def __init__(self, cfg: Config, workdir: Path) -> None:
        self.cfg = cfg
        self.workdir = workdir
        run_id = secrets.token_hex(3)
        # Tokens outlive the run: it stops at its deadline.
        self.stack = Stack(cfg.servers, workdir, cfg.server_env, ttl_s=int(cfg.deadline_s) + 600)
        self.tally = Tally()
        self.fleet: _fleet.Fleet | None = None
        self.shares: list[list[int]] = []
        self.profiler: Proc | None = None
        self.r = Results(
            cfg=cfg,
            consoles=[
                Console(index=i, user_id=f"lt-t-{i:05d}", server=i % cfg.servers, tally=self.tally)
                for i in range(cfg.consoles)
            ],
            posted=[
                Posted(
                    index=i,
                    marker=f"lt-{run_id}-{i:05d}",
                    client_id=f"lt-c-{run_id}-{i:05d}",
                    server=i % cfg.servers,
                )
                for i in range(cfg.requests)
            ],
            wall_offset=time.time() - time.monotonic(),
        )

    def _error(self, message: str) -> None:
        if len(self.r.http_errors) < 200:
            self.r.http_errors.append(message[:300])

    # -- processes -------------------------------------------------------------------
    def stop_processes(self) -> None:
        """Read CPU times and logs, then stop every child (servers first)."""
        if self.profiler is not None:
            self.r.memory["profiler_log"] = stop_profiler(self.profiler)
        for name, cpu in self.stack.cpu_s().items():
            self.r.cpu_s[name] = round(cpu, 2)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.r.cpu_s["client"] = round(usage.ru_utime + usage.ru_stime, 2)
        stopped = self.stack.stop()
        self.r.exit_codes.update(stopped["exit_codes"])
        self.r.server_logs = stopped["server_logs"]

    def record_memory(self, before: dict[str, int], after: dict[str, int]) -> None:
        """Each server's RSS growth over the consoles it holds (KiB per console)."""
        held = {f"server{i}": 0 for i in range(self.cfg.servers)}
        for c in self.r.consoles:
            if c.ready_s is not None:
                held[f"server{c.server}"] += 1
        per = {k: round((after[k] - before[k]) / held[k], 2) for k in after if held.get(k)}
        total = sum(after.values()) - sum(before.values())
        self.r.memory = {
            "rss_kib_before": before,
            "rss_kib_after": after,
            "kib_per_console": per,
            "kib_per_console_all": round(total / max(1, sum(held.values())), 2),
        }

    # -- the measured phases ----------------------------------------------------------
    async def connect_consoles(self) -> None:
        """Spread the consoles over ``--client-procs`` worker processes
        (:mod:`loadtest._fleet`) and connect them all at once."""
        cfg = self.cfg
        self.shares = _fleet.split(len(self.r.consoles), cfg.client_procs)
        jobs = _fleet.service_jobs(
            self.r.consoles,
            self.shares,
            self.stack.ws_url,
            lambda user_id: self.stack.token("therapist", user_id),
            codec=cfg.codec,
            compression=cfg.compression,
            timeout_s=cfg.connect_timeout_s,
            deadline_s=cfg.deadline_s + 30.0,
        )
        self.fleet = _fleet.Fleet(jobs, self.tally)
        await self.fleet.start()
        burst_start = time.monotonic()
        connected = await self.fleet.connect(burst_start, cfg.connect_timeout_s)
        _fleet.copy_into(self.r.consoles, connected, self.shares)
        self.r.phases["connect_all_s"] = time.monotonic() - burst_start

    async def paced(self, name: str, items: Sequence[Posted], step: _Step) -> None:
        """Start ``step`` for each item every ``--interval`` seconds (on schedule,
        whether or not the previous one has answered), then wait for them all."""
        start = time.monotonic()
        pending: list[asyncio.Task[None]] = []
        for n, p in enumerate(items):
            delay = start + n * self.cfg.interval_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(step(p)))
        await asyncio.gather(*pending)
        self.r.phases[f"{name}_phase_s"] = time.monotonic() - start

    async def post_one(self, client: httpx.AsyncClient, p: Posted) -> None:
        body = {"region": REGION, "language": LANGUAGE, "topics": ["anxiety"], "notes": p.marker}
        headers = {**self.stack.auth("client", p.client_id), "Idempotency-Key": p.marker}
        p.sent = time.monotonic()
        try:
            resp = await client.post(
                f"{self.stack.base(p.server)}/v1/requests", json=body, headers=headers
            )
        except httpx.HTTPError as exc:
            self._error(f"POST {p.marker}: {type(exc).__name__}")
            return
        p.responded = time.monotonic()
        p.status = resp.status_code
        if resp.status_code != 201:
            self._error(f"POST {p.marker}: {resp.status_code} {resp.text[:200]}")
            return
        req = resp.json().get("request", {})
        if not isinstance(req.get("id"), str) or req.get("notes") != p.marker:
            self._error(f"POST {p.marker}: unexpected body")
            return
        p.request_id = req["id"]
        with contextlib.suppress(TypeError, ValueError):
            p.created_at = dt.datetime.fromisoformat(str(req.get("created_at"))).timestamp()

    async def cancel_one(self, client: httpx.AsyncClient, p: Posted) -> None:
        p.cancel_sent = time.monotonic()
        try:
            resp = await client.delete(
                f"{self.stack.base(p.server)}/v1/requests/{p.request_id}",
                headers=self.stack.auth("client", p.client_id),
            )
        except httpx.HTTPError as exc:
            self._error(f"DELETE {p.marker}: {type(exc).__name__}")
            return
        p.cancel_responded = time.monotonic()
        p.cancel_status = resp.status_code
        if resp.status_code != 200:
            self._error(f"DELETE {p.marker}: {resp.status_code} {resp.text[:200]}")

    async def settle(self, kind: str, target: int) -> None:
        """Wait (at most ``--settle``) for ``target`` first arrivals of ``kind``."""
        start = time.monotonic()
        self.r.settled[kind] = await self.tally.wait_for(kind, target, self.cfg.settle_s)
        self.r.phases[f"{kind}_settle_s"] = time.monotonic() - start

    async def collect_after(self, client: httpx.AsyncClient) -> None:
        st = self.stack
        with contextlib.suppress(httpx.HTTPError, ValueError):
            resp = await client.get(
                f"{st.base(0)}/v1/pool/stats", headers=st.auth("operator", "lt-op-stats")
            )
            if resp.status_code == 200:
                self.r.pool_after = resp.json()
        for i in range(self.cfg.servers):
            values: dict[str, float] = {}
            with contextlib.suppress(httpx.HTTPError):
                values = metric_values((await client.get(f"{st.base(i)}/metrics")).text, METRICS)
            self.r.server_metrics.append(values)

    async def close_consoles(self) -> None:
        """The workers close their consoles and send back what each saw."""
        if self.fleet is None:
            return
        try:
            records = await self.fleet.close()
            _fleet.copy_into(self.r.consoles, records, self.shares)
            self.r.cpu_s["client_workers"] = round(sum(self.fleet.cpu_s.values()), 2)
        except (TimeoutError, RuntimeError) as exc:
            self._error(f"closing the console workers: {exc}")
        finally:
            await asyncio.get_running_loop().run_in_executor(None, self.fleet.stop)

    # -- main ------------------------------------------------------------------------
    async def main(self) -> None:
        try:
            async with asyncio.timeout(self.cfg.deadline_s):
                await self._phases()
        except TimeoutError:
            self.r.aborted = f"deadline of {self.cfg.deadline_s:.0f} s passed"
        finally:
            await self.close_consoles()

    async def _phases(self) -> None:
        t0 = time.monotonic()
        stack = self.stack
        stack.start()
        async with stack.client() as client:
            await stack.wait_ready(client)
            self.r.phases["start_s"] = time.monotonic() - t0
            server0 = stack.servers[0].popen
            if self.cfg.profile is not None and server0 is not None:
                log = self.workdir / "py-spy.log"
                self.profiler = start_profiler(server0.pid, self.cfg.profile, log)
            t = time.monotonic()
            await stack.put_profiles(client, [c.user_id for c in self.r.consoles])
            # When the server has wallets (PROTOCOL.md §6), every client is topped up first.
            self.r.wallet = await stack.fund(client, [p.client_id for p in self.r.posted])
            self.r.phases["profiles_s"] = time.monotonic() - t

            rss0 = stack.rss_kib()
            await self.connect_consoles()
            ready = sum(1 for c in self.r.consoles if c.ready_s is not None)
            if ready == 0:
                raise RuntimeError("no console became available")
            await asyncio.sleep(RSS_SETTLE_S)
            self.record_memory(rss0, stack.rss_kib())

            cpu0 = stack.cpu_s()
            await self.paced("post", self.r.posted, lambda p: self.post_one(client, p))
            created = [p for p in self.r.posted if p.request_id is not None]
            await self.settle(NEW, len(created) * self.cfg.offered_per_request(ready))

            await self.paced("cancel", created, lambda p: self.cancel_one(client, p))
            ready = sum(1 for c in self.r.consoles if c.ready_s is not None)
            cancelled = [p for p in created if p.cancel_status == 200]
            # Each request.gone goes to the consoles its request.new went to
            # (with --offer-fanout: as many as got it, counted by the workers).
            gone_for = (
                sum(self.tally.counts[f"{NEW}:{p.marker}"] for p in cancelled)
                if self.cfg.offer_fanout > 0
                else ready * len(cancelled)
            )
            await self.settle(GONE, gone_for)
            cpu1 = stack.cpu_s()
            self.r.cpu_window_s = {k: round(cpu1[k] - cpu0[k], 3) for k in cpu1 if k in cpu0}
            await self.collect_after(client)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    # Each console is a socket here (and one on a server, a child of ours).
    raise_nofile(2 * cfg.consoles + 1024)
    workdir = Path(tempfile.mkdtemp(prefix="qc-fanout-"))
    run = Run(cfg, workdir)
    try:
        run_async(run.main, cfg.deadline_s, run.stack.kill, name="fanout")
    except KeyboardInterrupt:
        run.r.aborted = "interrupted"
    except Exception as exc:
        run.r.setup_error = f"{type(exc).__name__}: {exc}"
    finally:
        run.stop_processes()
    args = list(sys.argv[1:] if argv is None else argv)
    report = _report.build(run.r, " ".join(["python -m loadtest.fanout", *args]))
    print(_report.human(report), flush=True)
    hists = {"service": _delivery_hist(run.r)}
    if cfg.floor and run.r.setup_error is None and run.r.aborted is None:
        _add_floor(cfg, report, hists)
    if cfg.out is not None:
        report["plot"] = str(
            _hist.plot(
                cfg.out.with_suffix(".png"),
                f"fan-out to {cfg.consoles} consoles: request.new after created_at",
                hists,
            )
        )
        write_report(cfg.out, report)
    if cfg.keep:
        print(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if run.r.setup_error is not None or run.r.aborted is not None:
        return EXIT_SETUP
    return EXIT_OK if report["ok"] else EXIT_LOST


def _delivery_hist(r: Results) -> _hist.Hist:
    """Every request.new delivery after its request's created_at, as an HDR histogram."""
    created = {p.marker: p.created_at for p in r.posted if p.created_at is not None}
    hist = _hist.Hist()
    for c in r.consoles:
        if c.ready_s is None:
            continue
        for marker, at in c.new_at.items():
            if (t := created.get(marker)) is not None:
                hist.record_s(at + r.wall_offset - t)
    return hist


def _add_floor(cfg: Config, report: dict[str, Any], hists: dict[str, _hist.Hist]) -> None:
    """Run the floor at the same size (same invocation) and add it and the ratios."""
    try:
        floor = run_floor(cfg.consoles, cfg.servers, cfg.requests, cfg.interval_s, cfg.client_procs)
    except Exception as exc:
        report["floor"] = {"error": f"{type(exc).__name__}: {exc}"}
        report["problems"].append(f"the floor run failed: {exc}")
        report["ok"] = False
        return
    hists["floor"] = floor.pop("_hist")
    report["floor"] = floor
    new = report["request_new"]
    last = new["last_console_after_created_ms"]["p50"]
    p99 = new["latency_after_created_ms"]["p99"]
    f_last, f_p99 = floor["last_console_ms"]["median"], floor["delivery_ms"]["p99"]
    mem = report["memory"].get("kib_per_console_all")
    f_mem = floor.get("kib_per_console", {})
    f_mem_all = sum(f_mem.values()) / len(f_mem) if f_mem else None
    report["ratios"] = {
        "last_console": round(last / f_last, 2) if last and f_last else None,
        "delivery_p99": round(p99 / f_p99, 2) if p99 and f_p99 else None,
        "kib_per_console": round(mem / f_mem_all, 2) if mem and f_mem_all else None,
    }
    if floor.get("lost"):
        report["problems"].append(f"the floor lost {floor['lost']} deliveries")
        report["ok"] = False
    print(
        f"  floor (bare websockets + Redis pub/sub, same size): last console median "
        f"{f_last} ms, delivery p99 {f_p99} ms, lost {floor.get('lost')}; "
        f"KiB per console {f_mem}",
        flush=True,
    )
    print(f"  ratios service / floor: {report['ratios']}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
