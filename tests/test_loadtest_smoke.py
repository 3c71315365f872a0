"""Self-checks of the load scripts (``loadtest/``) at tiny sizes.

Each runs ``python -m loadtest.<scenario>`` for real: its own redis-server,
two or three ``dispatch serve`` processes (or bare floor servers), a handful
of consoles. Only the shape of the JSON report, delivery and correctness are
asserted (nothing lost, one winner per race); speed is never asserted in tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
# loadtest/ is run from the checkout and is not part of the installed package.
sys.path.insert(0, str(ROOT))
from loadtest import bench  # noqa: E402 (importable only once ROOT is on the path)
from loadtest._fleet import split  # noqa: E402 (likewise)
from loadtest._hist import Hist  # noqa: E402 (likewise)

CONSOLES = 20
REQUESTS = 5


def _run(module: str, args: list[str], out: Path, timeout_s: float = 80) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", f"loadtest.{module}", *args, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    detail = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    assert out.exists(), detail
    report: dict[str, Any] = json.loads(out.read_text())
    assert report.get("problems", []) == [], detail
    assert report["ok"] is True, detail
    assert proc.returncode == 0, detail
    assert out.with_suffix(".png").exists(), detail
    return report


def fanout_tiny(
    consoles: int = CONSOLES, requests: int = REQUESTS, interval: str = "0.1"
) -> list[str]:
    """The fan-out's arguments at a tiny size (what each fan-out smoke test adds to)."""
    return [
        *("--consoles", str(consoles), "--servers", "2", "--requests", str(requests)),
        *("--interval", interval, "--settle", "10", "--connect-timeout", "15"),
        *("--deadline", "45"),
    ]


FANOUT_TINY = fanout_tiny()


def test_consoles_split_round_robin_over_client_processes() -> None:
    assert split(7, 3) == [[0, 3, 6], [1, 4], [2, 5]]
    # Never an empty share: fewer consoles than processes uses fewer processes.
    assert split(2, 5) == [[0], [1]]
    assert split(4, 1) == [[0, 1, 2, 3]]


