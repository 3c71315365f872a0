"""Claim race: many therapists on several servers claim one request at once.

    python -m loadtest.race [--therapists 100] [--servers 2] [--rounds 20] [--out FILE.json]

Each round: a client creates a request (``POST /v1/requests``); once every
therapist console has its ``request.new``, all of them send ``ping`` at once
(the round trip of the same sockets, measured in the same run), then all send
``claim`` at once. Exactly one must get ``claim.ok``, every other ``taken``.
The client then cancels it (the winner gets ``claim.cancelled``) and the next
round starts. Reported: claim answer latency (all, winner, losers) and ping
latency from HDR histograms, the ratio claim p99 / ping p99 (issue #16: at
most 2), winners per round. Exit 0 when every round had exactly one winner and
nothing was lost, 1 otherwise, 2 when the run could not be set up.
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
from typing import Any

from loadtest._hist import Hist, plot, progress
from loadtest._peer import Peer, close_all, notes_is, open_all
from loadtest._stack import LANGUAGE, REGION, Stack, raise_nofile, run_async, write_report

TIMEOUT_S = 15.0


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.race", description=__doc__.split("\n")[0])
    p.add_argument("--therapists", type=int, default=100)
    p.add_argument("--servers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--out", type=Path)
    p.add_argument("--deadline", type=float, default=600.0)
    a = p.parse_args(argv)
    if not (2 <= a.therapists <= 1000 and 1 <= a.servers <= 8 and 1 <= a.rounds <= 500):
        p.error("--therapists 2..1000, --servers 1..8, --rounds 1..500")
    if not 0 < a.deadline <= 3600:
        p.error("--deadline must be in (0, 3600]")
    return a


async def _burst(
    peers: Sequence[Peer], frame: dict[str, Any]
) -> list[tuple[dict[str, Any], float] | None]:
    """Send ``frame`` on every socket at once; each answer and its latency (s)."""
    pending = [p.expect_ref() for p in peers]
    sent = await asyncio.gather(
        *(p.send_ref(frame, ref) for p, (ref, _) in zip(peers, pending, strict=True))
    )
    answers = await asyncio.gather(
        *(asyncio.wait_for(fut, TIMEOUT_S) for _, fut in pending), return_exceptions=True
    )
    out: list[tuple[dict[str, Any], float] | None] = []
    for ans, t0 in zip(answers, sent, strict=True):
        out.append(None if isinstance(ans, BaseException) else (ans[0], ans[1] - t0))
    return out


class Race:
    def __init__(self, a: argparse.Namespace, workdir: Path) -> None:
        self.a = a
        self.stack = Stack(a.servers, workdir)
        self.run_id = secrets.token_hex(3)
        self.h = {"claim": Hist(), "claim_winner": Hist(), "claim_losers": Hist(), "ping": Hist()}
        self.winners: list[int] = []
        self.answers: Counter[str] = Counter()
        self.lost: Counter[str] = Counter()
        self.problems: list[str] = []
        self.setup: dict[str, float] = {}

    async def main(self) -> None:
        a, st = self.a, self.stack
        peers: list[Peer] = []
        t0 = time.monotonic()
        try:
            st.start()
            async with st.client() as http:
                await st.wait_ready(http)
                tids = [f"lt-rt-{i:04d}" for i in range(a.therapists)]
                clients = [f"lt-rc-{self.run_id}-{r:04d}" for r in range(a.rounds)]
                await st.put_profiles(http, tids)
                await st.fund(http, clients)
                peers = [
                    Peer(t, "therapist", st.ws_url(i % a.servers), st.token("therapist", t))
                    for i, t in enumerate(tids)
                ]
                failures = await open_all(peers, 60.0, available=True)
                if failures:
                    raise RuntimeError(f"{len(failures)} consoles failed: {failures[:3]}")
                self.setup["setup_s"] = time.monotonic() - t0
                with progress(a.rounds, "race rounds") as bar:
                    for r, cid in enumerate(clients):
                        await self.round(http, peers, r, cid)
                        bar.update(1)
        finally:
            await close_all(peers)

    async def round(self, http: Any, peers: list[Peer], r: int, client_id: str) -> None:
        st = self.stack
        marker = f"lt-race-{self.run_id}-{r:04d}"
        news = [p.waiter("request.new", notes_is(marker)) for p in peers]
        body = {"region": REGION, "language": LANGUAGE, "topics": ["anxiety"], "notes": marker}
        resp = await http.post(
            f"{st.base(r % st.n)}/v1/requests", json=body, headers=st.auth("client", client_id)
        )
        if resp.status_code != 201:
            self.problems.append(f"round {r}: POST {resp.status_code} {resp.text[:200]}")
            return
        rid = resp.json()["request"]["id"]
        done = await asyncio.gather(
            *(asyncio.wait_for(f, TIMEOUT_S) for f in news), return_exceptions=True
        )
        missing = sum(1 for d in done if isinstance(d, BaseException))
        if missing:
            self.lost["request.new"] += missing
        for p, f in zip(peers, news, strict=True):
            p.drop(f)

        for ans in await _burst(peers, {"type": "ping"}):
            if ans is None:
                self.lost["pong"] += 1
            else:
                self.h["ping"].record_s(ans[1])

        results = await _burst(peers, {"type": "claim", "request_id": rid})
        winners = [
            i
            for i, ans in enumerate(results)
            if ans is not None and ans[0].get("type") == "claim.ok"
        ]
        self.winners.append(len(winners))
        for ans in results:
            if ans is None:
                self.lost["claim answer"] += 1
                continue
            frame, latency = ans
            kind = str(frame.get("type"))
            self.answers[kind if kind != "error" else f"error:{frame.get('code')}"] += 1
            self.h["claim"].record_s(latency)
            self.h["claim_winner" if kind == "claim.ok" else "claim_losers"].record_s(latency)

        freed = [
            peers[i].waiter("claim.cancelled", lambda f: f.get("request_id") == rid)
            for i in winners
        ]
        resp = await http.delete(
            f"{st.base(r % st.n)}/v1/requests/{rid}", headers=st.auth("client", client_id)
        )
        if resp.status_code != 200:
            self.problems.append(f"round {r}: DELETE {resp.status_code} {resp.text[:200]}")
        done = await asyncio.gather(
            *(asyncio.wait_for(f, TIMEOUT_S) for f in freed), return_exceptions=True
        )
        self.lost["claim.cancelled"] += sum(1 for d in done if isinstance(d, BaseException))

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
        return {
            "scenario": "race",
            "command": command,
            "config": {"therapists": a.therapists, "servers": a.servers, "rounds": a.rounds},
            "ok": not problems,
            "problems": problems,
            "rounds": len(self.winners),
            "winners_per_round": dict(Counter(str(n) for n in self.winners)),
            "answers": dict(self.answers),
            "lost": lost,
            "latency_ms": {k: h.summary() for k, h in self.h.items()},
            "ratio_claim_p99_to_ping_p99": ratio,
            "setup_s": round(self.setup.get("setup_s", 0.0), 2),
            **stopped,
        }


def human(rep: dict[str, Any]) -> str:
    lat = rep["latency_ms"]
    lines = [
        f"race: {rep['config']['therapists']} therapists x {rep['config']['servers']} servers, "
        f"{rep['rounds']} rounds; winners per round {rep['winners_per_round']}",
        *(
            f"  {k:13s} p50 {v['p50']} p90 {v['p90']} p99 {v['p99']} max {v['max']} ms "
            f"(n={v['count']})"
            for k, v in lat.items()
        ),
        f"  claim p99 / ping p99 = {rep['ratio_claim_p99_to_ping_p99']}",
        "result: OK"
        if rep["ok"]
        else "result: FAILED\n" + "\n".join(f"  - {p}" for p in rep["problems"]),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    a = _args(argv)
    raise_nofile(4 * a.therapists + 1024)
    workdir = Path(tempfile.mkdtemp(prefix="qc-race-"))
    race = Race(a, workdir)
    error = None

    async def bounded() -> None:
        async with asyncio.timeout(a.deadline):
            await race.main()

    try:
        run_async(bounded, a.deadline, race.stack.kill)
    except (Exception, KeyboardInterrupt) as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
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
