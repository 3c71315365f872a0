"""Claim race: many therapists on several servers claim one request at once.

    python -m loadtest.race [--therapists 100] [--servers 2] [--rounds 20]
                            [--client-procs 2] [--out FILE.json]

The therapist consoles are split round-robin over ``--client-procs`` worker
processes (:mod:`loadtest._racer`), so that one client event loop sending and
reading every claim in turn is not what is measured; this process keeps the
HTTP side and steps the workers through each round. Each round: every worker
registers its consoles' ``request.new`` waiters, then a client creates a
request (``POST /v1/requests``); once every console has its ``request.new``,
all of them send ``ping`` at once (the round trip of the same sockets,
measured in the same run), then all send ``claim`` at once: each worker
starts its burst at one instant on the monotonic clock, which every process
shares, chosen by this one a little ahead. Exactly one must get ``claim.ok``,
every other ``taken``. The client then cancels it (the winner's worker waits
for its ``claim.cancelled``) and the next round starts. Reported: claim answer
latency (all, winner, losers) and ping latency from HDR histograms, the ratio
claim p99 / ping p99 (issue #16: at most 2), winners per round, the workers'
own CPU seconds and how late the latest burst started. Exit 0 when every round
had exactly one winner and nothing was lost, 1 otherwise, 2 when the run could
not be set up (or a worker died).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from loadtest._fleet import split
from loadtest._hist import Hist, plot, progress
from loadtest._racer import Job, Racers
from loadtest._stack import LANGUAGE, REGION, Stack, raise_nofile, run_async, write_report

#: How far ahead of now a burst is set to start: time for every worker to be
#: given the command (a queue hop) before the instant comes.
BURST_AHEAD_S: Final = 0.05
#: How long the consoles have to connect and become available.
OPEN_TIMEOUT_S: Final = 60.0


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.race", description=__doc__.split("\n")[0])
    p.add_argument("--therapists", type=int, default=100)
    p.add_argument("--servers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument(
        "--client-procs",
        type=int,
        default=2,
        help="worker processes the consoles are split over (at most one per therapist)",
    )
    p.add_argument("--out", type=Path)
    p.add_argument("--deadline", type=float, default=600.0)
    a = p.parse_args(argv)
    if not (2 <= a.therapists <= 1000 and 1 <= a.servers <= 8 and 1 <= a.rounds <= 500):
        p.error("--therapists 2..1000, --servers 1..8, --rounds 1..500")
    if not 1 <= a.client_procs <= 16:
        p.error("--client-procs must be 1..16")
    if not 0 < a.deadline <= 3600:
        p.error("--deadline must be in (0, 3600]")
    return a


class Race:
    def __init__(self, a: argparse.Namespace, workdir: Path) -> None:
        self.a = a
        self.stack = Stack(a.servers, workdir)
        self.run_id = secrets.token_hex(3)
        self.tids = [f"lt-rt-{i:04d}" for i in range(a.therapists)]
        self.shares = split(a.therapists, a.client_procs)
        self.racers: Racers | None = None
        self.h = {"claim": Hist(), "claim_winner": Hist(), "claim_losers": Hist(), "ping": Hist()}
        self.winners: list[int] = []
        self.answers: Counter[str] = Counter()
        self.lost: Counter[str] = Counter()
        self.problems: list[str] = []
        self.setup: dict[str, float] = {}
        #: The latest any worker started a burst after the instant it was given.
        self.late_s = 0.0

    def jobs(self) -> list[Job]:
        st = self.stack
        return [
            Job(
                worker=w,
                secret=st.secret,
                ports=tuple(st.ports),
                therapists=tuple((i, self.tids[i]) for i in share),
                open_timeout_s=OPEN_TIMEOUT_S,
                # Past the parent's own deadline (and its watchdog's minute):
                # a worker outlives the run only if both failed.
                deadline_s=self.a.deadline + 120.0,
            )
            for w, share in enumerate(self.shares)
        ]

    async def main(self) -> None:
        a, st = self.a, self.stack
        t0 = time.monotonic()
        try:
            st.start()
            async with st.client() as http:
                await st.wait_ready(http)
                clients = [f"lt-rc-{self.run_id}-{r:04d}" for r in range(a.rounds)]
                await st.put_profiles(http, self.tids)
                await st.fund(http, clients)
                self.racers = racers = Racers(self.jobs())
                failures = await racers.start()
                if failures:
                    raise RuntimeError(f"{len(failures)} consoles failed: {failures[:3]}")
                self.setup["setup_s"] = time.monotonic() - t0
                with progress(a.rounds, "race rounds") as bar:
                    for r, cid in enumerate(clients):
                        await self.round(http, racers, r, cid)
                        bar.update(1)
                await racers.close()
        finally:
            self.stop_workers()

    def stop_workers(self) -> None:
        if self.racers is not None:
            self.racers.stop()

    def kill(self) -> None:
        """The watchdog's last resort: every child of the run, now."""
        if self.racers is not None:
            self.racers.kill()
        self.stack.kill()

    def soon(self) -> float:
        return time.monotonic() + BURST_AHEAD_S

    async def round(self, http: Any, racers: Racers, r: int, client_id: str) -> None:
        st = self.stack
        marker = f"lt-race-{self.run_id}-{r:04d}"
        await racers.ask(("arm", r, marker), "armed")
        body = {"region": REGION, "language": LANGUAGE, "topics": ["anxiety"], "notes": marker}
        resp = await http.post(
            f"{st.base(r % st.n)}/v1/requests", json=body, headers=st.auth("client", client_id)
        )
        if resp.status_code != 201:
            self.problems.append(f"round {r}: POST {resp.status_code} {resp.text[:200]}")
            return
        rid = resp.json()["request"]["id"]
        self.lost["request.new"] += sum(await racers.ask(("new", r, rid), "new"))

        for out in await racers.ask(("ping", r, self.soon()), "ping"):
            self.late_s = max(self.late_s, out["late_s"])
            for latency in out["latencies"]:
                if latency is None:
                    self.lost["pong"] += 1
                else:
                    self.h["ping"].record_s(latency)

        winners = 0
        for out in await racers.ask(("claim", r, self.soon(), rid), "claim"):
            self.late_s = max(self.late_s, out["late_s"])
            for ans in out["answers"]:
                if ans is None:
                    self.lost["claim answer"] += 1
                    continue
                kind, latency = ans
                winners += kind == "claim.ok"
                self.answers[kind] += 1
                self.h["claim"].record_s(latency)
                self.h["claim_winner" if kind == "claim.ok" else "claim_losers"].record_s(latency)
        self.winners.append(winners)

        await racers.ask(("expect-cancel", r, rid), "cancel-armed")
        resp = await http.delete(
            f"{st.base(r % st.n)}/v1/requests/{rid}", headers=st.auth("client", client_id)
        )
        if resp.status_code != 200:
            self.problems.append(f"round {r}: DELETE {resp.status_code} {resp.text[:200]}")
        self.lost["claim.cancelled"] += sum(await racers.ask(("cancelled", r), "cancelled"))

    def report(self, command: str, stopped: dict[str, Any]) -> dict[str, Any]:
        a = self.a
        claim, ping = self.h["claim"].pct_ms(99), self.h["ping"].pct_ms(99)
        ratio = round(claim / ping, 2) if claim is not None and ping else None
        bad_rounds = [r for r, n in enumerate(self.winners) if n != 1]
        problems = list(self.problems)
        if len(self.winners) < a.rounds:
            problems.append(f"{a.rounds - len(self.winners)} round(s) did not run")
        if bad_rounds:
            problems.append(f"rounds without exactly one winner: {bad_rounds[:10]}")
        lost = {k: v for k, v in self.lost.items() if v}
        if lost:
            problems.append(f"lost: {lost}")
        unexpected = {k: v for k, v in self.answers.items() if k not in ("claim.ok", "error:taken")}
        if unexpected:
            problems.append(f"unexpected claim answers: {unexpected}")
        cpu = self.racers.cpu_s if self.racers is not None else {}
        return {
            "scenario": "race",
            "command": command,
            "config": {
                "therapists": a.therapists,
                "servers": a.servers,
                "rounds": a.rounds,
                # The processes used: never more than one per therapist.
                "client_procs": len(self.shares),
            },
            "ok": not problems,
            "problems": problems,
            "rounds": len(self.winners),
            "winners_per_round": dict(Counter(str(n) for n in self.winners)),
            "answers": dict(self.answers),
            "lost": lost,
            "latency_ms": {k: h.summary() for k, h in self.h.items()},
            "ratio_claim_p99_to_ping_p99": ratio,
            "setup_s": round(self.setup.get("setup_s", 0.0), 2),
            # Summed over the workers that finished (a dead one sends none).
            "client_workers_cpu_s": round(sum(cpu.values()), 2),
            "burst_late_ms_max": round(1000 * self.late_s, 2),
            **stopped,
        }


