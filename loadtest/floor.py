"""The floor: bare ``websockets`` servers and Redis pub/sub, nothing else.

    python -m loadtest.floor [--consoles 1000] [--servers 2] [--broadcasts 20]
                             [--interval 0.3] [--client-procs 2] [--out FILE.json]
    python -m loadtest.floor serve --port P --redis-port R     (one floor server)

What a fan-out could cost at best in Python on this machine: each floor
server accepts websockets (no auth, no pool, no per-connection queue),
subscribes to one Redis channel and hands every message it gets to all its
sockets with ``websockets.broadcast``. A run starts its own ``redis-server``
and ``--servers`` of these, connects the consoles round-robin from
``--client-procs`` processes (:mod:`loadtest._fleet`, as :mod:`loadtest.fanout`
does), reads the servers' RSS before and
after, then publishes a request-sized frame (the shape of ``request.new``:
a request object R with a unique marker as its notes) every ``--interval``
seconds and records when each console gets it. Reported as fan-out is:
"time to the last console" per broadcast (median over broadcasts) and the
delivery latency of every (broadcast, console), from the ``PUBLISH``.

:mod:`loadtest.fanout` ``--floor`` runs this in the same invocation and
reports the service's numbers as ratios to these.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from websockets.asyncio.server import ServerConnection, broadcast, serve

from loadtest._console import NEW, Tally
from loadtest._fleet import Fleet, Job, Spec, split
from loadtest._hist import Hist, plot, progress
from loadtest._procs import HOST, Proc, free_port, start_redis
from loadtest._stack import proc_cpu_s, proc_rss_kib, raise_nofile, run_async, write_report

CHANNEL: Final = "floor"
SETTLE_S: Final = 15.0


def request_frame(marker: str) -> dict[str, Any]:
    """A ``request.new`` as the service sends it (PROTOCOL.md §3's R), sized alike."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "type": "request.new",
        "request": {
            "id": "req_" + os.urandom(8).hex(),
            "state": "waiting",
            "created_at": now,
            "client_id": "lt-c-" + marker,
            "region": "GB-ENG",
            "language": "en",
            "topics": ["anxiety"],
            "notes": marker,
            "age": None,
            "guardian_consent": None,
            "position": 1,
            "claimed_by": None,
            "expires_at": None,
            "session_id": None,
            "reason": None,
        },
    }


# -- one floor server (a child process) ---------------------------------------------------
async def _serve(port: int, redis_port: int) -> None:
    import redis.asyncio as aioredis

    conns: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        conns.add(ws)
        try:
            await ws.send('{"type":"welcome"}')
            async for _ in ws:
                pass
        finally:
            conns.discard(ws)

    r = aioredis.Redis(host=HOST, port=redis_port)
    pubsub = r.pubsub()
    await pubsub.subscribe(CHANNEL)
    async with serve(handler, HOST, port, ping_interval=20, max_size=2**16, compression=None):
        async for msg in pubsub.listen():
            if msg.get("type") == "message":
                broadcast(conns, msg["data"].decode())


# -- a run ---------------------------------------------------------------------------------
def _wait_port(port: int, proc: Proc, timeout_s: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1.0):
            return
        if not proc.running or time.monotonic() > deadline:
            raise RuntimeError(f"floor server did not start:\n{proc.log_tail()}")
        time.sleep(0.05)


