"""Idle consoles: the servers' resident memory per connected, idle console.

    python -m loadtest.idle [--consoles 2000] [--servers 2] [--client-procs 2] [--out FILE.json]

Starts its own Redis and ``--servers`` servers, creates the therapist
profiles, reads each server's VmRSS (/proc/<pid>/status), connects every
console (auth, welcome, snapshot, ``status`` available), waits for the
servers to settle and reads VmRSS again: KiB per console, per server, is the
growth over the consoles it holds (issue #16: at most 20 KiB). With
``--broadcasts N`` it then creates N requests one after another and times
each until the last console has its ``request.new``, and the servers' CPU per
delivery: the measure :mod:`loadtest.scaleout` repeats with more servers.
The consoles run in ``--client-procs`` processes (:mod:`loadtest._fleet`),
250 connecting at a time over all of them.

With ``--tracemalloc FRAMES`` server 0 runs with
``DISPATCH_TRACEMALLOC_FRAMES`` and is sent ``SIGUSR2`` just before the
consoles connect (tracing starts: the first snapshot) and once they have
settled (the second): the report's ``tracemalloc`` lists the allocation
sites still held, in bytes per console, biggest first. Tracing inflates the
RSS figures of that run; measure memory without it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtest._console import NEW, Console, Tally
from loadtest._fleet import Fleet, copy_into, service_jobs, split
from loadtest._hist import Hist, plot
from loadtest._stack import LANGUAGE, REGION, Stack, raise_nofile, run_async, write_report

SETTLE_S = 3.0
TIMEOUT_S = 30.0


#: Consoles connecting at once, over all client processes.
BATCH = 250


async def _broadcasts(
    stack: Stack,
    http: Any,
    tally: Tally,
    live: int,
    n: int,
    held: dict[str, int],
    out: dict[str, Any],
) -> list[tuple[str, float]]:
    """Create ``n`` requests one at a time, each once the one before reached
    its last console (or ``TIMEOUT_S`` passed), and each server's CPU per
    delivery it made (``held`` consoles per server; the CPU also covers each
    request's ``request.gone`` when it is cancelled). Each request's marker
    and when it was posted (the deliveries are read when the consoles close)."""
    run_id = secrets.token_hex(3)
    posted: list[tuple[str, float]] = []
    clients = [f"lt-ic-{run_id}-{r}" for r in range(n)]
    await stack.fund(http, clients)
    cpu0 = stack.cpu_s()
    for r, client in enumerate(clients):
        marker = f"lt-idle-{run_id}-{r}"
        body = {"region": REGION, "language": LANGUAGE, "topics": [], "notes": marker}
        t0 = time.monotonic()
        resp = await http.post(
            f"{stack.base(r % stack.n)}/v1/requests",
            json=body,
            headers=stack.auth("client", client),
        )
        if resp.status_code != 201:
            raise RuntimeError(f"POST {resp.status_code} {resp.text[:200]}")
        posted.append((marker, t0))
        await tally.wait_for(f"{NEW}:{marker}", live, TIMEOUT_S)
        rid = resp.json()["request"]["id"]
        await http.delete(
            f"{stack.base(r % stack.n)}/v1/requests/{rid}", headers=stack.auth("client", client)
        )
        await asyncio.sleep(0.05)
    cpu1 = stack.cpu_s()
    out["broadcasts"] = {
        "requests": n,
        "server_cpu_ms_per_1000_deliveries": {
            k: round(1e6 * (cpu1[k] - cpu0.get(k, 0.0)) / (n * held[k]), 2)
            for k in cpu1
            if held.get(k)
        },
    }
    return posted


def _deliveries(
    posted: list[tuple[str, float]], consoles: list[Console], out: dict[str, Any], hist: Hist
) -> None:
    """Each broadcast's deliveries to the ready consoles, after its POST."""
    live = [c for c in consoles if c.ready_s is not None]
    lasts: list[float] = []
    lost = 0
    for marker, t0 in posted:
        times = [c.new_at[marker] - t0 for c in live if marker in c.new_at]
        lost += len(live) - len(times)
        hist.extend_s(times)
        if times:
            lasts.append(max(times))
    out["broadcasts"].update(
        {
            "lost": lost,
            "last_console_median_ms": round(1000 * statistics.median(lasts), 2) if lasts else None,
            "delivery_ms": hist.summary(),
        }
    )


async def _snapshot(stack: Stack, n: int) -> Path:
    """Have server 0 write its ``n``-th tracemalloc snapshot; its path."""
    pid = stack.pids()["server0"]
    path = stack.workdir / f"tracemalloc-{pid}-{n}.snap"
    os.kill(pid, signal.SIGUSR2)
    for _ in range(600):
        if path.exists():
            size = path.stat().st_size
            await asyncio.sleep(0.5)
            if path.stat().st_size == size:
                return path
        await asyncio.sleep(0.1)
    raise RuntimeError(f"server0 wrote no tracemalloc snapshot {n}")


def _allocation_sites(before: Path, after: Path, consoles: int, top: int = 25) -> dict[str, Any]:
    """What server 0 allocated between the snapshots and still holds, by
    source line (the innermost frame), per console it holds."""
    import tracemalloc

    stats = tracemalloc.Snapshot.load(str(after)).compare_to(
        tracemalloc.Snapshot.load(str(before)), "lineno"
    )
    total = sum(s.size_diff for s in stats)

    def site(s: Any) -> str:
        frame = s.traceback[0]
        return f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}"

    return {
        "bytes_per_console": round(total / consoles),
        "sites": [
            {
                "site": site(s),
                "bytes_per_console": round(s.size_diff / consoles),
                "blocks_per_console": round(s.count_diff / consoles, 2),
            }
            for s in stats[:top]
        ],
    }