def human(rep: dict[str, Any]) -> str:
    lat, cfg = rep["latency_ms"], rep["config"]
    lines = [
        f"race: {cfg['therapists']} therapists x {cfg['servers']} servers from "
        f"{cfg['client_procs']} client processes, {rep['rounds']} rounds; "
        f"winners per round {rep['winners_per_round']}",
        *(
            f"  {k:13s} p50 {v['p50']} p90 {v['p90']} p99 {v['p99']} max {v['max']} ms "
            f"(n={v['count']})"
            for k, v in lat.items()
        ),
        f"  claim p99 / ping p99 = {rep['ratio_claim_p99_to_ping_p99']}; client workers' CPU "
        f"{rep['client_workers_cpu_s']} s; latest burst start {rep['burst_late_ms_max']} ms late",
        "result: OK"
        if rep["ok"]
        else "result: FAILED\n" + "\n".join(f"  - {p}" for p in rep["problems"]),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    a = _args(argv)
    # The servers and the client workers inherit this limit (the workers hold the sockets).
    raise_nofile(4 * a.therapists + 1024)
    workdir = Path(tempfile.mkdtemp(prefix="qc-race-"))
    race = Race(a, workdir)
    error = None

    async def bounded() -> None:
        async with asyncio.timeout(a.deadline):
            await race.main()

    try:
        run_async(bounded, a.deadline, race.kill)
    except (Exception, KeyboardInterrupt) as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        race.stop_workers()
        stopped = race.stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    args = list(sys.argv[1:] if argv is None else argv)
    rep = race.report(" ".join(["python -m loadtest.race", *args]), stopped)
    if error:
        rep["problems"].insert(0, f"aborted: {error}")
        rep["ok"] = False
    print(human(rep), flush=True)
    if a.out is not None:
        rep["plot"] = str(plot(a.out.with_suffix(".png"), "claim race: answer latency", race.h))
        write_report(a.out, rep)
    return 2 if error else (0 if rep["ok"] else 1)


if __name__ == "__main__":
    sys.exit(main())