def run_floor(
    consoles: int, servers: int, broadcasts: int, interval_s: float, client_procs: int = 2
) -> dict[str, Any]:
    """One floor run, its consoles driven from ``client_procs`` processes
    (:mod:`loadtest._fleet`); the report (``_hist`` holds the delivery histogram)."""
    workdir = Path(tempfile.mkdtemp(prefix="qc-floor-"))
    procs: list[Proc] = []
    out: dict[str, Any] = {
        "consoles": consoles,
        "servers": servers,
        "broadcasts": broadcasts,
        "client_procs": client_procs,
    }
    hist = Hist()
    try:
        redis, redis_port = start_redis(workdir)
        procs.append(redis)
        ports = [free_port() for _ in range(servers)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
        for i, port in enumerate(ports):
            argv = [sys.executable, "-m", "loadtest.floor", "serve", "--port", str(port)]
            proc = Proc(
                f"floor{i}",
                [*argv, "--redis-port", str(redis_port)],
                env,
                workdir / f"floor{i}.log",
            )
            proc.start()
            procs.append(proc)
            _wait_port(port, proc)
        floors = procs[1:]
        pids = {p.name: p.popen.pid for p in floors if p.popen is not None}
        before: dict[str, int] = {}

        async def main() -> None:
            await asyncio.sleep(0.5)
            before.update({k: proc_rss_kib(pid) or 0 for k, pid in pids.items()})
            shares = split(consoles, client_procs)
            jobs = [
                Job(
                    worker=w,
                    kind="floor",
                    specs=tuple(
                        Spec(index=i, url=f"ws://{HOST}:{ports[i % servers]}/") for i in share
                    ),
                    deadline_s=600.0,
                )
                for w, share in enumerate(shares)
            ]
            tally = Tally()
            fleet = Fleet(jobs, tally)
            try:
                await fleet.start()
                t0 = time.monotonic()
                connected = await fleet.connect(t0, 60.0)
                out["connect_all_s"] = round(time.monotonic() - t0, 3)
                out["connected"] = sum(
                    1 for recs in connected.values() for rec in recs if rec["connected"]
                )
                await measure(fleet, tally)
            finally:
                await asyncio.get_running_loop().run_in_executor(None, fleet.stop)

        async def measure(fleet: Fleet, tally: Tally) -> None:
            import redis.asyncio as aioredis

            await asyncio.sleep(2.0)
            after = {k: proc_rss_kib(pid) or 0 for k, pid in pids.items()}
            held = {f"floor{i}": len(range(i, consoles, servers)) for i in range(servers)}
            out["kib_per_console"] = {
                k: round((after[k] - before[k]) / held[k], 2) for k in after if held[k]
            }
            cpu0 = {k: proc_cpu_s(pid) or 0.0 for k, pid in pids.items()}
            r = aioredis.Redis(host=HOST, port=redis_port)
            sent: dict[str, float] = {}
            start = time.monotonic()
            with progress(broadcasts, "floor broadcasts") as bar:
                for n in range(broadcasts):
                    delay = start + n * interval_s - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    marker = f"floor-{n:05d}"
                    data = json.dumps(request_frame(marker), separators=(",", ":"))
                    sent[marker] = time.monotonic()
                    await r.publish(CHANNEL, data)
                    bar.update(1)
            expected = broadcasts * out["connected"]
            await tally.wait_for(NEW, expected, SETTLE_S)
            cpu1 = {k: proc_cpu_s(pid) or 0.0 for k, pid in pids.items()}
            await r.aclose()
            records = [rec for recs in (await fleet.close()).values() for rec in recs]
            out["client_workers_cpu_s"] = round(sum(fleet.cpu_s.values()), 2)
            lasts = []
            for marker, t in sent.items():
                times = [rec["at"][marker] - t for rec in records if marker in rec["at"]]
                hist.extend_s(times)
                if times:
                    lasts.append(max(times))
            received = sum(len(rec["at"]) for rec in records)
            out.update(
                {
                    "expected": expected,
                    "received": received,
                    "lost": expected - received,
                    "duplicates": sum(rec["dups"] for rec in records),
                    "last_console_ms": {
                        "median": round(1000 * statistics.median(lasts), 2) if lasts else None,
                        "max": round(1000 * max(lasts), 2) if lasts else None,
                    },
                    "delivery_ms": hist.summary(),
                    "cpu_s": {k: round(cpu1[k] - cpu0[k], 2) for k in cpu1},
                }
            )

        def kill() -> None:
            for proc in procs:
                proc.kill()

        run_async(main, 600.0, kill)
    finally:
        for p in procs[::-1]:
            p.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    out["_hist"] = hist
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["serve"]:
        p = argparse.ArgumentParser(prog="python -m loadtest.floor serve")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--redis-port", type=int, required=True)
        s = p.parse_args(args[1:])
        raise_nofile(20000)
        run_async(lambda: _serve(s.port, s.redis_port), 86400.0, lambda: None)
        return 0
    p = argparse.ArgumentParser(prog="python -m loadtest.floor", description=__doc__.split("\n")[0])
    p.add_argument("--consoles", type=int, default=1000)
    p.add_argument("--servers", type=int, default=2)
    p.add_argument("--broadcasts", type=int, default=20)
    p.add_argument("--interval", type=float, default=0.3)
    p.add_argument("--client-procs", type=int, default=2)
    p.add_argument("--out", type=Path)
    a = p.parse_args(args)
    if not (1 <= a.consoles <= 5000 and 1 <= a.servers <= 8 and 1 <= a.broadcasts <= 2000):
        p.error("--consoles 1..5000, --servers 1..8, --broadcasts 1..2000")
    if not 1 <= a.client_procs <= 16:
        p.error("--client-procs 1..16")
    raise_nofile(2 * a.consoles + 1024)
    rep = run_floor(a.consoles, a.servers, a.broadcasts, a.interval, a.client_procs)
    hist = rep.pop("_hist")
    rep = {"scenario": "floor", "command": " ".join(["python -m loadtest.floor", *args]), **rep}
    rep["ok"] = rep.get("lost") == 0 and rep.get("duplicates") == 0
    print(
        f"floor: {a.consoles} consoles x {a.servers} servers: last console median "
        f"{rep['last_console_ms']['median']} ms, delivery {rep['delivery_ms']}, lost {rep['lost']}"
    )
    if a.out is not None:
        rep["plot"] = str(
            plot(a.out.with_suffix(".png"), "floor: delivery after PUBLISH", {"floor": hist})
        )
        write_report(a.out, rep)
    return 0 if rep["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