def measure(
    consoles: int,
    servers: int,
    broadcasts: int = 0,
    hist: Hist | None = None,
    connect: Hist | None = None,
    tracemalloc_frames: int = 0,
    client_procs: int = 2,
) -> dict[str, Any]:
    """One run of ``servers`` servers with ``consoles`` idle consoles driven
    from ``client_procs`` processes (:mod:`loadtest._fleet`); see the module
    doc. ``hist`` gets the broadcasts' deliveries, ``connect`` each console's
    connect-to-``status.ok`` time (from its batch's start)."""
    workdir = Path(tempfile.mkdtemp(prefix="qc-idle-"))
    env = [("DISPATCH_TRACEMALLOC_FRAMES", str(tracemalloc_frames))] if tracemalloc_frames else []
    stack = Stack(servers, workdir, env=env)
    out: dict[str, Any] = {"consoles": consoles, "servers": servers, "client_procs": client_procs}
    hist = hist if hist is not None else Hist()

    async def main() -> None:
        tids = [f"lt-it-{i:05d}" for i in range(consoles)]
        tally = Tally()
        cs = [
            Console(index=i, user_id=t, server=i % servers, tally=tally) for i, t in enumerate(tids)
        ]
        shares = split(consoles, client_procs)
        jobs = service_jobs(
            cs,
            shares,
            stack.ws_url,
            lambda user_id: stack.token("therapist", user_id),
            timeout_s=60.0,
            deadline_s=1800.0,
            batch=max(1, BATCH // len(shares)),
        )
        fleet = Fleet(jobs, tally)
        batches = -(-len(shares[0]) // jobs[0].batch)  # the most any worker connects in turn
        posted: list[tuple[str, float]] = []
        try:
            async with stack.client() as http:
                await stack.wait_ready(http)
                await stack.put_profiles(http, tids)
                await fleet.start()
                await asyncio.sleep(SETTLE_S)
                before = stack.rss_kib()
                snaps = [await _snapshot(stack, 1)] if tracemalloc_frames else []
                copy_into(cs, await fleet.connect(time.monotonic(), 60.0 * batches), shares)
                failures = [f"{c.user_id}: {c.failure}" for c in cs if c.ready_s is None]
                if connect is not None:
                    connect.extend_s(c.ready_s for c in cs if c.ready_s is not None)
                await asyncio.sleep(SETTLE_S)
                after = stack.rss_kib()
                if snaps:
                    snaps.append(await _snapshot(stack, 2))
                    on0 = sum(1 for j in range(consoles) if j % servers == 0)
                    out["tracemalloc"] = _allocation_sites(snaps[0], snaps[1], max(1, on0))
                per = {
                    f"server{i}": sum(1 for j in range(consoles) if j % servers == i)
                    for i in range(servers)
                }
                out["connect_failures"] = failures[:10]
                out["connected"] = consoles - len(failures)
                out["rss_kib_before"] = before
                out["rss_kib_after"] = after
                out["kib_per_console"] = {
                    k: round((after[k] - before[k]) / per[k], 2) for k in after if per.get(k)
                }
                total = sum(after.values()) - sum(before.values())
                out["kib_per_console_all"] = round(total / max(1, consoles), 2)
                if broadcasts:
                    held = {
                        f"server{i}": sum(1 for c in cs if c.ready_s is not None and c.server == i)
                        for i in range(servers)
                    }
                    live = out["connected"]
                    posted = await _broadcasts(stack, http, tally, live, broadcasts, held, out)
            copy_into(cs, await fleet.close(), shares)
            out["client_workers_cpu_s"] = round(sum(fleet.cpu_s.values()), 2)
            if posted:
                _deliveries(posted, cs, out, hist)
        finally:
            await asyncio.get_running_loop().run_in_executor(None, fleet.stop)

    gc.collect()
    try:
        stack.start()
        run_async(main, 1800.0, stack.kill)
    finally:
        out.update(stack.stop())
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def problems_of(m: dict[str, Any]) -> list[str]:
    out = []
    if m.get("connected") != m["consoles"]:
        out.append(
            f"{m['consoles'] - m.get('connected', 0)} console(s) failed: "
            f"{m.get('connect_failures')}"
        )
    if m.get("broadcasts", {}).get("lost"):
        out.append(f"{m['broadcasts']['lost']} request.new lost")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.idle", description=__doc__.split("\n")[0])
    p.add_argument("--consoles", type=int, default=2000)
    p.add_argument("--servers", type=int, default=2)
    p.add_argument("--broadcasts", type=int, default=0)
    p.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES")
    p.add_argument("--client-procs", type=int, default=2)
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    if not 1 <= a.client_procs <= 16:
        p.error("--client-procs 1..16")
    if not (1 <= a.consoles <= 5000 and 1 <= a.servers <= 8 and 0 <= a.broadcasts <= 200):
        p.error("--consoles 1..5000, --servers 1..8, --broadcasts 0..200")
    if not 0 <= a.tracemalloc <= 100:
        p.error("--tracemalloc 0..100 frames")
    raise_nofile(2 * a.consoles + 1024)
    hist, connect = Hist(), Hist()
    problems: list[str] = []
    try:
        m = measure(
            a.consoles, a.servers, a.broadcasts, hist, connect, a.tracemalloc, a.client_procs
        )
        m["connect_ms"] = connect.summary()
        problems = problems_of(m)
    except (Exception, KeyboardInterrupt) as exc:
        m = {}
        problems = [f"aborted: {type(exc).__name__}: {exc}"]
    args = list(sys.argv[1:] if argv is None else argv)
    rep = {
        "scenario": "idle",
        "command": " ".join(["python -m loadtest.idle", *args]),
        "config": {
            "consoles": a.consoles,
            "servers": a.servers,
            "broadcasts": a.broadcasts,
            "tracemalloc": a.tracemalloc,
            "client_procs": a.client_procs,
        },
        "ok": not problems,
        "problems": problems,
        **m,
    }
    print(
        f"idle: {a.consoles} consoles x {a.servers} servers: {m.get('connected')} connected; "
        f"KiB per console {m.get('kib_per_console')} (all: {m.get('kib_per_console_all')})"
    )
    traced = m.get("tracemalloc")
    if traced:
        print(f"  server0, traced: {traced['bytes_per_console']} B per console, biggest sites:")
        for row in traced["sites"][:15]:
            print(f"    {row['bytes_per_console']:>6} B  {row['site']}")
    print(
        "result: OK" if rep["ok"] else "result: FAILED\n" + "\n".join(f"  - {x}" for x in problems)
    )
    if a.out is not None:
        series = {"connect to status.ok (batches of 250)": connect, "request.new after POST": hist}
        rep["plot"] = str(plot(a.out.with_suffix(".png"), "idle consoles", series))
        write_report(a.out, rep)
    return 0 if rep["ok"] else (2 if not m else 1)


if __name__ == "__main__":
    sys.exit(main())
