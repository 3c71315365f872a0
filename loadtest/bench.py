"""The standard benchmark set (``make bench``) and its verdict on issue #16's targets.

    python -m loadtest.bench [--quick] [--artifacts DIR] [--docs docs/benchmarks.md]
                             [--only fanout-1000,race,...]

Runs each scenario in its own process (fan-out to 1000 and to 2000 consoles,
each with the bare websockets + Redis floor in the same invocation; the claim
race; sustained lifecycles; idle consoles; scale-out 2 -> 3 servers), keeps
their JSON and PNG in ``--artifacts``, prints every target with its measured
value or ratio and whether it holds, and with ``--docs`` writes that table into
the file between the ``bench:begin`` / ``bench:end`` marker comments (a rerun
replaces it). ``--quick`` runs every scenario at a tiny size, to try the
harness; its numbers mean nothing. Exit 0 when every scenario ran and lost
nothing, whether or not the targets hold (they are goals, not checks).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from loadtest._pg import DEFAULT_ADMIN_URL, reachable

BEGIN: Final = "<!-- bench:begin (written by `make bench`: python -m loadtest.bench) -->"
END: Final = "<!-- bench:end -->"


def _fanout(consoles: int) -> tuple[str, list[str], list[str]]:
    """The fan-out scenario to ``consoles`` (quick: a fiftieth of them)."""
    common = ["--servers", "2", "--floor"]
    return (
        "fanout",
        ["--consoles", str(consoles), "--requests", "50", "--interval", "0.3", *common],
        ["--consoles", str(consoles // 50), "--requests", "5", "--interval", "0.1", *common],
    )


#: The lifecycle scenario: on SQLite, and the same on PostgreSQL.
_LIFECYCLE: Final = (
    "lifecycle",
    ["--clients", "40", "--therapists", "100", "--generators", "2", "--duration", "90"],
    ["--clients", "4", "--therapists", "10", "--generators", "2", "--duration", "5"],
)

#: name -> (module, standard arguments, quick arguments)
SCENARIOS: Final[dict[str, tuple[str, list[str], list[str]]]] = {
    "fanout-1000": _fanout(1000),
    "fanout-2000": _fanout(2000),
    "race": (
        "race",
        ["--therapists", "100", "--servers", "2", "--rounds", "30"],
        ["--therapists", "10", "--servers", "2", "--rounds", "3"],
    ),
    "lifecycle": _LIFECYCLE,
    # The same on PostgreSQL (what several servers run on in production), when
    # one is reachable at LOADTEST_POSTGRES (see loadtest._pg); else not run.
    "lifecycle-pg": _LIFECYCLE,
    "idle": (
        "idle",
        ["--consoles", "2000", "--servers", "2"],
        ["--consoles", "20", "--servers", "2"],
    ),
    "scaleout": (
        "scaleout",
        ["--consoles", "1500", "--broadcasts", "10", "--servers", "2,3"],
        ["--consoles", "30", "--broadcasts", "3", "--servers", "2,3"],
    ),
}
TIMEOUT_S: Final = 1200.0
FANOUT_LIMIT: Final = 1.25
MEMORY_LIMIT_KIB: Final = 20.0
CLAIM_LIMIT: Final = 2.0
RATE_TARGET: Final = 200.0
STEP_LIMIT_MS: Final = 100.0
CPU_LIMIT_MS: Final = 5.0
FLAT_LIMIT: Final = 1.25
REDIS_LIMIT: Final = 0.5
STEPS: Final = ("post", "new", "claim", "offer", "accept", "end")


def run_scenario(name: str, quick: bool, artifacts: Path) -> dict[str, Any]:
    """Run one scenario as ``python -m loadtest.<module>``; its JSON report."""
    module, standard, tiny = SCENARIOS[name]
    out = artifacts / f"bench-{name}.json"
    out.unlink(missing_ok=True)
    extra: list[str] = []
    if name == "lifecycle-pg":
        admin = os.environ.get("LOADTEST_POSTGRES", DEFAULT_ADMIN_URL)
        why = reachable(admin)
        if why is not None:
            print(f"\n== {name}: not run, no PostgreSQL at LOADTEST_POSTGRES: {why}", flush=True)
            return {"ok": True, "skipped": f"no PostgreSQL reachable ({why})"}
        extra = ["--postgres", admin]
    argv = [sys.executable, "-m", f"loadtest.{module}", *(tiny if quick else standard), *extra]
    argv += ["--out", str(out)]
    print(f"\n== {name}: {' '.join(argv[1:])}", flush=True)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, timeout=TIMEOUT_S, check=False)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        code = None
    took = round(time.monotonic() - t0, 1)
    if not out.exists():
        return {"ok": False, "problems": [f"no report (exit {code})"], "_exit": code, "_s": took}
    report: dict[str, Any] = json.loads(out.read_text())
    report["_exit"], report["_s"] = code, took
    return report


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.2f}{unit}"
    return f"{v}{unit}"


def _holds(value: float | None, limit: float, at_most: bool = True) -> str:
    if value is None:
        return "n/a"
    return "yes" if (value <= limit if at_most else value >= limit) else "no"


def targets(reports: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """Rows (target, measured, limit, holds) for every target of issue #16."""
    rows: list[tuple[str, str, str, str]] = []
    for name in ("fanout-1000", "fanout-2000"):
        r = reports.get(name)
        if r is None:
            continue
        n = r.get("config", {}).get("consoles", "?")
        ratios, floor = r.get("ratios", {}), r.get("floor", {})
        new = r.get("request_new", {})
        last = new.get("last_console_after_created_ms", {}).get("p50")
        f_last = floor.get("last_console_ms", {}).get("median")
        lost = (new.get("lost") or 0) + (r.get("request_gone", {}).get("lost") or 0)
        rows.append(
            (
                f"Fan-out to {n}: time to the last console / floor (median over requests)",
                f"{_fmt(ratios.get('last_console'))}x ({_fmt(last)} / {_fmt(f_last)} ms)",
                f"<= {FANOUT_LIMIT}x",
                _holds(ratios.get("last_console"), FANOUT_LIMIT),
            )
        )
        p99 = new.get("latency_after_created_ms", {}).get("p99")
        rows.append(
            (
                f"Fan-out to {n}: delivery p99 / floor (reported)",
                f"{_fmt(ratios.get('delivery_p99'))}x ({_fmt(p99)} / "
                f"{_fmt(floor.get('delivery_ms', {}).get('p99'))} ms)",
                "-",
                "-",
            )
        )
        rows.append((f"Fan-out to {n}: nothing lost", f"{lost} lost", "0", _holds(lost, 0)))
    idle = reports.get("idle")
    if idle is not None:
        kib = idle.get("kib_per_console_all")
        rows.append(
            (
                f"Memory: server RSS per idle console ({idle.get('consoles')} consoles)",
                f"{_fmt(kib)} KiB",
                f"<= {MEMORY_LIMIT_KIB:.0f} KiB",
                _holds(kib, MEMORY_LIMIT_KIB),
            )
        )
    for name in ("fanout-1000", "fanout-2000"):
        r = reports.get(name)
        if r is not None and r.get("ratios", {}).get("kib_per_console") is not None:
            rows.append(
                (
                    f"Memory while fanning out ({r['config']['consoles']}): per console, / floor",
                    f"{_fmt(r['memory'].get('kib_per_console_all'))} KiB "
                    f"({_fmt(r['ratios']['kib_per_console'])}x the floor)",
                    "-",
                    "-",
                )
            )
    race = reports.get("race")
    if race is not None:
        lat = race.get("latency_ms", {})
        ratio = race.get("ratio_claim_p99_to_ping_p99")
        rows.append(
            (
                f"Claims: p99 of {race['config']['therapists']} racing claims / p99 of pings",
                f"{_fmt(ratio)}x ({_fmt(lat.get('claim', {}).get('p99'))} / "
                f"{_fmt(lat.get('ping', {}).get('p99'))} ms)",
                f"<= {CLAIM_LIMIT}x",
                _holds(ratio, CLAIM_LIMIT),
            )
        )
        one = race.get("winners_per_round", {}) == {"1": race.get("rounds")}
        rows.append(
            (
                "Claims: exactly one winner per round",
                f"winners per round {race.get('winners_per_round')}",
                f"{race.get('rounds')} x 1",
                "yes" if one else "no",
            )
        )
        rows.append(
            (
                "Claims: losers p99 vs winner p99 (reported)",
                f"{_fmt(lat.get('claim_losers', {}).get('p99'))} / "
                f"{_fmt(lat.get('claim_winner', {}).get('p99'))} ms",
                "-",
                "-",
            )
        )
    for name, on in (("lifecycle", "SQLite"), ("lifecycle-pg", "PostgreSQL")):
        lc = reports.get(name)
        if lc is None or lc.get("skipped"):
            if lc is not None:
                rows.append((f"Sustained on {on}", f"not run: {lc['skipped']}", "-", "-"))
            continue
        rows += _sustained(lc, on)
    so = reports.get("scaleout")
    if so is not None:
        per = so.get("per_process", [])
        ratios = so.get("ratios_last_to_first", {})
        shown = "; ".join(
            f"{p['servers']} servers: {p['consoles_per_process']} consoles/process, "
            f"{_fmt(p['kib_per_console'])} KiB/console, "
            f"{_fmt(p['cpu_ms_per_1000_deliveries'])} CPU ms/1000 deliveries"
            for p in per
        )
        for key, label, detail in (
            ("kib_per_console", "memory", f" ({shown})"),
            ("cpu_per_delivery", "CPU per delivery", ""),
        ):
            rows.append(
                (
                    f"Scale-out: per-console {label} in each process, last / first (flat)",
                    f"{_fmt(ratios.get(key))}x{detail}",
                    f"<= {FLAT_LIMIT}x",
                    _holds(ratios.get(key), FLAT_LIMIT),
                )
            )
    return rows


