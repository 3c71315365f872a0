"""Scale-out: the same consoles on 2, then 3 server processes.

    python -m loadtest.scaleout [--consoles 1500] [--broadcasts 10] [--servers 2,3]
                                [--out FILE.json]

For each server count, :func:`loadtest.idle.measure` connects the same
number of idle consoles (round-robin over the servers), then broadcasts
``--broadcasts`` requests one after another. Per process it reports consoles
held, KiB of RSS per console and server CPU per 1000 ``request.new``
deliveries; across runs, the ratio of each (last / first server count). A
third process adds capacity when the per-console costs stay flat (ratios
near 1: no cost grows with the number of processes), so each process
carries the same number of consoles at the same cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtest._hist import Hist, plot
from loadtest._stack import raise_nofile, write_report
from loadtest.idle import measure, problems_of


def _per_process(m: dict[str, Any]) -> dict[str, Any]:
    kib = list(m.get("kib_per_console", {}).values())
    cpu = list(m.get("broadcasts", {}).get("server_cpu_ms_per_1000_deliveries", {}).values())
    return {
        "servers": m["servers"],
        "consoles_per_process": round(m["consoles"] / m["servers"], 1),
        "kib_per_console": round(statistics.mean(kib), 2) if kib else None,
        "cpu_ms_per_1000_deliveries": round(statistics.mean(cpu), 2) if cpu else None,
        "last_console_median_ms": m.get("broadcasts", {}).get("last_console_median_ms"),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(b / a, 2) if a and b is not None else None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.scaleout", description=__doc__.split("\n")[0]
    )
    p.add_argument("--consoles", type=int, default=1500)
    p.add_argument("--broadcasts", type=int, default=10)
    p.add_argument("--servers", default="2,3", help="server counts to compare (2,3)")
    p.add_argument("--client-procs", type=int, default=2, help="client processes (2)")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    if not 1 <= a.client_procs <= 16:
        p.error("--client-procs 1..16")
    counts = [int(x) for x in a.servers.split(",")]
    if not (
        1 <= a.consoles <= 5000 and 1 <= a.broadcasts <= 100 and all(1 <= c <= 8 for c in counts)
    ):
        p.error("--consoles 1..5000, --broadcasts 1..100, server counts 1..8")
    raise_nofile(2 * a.consoles + 1024)
    runs: list[dict[str, Any]] = []
    hists: dict[str, Hist] = {}
    problems: list[str] = []
    for n in counts:
        hists[f"{n} servers"] = Hist()
        try:
            hist = hists[f"{n} servers"]
            m = measure(a.consoles, n, a.broadcasts, hist, client_procs=a.client_procs)
        except (Exception, KeyboardInterrupt) as exc:
            problems.append(f"{n} servers: aborted: {type(exc).__name__}: {exc}")
            continue
        problems += [f"{n} servers: {x}" for x in problems_of(m)]
        runs.append(m)
    per = [_per_process(m) for m in runs]
    ratios: dict[str, Any] = {}
    if len(per) >= 2:
        first, last = per[0], per[-1]
        ratios = {
            "kib_per_console": _ratio(first["kib_per_console"], last["kib_per_console"]),
            "cpu_per_delivery": _ratio(
                first["cpu_ms_per_1000_deliveries"], last["cpu_ms_per_1000_deliveries"]
            ),
        }
    args = list(sys.argv[1:] if argv is None else argv)
    rep = {
        "scenario": "scaleout",
        "command": " ".join(["python -m loadtest.scaleout", *args]),
        "config": {
            "consoles": a.consoles,
            "broadcasts": a.broadcasts,
            "servers": counts,
            "client_procs": a.client_procs,
        },
        "ok": not problems,
        "problems": problems,
        "per_process": per,
        "ratios_last_to_first": ratios,
        "runs": runs,
    }
    print(f"scaleout: {a.consoles} consoles, {a.broadcasts} broadcasts")
    for row in per:
        print(f"  {row}")
    print(f"  ratios ({counts[-1]} / {counts[0]} servers): {ratios}")
    print(
        "result: OK" if rep["ok"] else "result: FAILED\n" + "\n".join(f"  - {x}" for x in problems)
    )
    if a.out is not None:
        rep["plot"] = str(
            plot(a.out.with_suffix(".png"), "scale-out: request.new after POST", hists)
        )
        write_report(a.out, rep)
    return 0 if rep["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