@pytest.mark.integration
def test_fanout_smoke_loses_nothing(tmp_path: Path) -> None:
    report = _run("fanout", FANOUT_TINY, tmp_path / "fanout.json", timeout_s=55)

    assert report["connect"]["ready"] == CONSOLES
    assert report["requests"]["created"] == REQUESTS
    assert report["requests"]["cancelled"] == REQUESTS
    new, gone = report["request_new"], report["request_gone"]
    assert new["expected"] == new["received"] == CONSOLES * REQUESTS
    assert gone["expected"] == gone["received"] == CONSOLES * REQUESTS
    assert new["lost"] == gone["lost"] == 0
    assert new["duplicates"] == gone["duplicates"] == 0
    assert gone["reasons"] == {"cancelled": CONSOLES * REQUESTS}
    assert report["closed_by_server"]["count"] == 0
    assert report["http_errors"] == []
    # The consoles were driven from two client processes, which said what they used.
    assert report["config"]["client_procs"] == 2
    assert report["cpu_s"]["client_workers"] > 0
    # Both servers carried consoles and fanned out.
    assert len(report["server_metrics"]) == 2
    for metrics in report["server_metrics"]:
        assert metrics['dispatch_ws_frames_out_total{type="request.new"}'] == (
            CONSOLES // 2 * REQUESTS
        )


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_fanout_smoke_with_an_offer_to_a_few(tmp_path: Path) -> None:
    """``--offer-fanout 3``: each request reaches 3 of the consoles, counted
    against those 3 (the other consoles are not losses), and the report says
    what a request cost."""
    fanout = 3
    # Three client processes: 20 consoles do not split evenly (7, 7, 6).
    args = [*FANOUT_TINY, "--offer-fanout", str(fanout), "--client-procs", "3"]
    report = _run("fanout", args, tmp_path / "fanout-few.json", timeout_s=55)
    assert report["config"]["offer_fanout"] == fanout
    assert report["config"]["client_procs"] == 3
    assert report["config"]["server_env"]["DISPATCH_OFFER_FANOUT"] == str(fanout)
    new, gone = report["request_new"], report["request_gone"]
    assert new["expected"] == new["received"] == fanout * REQUESTS
    assert new["consoles_per_request"] == {"expected": fanout, "min": fanout, "max": fanout}
    assert new["lost"] == new["beyond_offer"] == new["unexpected"] == 0
    assert gone["expected"] == gone["received"] == fanout * REQUESTS
    assert gone["lost"] == gone["unexpected"] == 0
    sent = sum(
        m['dispatch_ws_frames_out_total{type="request.new"}'] for m in report["server_metrics"]
    )
    assert sent == fanout * REQUESTS
    per = report["per_request"]
    assert per["request_new_frames"] == per["request_gone_frames"] == fanout
    assert per["frames"] == 2 * fanout
    assert per["server_cpu_ms"] is not None and per["server_cpu_ms"] >= 0


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_floor_smoke_loses_nothing(tmp_path: Path) -> None:
    report = _run(
        "floor",
        [
            *("--consoles", "20", "--servers", "2", "--broadcasts", "5", "--interval", "0.05"),
            *("--client-procs", "3"),
        ],
        tmp_path / "floor.json",
    )
    assert report["client_procs"] == 3
    assert report["client_workers_cpu_s"] > 0
    assert report["connected"] == 20
    assert report["expected"] == report["received"] == 100
    assert report["lost"] == report["duplicates"] == 0
    assert report["delivery_ms"]["count"] == 100
    assert report["last_console_ms"]["median"] is not None
    assert set(report["kib_per_console"]) == {"floor0", "floor1"}


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_fanout_with_floor_reports_ratios(tmp_path: Path) -> None:
    report = _run("fanout", [*fanout_tiny(10, 3, "0.05"), "--floor"], tmp_path / "fanout.json")
    assert report["request_new"]["lost"] == 0
    assert report["floor"]["lost"] == 0
    assert report["floor"]["received"] == 30
    assert set(report["ratios"]) == {"last_console", "delivery_p99", "kib_per_console"}
    assert report["ratios"]["last_console"] is not None
    assert set(report["memory"]["kib_per_console"]) == {"server0", "server1"}


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_race_smoke_one_winner_each_round(tmp_path: Path) -> None:
    therapists, rounds = 7, 3
    # Three client processes: 7 consoles do not split evenly (3, 2, 2).
    args = ["--therapists", str(therapists), "--servers", "2", "--rounds", str(rounds)]
    report = _run("race", [*args, "--client-procs", "3"], tmp_path / "race.json")
    assert report["config"]["client_procs"] == 3
    assert report["client_workers_cpu_s"] > 0
    assert report["rounds"] == rounds
    # The bursts were split over the processes, and still one claim won each round.
    assert report["winners_per_round"] == {"1": rounds}
    assert report["answers"] == {"claim.ok": rounds, "error:taken": (therapists - 1) * rounds}
    assert report["lost"] == {}
    assert report["latency_ms"]["claim"]["count"] == therapists * rounds
    assert report["latency_ms"]["ping"]["count"] == therapists * rounds
    assert report["ratio_claim_p99_to_ping_p99"] is not None


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_lifecycle_smoke_completes_every_lifecycle(tmp_path: Path) -> None:
    report = _run(
        "lifecycle",
        ["--clients", "2", "--therapists", "4", "--generators", "2", "--duration", "3"],
        tmp_path / "lifecycle.json",
    )
    assert report["lifecycles"] > 0
    assert report["failed"] == {}
    steps = report["steps_ms"]
    for step in ("post", "new", "claim", "offer", "accept", "end", "lifecycle"):
        assert steps[step]["count"] == report["lifecycles"], step
    assert report["server_cpu_ms_per_lifecycle"] is not None
    assert report["redis_cpu_share"] >= 0


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_lifecycle_smoke_on_a_postgres_database_of_its_own(
    tmp_path: Path, postgres_server_url: str
) -> None:
    # The run's PostgreSQL, through its maintenance database: the scenario
    # makes a database of its own there and drops it afterwards.
    admin = postgres_server_url.replace("postgresql+asyncpg://", "postgresql://").rsplit("/", 1)[0]
    admin += "/postgres"
    tiny = ["--clients", "2", "--therapists", "4", "--generators", "2", "--duration", "3"]
    report = _run(
        "lifecycle",
        [*tiny, "--postgres", admin],
        tmp_path / "lifecycle-pg.json",
    )
    assert report["config"]["database"] == "postgresql"
    assert report["lifecycles"] > 0 and report["failed"] == {}
    names = subprocess.run(
        [sys.executable, "-c", _LIST_LT_DATABASES, admin],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    assert names == []  # dropped


_LIST_LT_DATABASES = """
import asyncio, sys, asyncpg
async def main():
    conn = await asyncpg.connect(sys.argv[1])
    rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'qc_lt_%'")
    await conn.close()
    print(" ".join(r["datname"] for r in rows))
asyncio.run(main())
"""


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_idle_smoke_measures_memory(tmp_path: Path) -> None:
    report = _run(
        "idle",
        ["--consoles", "10", "--servers", "2", "--broadcasts", "2", "--client-procs", "3"],
        tmp_path / "idle.json",
    )
    assert report["config"]["client_procs"] == 3
    assert report["client_workers_cpu_s"] > 0
    assert report["connected"] == 10
    assert set(report["kib_per_console"]) == {"server0", "server1"}
    assert report["broadcasts"]["lost"] == 0
    assert report["broadcasts"]["delivery_ms"]["count"] == 20


@pytest.mark.integration
@pytest.mark.timeout(150)
def test_scaleout_smoke_compares_server_counts(tmp_path: Path) -> None:
    report = _run(
        "scaleout",
        ["--consoles", "12", "--broadcasts", "2", "--servers", "2,3"],
        tmp_path / "scaleout.json",
        timeout_s=140,
    )
    assert [p["servers"] for p in report["per_process"]] == [2, 3]
    assert [p["consoles_per_process"] for p in report["per_process"]] == [6.0, 4.0]
    assert set(report["ratios_last_to_first"]) == {"kib_per_console", "cpu_per_delivery"}


# -- pure parts --------------------------------------------------------------------------------
def test_histograms_merge_across_processes() -> None:
    a, b = Hist().extend_s([0.001, 0.002]), Hist().extend_s([0.004, -0.5])
    merged = Hist.decode(a.encode())
    merged.add(Hist.decode(b.encode()))
    s = merged.summary()
    assert s["count"] == 4
    assert s["negative"] == 1
    assert s["max"] == pytest.approx(4.0, rel=0.01)
    assert s["min"] == 0.0


def test_bench_table_says_whether_each_target_holds(tmp_path: Path) -> None:
    reports = {
        "race": {
            "config": {"therapists": 100},
            "rounds": 2,
            "winners_per_round": {"1": 2},
            "latency_ms": {"claim": {"p99": 30.0}, "ping": {"p99": 10.0}},
            "ratio_claim_p99_to_ping_p99": 3.0,
        },
        "idle": {"consoles": 100, "kib_per_console_all": 12.5},
        "lifecycle": {
            "config": {"servers": 2, "therapists": 100},
            "lifecycles_per_s": 210.0,
            "steps_ms": {s: {"p99": 50.0} for s in bench.STEPS},
            "server_cpu_ms_per_lifecycle": 6.0,
            "failed": {},
            "redis_cpu_share": 0.1,
        },
        "lifecycle-pg": {"ok": True, "skipped": "no PostgreSQL reachable (refused)"},
    }
    rows = {r[0]: r for r in bench.targets(reports)}
    assert rows["Sustained (SQLite): lifecycles/s (2 servers, 100 consoles)"][3] == "yes"
    assert rows["Sustained (SQLite): server CPU per lifecycle"][3] == "no"
    assert rows["Sustained (SQLite): p99 of each step (ms)"][3] == "yes"
    assert rows["Sustained on PostgreSQL"][1].startswith("not run: no PostgreSQL")
    claims = rows["Claims: p99 of 100 racing claims / p99 of pings"]
    assert claims[1].startswith("3.00x") and claims[3] == "no"
    assert rows["Claims: exactly one winner per round"][3] == "yes"
    assert rows["Memory: server RSS per idle console (100 consoles)"][3] == "yes"

    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nmethod\n")
    bench.write_docs(docs, "first")
    bench.write_docs(docs, "second")
    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\nmethod\n")
    assert "second" in text and "first" not in text
    assert text.count(bench.BEGIN) == text.count(bench.END) == 1