def _sustained(lc: dict[str, Any], on: str) -> list[tuple[str, str, str, str]]:
    """The rows of one lifecycle run (``on``: its database)."""
    rows: list[tuple[str, str, str, str]] = []
    rate = lc.get("lifecycles_per_s")
    rows.append(
        (
            f"Sustained ({on}): lifecycles/s ({lc['config']['servers']} servers, "
            f"{lc['config']['therapists']} consoles)",
            _fmt(rate),
            f">= {RATE_TARGET:.0f}",
            _holds(rate, RATE_TARGET, at_most=False),
        )
    )
    steps = lc.get("steps_ms", {})
    worst = max(
        ((steps[s]["p99"], s) for s in STEPS if steps.get(s, {}).get("p99") is not None),
        default=(None, "-"),
    )
    detail = ", ".join(f"{s} {_fmt(steps.get(s, {}).get('p99'))}" for s in STEPS)
    rows.append(
        (
            f"Sustained ({on}): p99 of each step (ms)",
            f"worst {worst[1]} {_fmt(worst[0])} ({detail})",
            f"<= {STEP_LIMIT_MS:.0f} ms",
            _holds(worst[0], STEP_LIMIT_MS),
        )
    )
    cpu = lc.get("server_cpu_ms_per_lifecycle")
    rows.append(
        (
            f"Sustained ({on}): server CPU per lifecycle",
            f"{_fmt(cpu)} ms",
            f"<= {CPU_LIMIT_MS:.0f} ms",
            _holds(cpu, CPU_LIMIT_MS),
        )
    )
    failed = sum((lc.get("failed") or {}).values())
    rows.append((f"Sustained ({on}): nothing lost", f"{failed} failed", "0", _holds(failed, 0)))
    share = lc.get("redis_cpu_share")
    rows.append(
        (
            f"Scale-out: Redis CPU at the sustained rate reached on {on} ({_fmt(rate)}/s)",
            f"{_fmt(None if share is None else 100 * share)} %",
            f"< {100 * REDIS_LIMIT:.0f} %",
            _holds(share, REDIS_LIMIT),
        )
    )
    return rows


