"""Sustained lifecycles: clients in a closed loop, talk now to session end.

    python -m loadtest.lifecycle [--clients 40] [--therapists 100] [--servers 2]
                                 [--generators 2] [--duration 60] [--out FILE.json]
                                 [--postgres ADMIN_URL | --database-url URL]

Starts its own Redis and ``--servers`` servers, creates the therapist profiles
and tops up the clients, then ``--generators`` load-generator processes
(:mod:`loadtest._gen`) each connect their share of the consoles (available)
and of the clients, and run closed loops for ``--duration`` seconds: every
client, one lifecycle after another (POST -> request.new -> claim -> offer ->
accept -> session.ready -> session.end). Reported: lifecycles per second,
p50/p99 of every step (HDR histograms merged across the generators), the
servers' CPU seconds per lifecycle and Redis's CPU share over the measured
window (from /proc/<pid>/stat), and what failed. Exit 0 when nothing was lost.

The servers' database is a fresh SQLite file of the run's own, or with
``--postgres ADMIN_URL`` a fresh PostgreSQL database made for the run and
dropped after it (:mod:`loadtest._pg`), or ``--database-url`` one you made.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import queue
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from loadtest import _pg
from loadtest._gen import STEPS, Job, worker
from loadtest._hist import Hist, plot, progress
from loadtest._pg import DEFAULT_ADMIN_URL
from loadtest._stack import Stack, raise_nofile, run_async, write_report


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.lifecycle", description=__doc__.split("\n")[0]
    )
    p.add_argument("--clients", type=int, default=40)
    p.add_argument("--therapists", type=int, default=100)
    p.add_argument("--servers", type=int, default=2)
    p.add_argument("--generators", type=int, default=2)
    p.add_argument("--duration", type=float, default=60.0)
    db = p.add_mutually_exclusive_group()
    db.add_argument(
        "--postgres",
        metavar="ADMIN_URL",
        help="run on a fresh PostgreSQL database made (and dropped) through ADMIN_URL, "
        f"e.g. {DEFAULT_ADMIN_URL}",
    )
    db.add_argument(
        "--database-url",
        help="the servers' DISPATCH_DATABASE_URL, an empty database of the run's own "
        "(default: a fresh SQLite file in the run's directory)",
    )
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    if not (1 <= a.clients <= 1000 and 1 <= a.servers <= 8 and 1 <= a.generators <= 16):
        p.error("--clients 1..1000, --servers 1..8, --generators 1..16")
    if not a.clients <= a.therapists <= 5000:
        p.error("--therapists must be at least --clients (and at most 5000)")
    if not 1 <= a.duration <= 1800:
        p.error("--duration must be 1..1800 seconds")
    return a


#: A closed-loop client starts lifecycles back to back, which no person does: the
#: per-user rate limits (abuse guards, not the path measured) are raised for it.
RATE_ENV: Final = (
    ("DISPATCH_WS_RATE_PER_S", "1000"),
    ("DISPATCH_WS_RATE_BURST", "2000"),
    ("DISPATCH_HTTP_RATE_PER_S", "1000"),
    ("DISPATCH_HTTP_RATE_BURST", "2000"),
)


def _share(items: Sequence[str], n: int, i: int) -> tuple[str, ...]:
    return tuple(items[i::n])


def run(a: argparse.Namespace, stack: Stack, run_id: str) -> dict[str, Any]:
    tids = [f"lt-lt-{i:04d}" for i in range(a.therapists)]
    cids = [f"lt-lc-{run_id}-{i:04d}" for i in range(a.clients)]
    setup: dict[str, Any] = {}

    async def prepare() -> None:
        async with stack.client() as http:
            await stack.wait_ready(http)
            await stack.put_profiles(http, tids)
            setup["wallet"] = await stack.fund(http, cids)

    stack.start()
    run_async(prepare, 600.0, stack.kill)
    ctx = mp.get_context("spawn")
    started, results = ctx.Queue(), ctx.Queue()
    start = ctx.Event()
    gens = [
        ctx.Process(
            target=worker,
            args=(
                Job(
                    index=i,
                    run_id=run_id,
                    secret=stack.secret,
                    ports=tuple(stack.ports),
                    therapists=_share(tids, a.generators, i),
                    clients=_share(cids, a.generators, i),
                    duration_s=a.duration,
                ),
                started,
                start,
                results,
            ),
            daemon=True,
        )
        for i in range(a.generators)
    ]
    for g in gens:
        g.start()
    failures: list[str] = []
    try:
        for _ in gens:
            _, failed = started.get(timeout=120)
            failures += failed
        cpu0, t0 = stack.cpu_s(), time.monotonic()
        start.set()
        finished = 0
        with progress(int(a.duration), "lifecycle s") as bar:
            while finished < len(gens):
                try:
                    started.get(timeout=1.0)
                    finished += 1
                except queue.Empty:
                    bar.n = min(int(a.duration), int(time.monotonic() - t0))
                    bar.refresh()
                    if time.monotonic() - t0 > a.duration + 120:
                        raise TimeoutError("the generators did not finish") from None
        window = time.monotonic() - t0
        cpu1 = stack.cpu_s()
        outs = [results.get(timeout=60) for _ in gens]
    finally:
        for g in gens:
            g.join(timeout=30)
            if g.is_alive():
                g.kill()
    hists: dict[str, Hist] = {s: Hist() for s in STEPS}
    done = 0
    lost: Counter[str] = Counter()
    failed_ids: list[dict[str, Any]] = []
    errors: Counter[str] = Counter()
    for o in outs:
        done += o["done"]
        lost.update(o["failed"])
        failed_ids.extend(o.get("failed_ids", []))
        errors.update(o["error_frames"])
        for k, enc in o["hist"].items():
            hists[k].add(Hist.decode(enc))
    server_cpu = sum(cpu1.get(k, 0.0) - cpu0.get(k, 0.0) for k in cpu1 if k != "redis")
    redis_cpu = cpu1.get("redis", 0.0) - cpu0.get("redis", 0.0)
    problems = [f"{len(failures)} connection(s) failed: {failures[:3]}"] if failures else []
    if lost:
        problems.append(f"{sum(lost.values())} lifecycle(s) failed: {dict(lost)}")
    if done == 0:
        problems.append("no lifecycle completed")
    # The rate over the generators' own loops (from the start signal to the
    # last lifecycle's end); the CPU over the parent's window around them.
    elapsed = max((o["elapsed_s"] for o in outs), default=0.0) or window
    return {
        "setup": setup,
        "window_s": round(window, 2),
        "loop_s": round(elapsed, 2),
        "lifecycles": done,
        "lifecycles_per_s": round(done / elapsed, 2),
        "failed": dict(lost),
        "failed_ids": failed_ids,
        "error_frames": dict(errors),
        "steps_ms": {k: h.summary() for k, h in hists.items()},
        "cpu_s": {k: round(cpu1.get(k, 0.0) - cpu0.get(k, 0.0), 2) for k in cpu1},
        "server_cpu_ms_per_lifecycle": round(1000 * server_cpu / done, 2) if done else None,
        "redis_cpu_share": round(redis_cpu / window, 3),
        "problems": problems,
        "_hists": hists,
    }


def human(rep: dict[str, Any]) -> str:
    cfg = rep["config"]
    lines = [
        f"lifecycle: {cfg['clients']} clients, {cfg['therapists']} consoles, "
        f"{cfg['servers']} servers, {cfg['generators']} generators, {cfg['duration_s']} s, "
        f"on {cfg.get('database', 'sqlite')}",
        f"  {rep.get('lifecycles')} lifecycles, {rep.get('lifecycles_per_s')}/s; server CPU "
        f"{rep.get('server_cpu_ms_per_lifecycle')} ms per lifecycle; Redis CPU share "
        f"{rep.get('redis_cpu_share')}",
        *(
            f"  {k:14s} p50 {v['p50']} p99 {v['p99']} max {v['max']} ms (n={v['count']})"
            for k, v in rep.get("steps_ms", {}).items()
        ),
        "result: OK"
        if rep["ok"]
        else "result: FAILED\n" + "\n".join(f"  - {p}" for p in rep["problems"]),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    a = _args(argv)
    raise_nofile(4 * (a.therapists + a.clients) + 1024)
    workdir = Path(tempfile.mkdtemp(prefix="qc-lifecycle-"))
    made: str | None = None
    database_url = a.database_url
    if a.postgres:
        try:
            made, database_url = _pg.create(a.postgres)
        except Exception as exc:
            print(f"lifecycle: no PostgreSQL database: {type(exc).__name__}: {exc}")
            return 2
    backend = "sqlite" if database_url is None else "postgresql"
    env = [*RATE_ENV, *([("DISPATCH_DATABASE_URL", database_url)] if database_url else [])]
    stack = Stack(a.servers, workdir, env=env)
    rep: dict[str, Any] = {}
    error = None
    try:
        rep = run(a, stack, secrets.token_hex(3))
    except (Exception, KeyboardInterrupt) as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        stopped = stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        if made is not None:
            _pg.drop(a.postgres, made)
    hists: dict[str, Hist] = rep.pop("_hists", {})
    problems = rep.pop("problems", [])
    if error:
        problems.insert(0, f"aborted: {error}")
    args = list(sys.argv[1:] if argv is None else argv)
    report = {
        "scenario": "lifecycle",
        "command": " ".join(["python -m loadtest.lifecycle", *args]),
        "config": {
            "clients": a.clients,
            "therapists": a.therapists,
            "servers": a.servers,
            "generators": a.generators,
            "duration_s": a.duration,
            "database": backend,
            "server_env": dict(RATE_ENV),
        },
        "ok": not problems,
        "problems": problems,
        **rep,
        **stopped,
    }
    print(human(report), flush=True)
    if a.out is not None:
        shown: dict[str, Hist] = {
            k: hists[k] for k in ("new", "claim", "offer", "accept", "end") if k in hists
        }
        report["plot"] = str(plot(a.out.with_suffix(".png"), "lifecycle: step latency", shown))
        write_report(a.out, report)
    return 2 if error else (0 if report["ok"] else 1)


if __name__ == "__main__":
    sys.exit(main())