def table(rows: list[tuple[str, str, str, str]]) -> str:
    lines = ["| target | measured | goal | holds |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def _commit(docs: Path | None = None) -> str:
    """The commit measured, and whether the tree differed from it (the table's
    own file, ``docs``, does not count: a rerun rewrites it)."""
    skip = [f":(exclude){docs}"] if docs is not None else []
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *skip],
            capture_output=True,
            text=True,
            check=False,
        )
        return out.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")
    except OSError:
        return "?"


def write_docs(path: Path, block: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start, end = text.find(BEGIN), text.find(END)
    body = f"{BEGIN}\n{block}\n{END}"
    if start >= 0 and end > start:
        text = text[:start] + body + text[end + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    path.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: tries the harness")
    p.add_argument("--artifacts", type=Path, default=Path("artifacts/bench"))
    p.add_argument("--docs", type=Path, help="write the table here, between the markers")
    p.add_argument("--only", help="comma-separated scenarios: " + ",".join(SCENARIOS))
    a = p.parse_args(argv)
    names = list(SCENARIOS) if not a.only else a.only.split(",")
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios: {sorted(unknown)}")
    a.artifacts.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    reports = {name: run_scenario(name, a.quick, a.artifacts) for name in names}
    rows = targets(reports)
    problems = [
        f"{name}: {x}"
        for name, r in reports.items()
        for x in (r.get("problems") or ([] if r.get("ok") else ["failed"]))
    ]
    load = os.getloadavg()
    header = (
        f"Run {started:%Y-%m-%d %H:%M} UTC, commit {_commit(a.docs)}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load average after the run "
        f"{load[0]:.1f}; {'QUICK sizes (meaningless numbers)' if a.quick else 'standard sizes'}; "
        f"took {time.monotonic() - t0:.0f} s. Artifacts: `{a.artifacts}/bench-*.json` and `.png`."
    )
    scenarios = "\n".join(
        f"- `{r.get('command', name)}`: {'ok' if r.get('ok') else 'PROBLEMS'} ({r.get('_s')} s)"
        for name, r in reports.items()
    )
    block = f"{header}\n\n{table(rows)}\n\nScenarios of this run:\n\n{scenarios}\n"
    if problems:
        block += "\nProblems:\n\n" + "\n".join(f"- {x}" for x in problems[:20]) + "\n"
    print("\n" + block, flush=True)
    (a.artifacts / "bench-summary.md").write_text(block)
    if a.docs is not None:
        write_docs(a.docs, block)
        print(f"written into {a.docs}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
