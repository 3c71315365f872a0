"""What a fan-out run measured, as a JSON-ready report and a human summary.

Latencies of ``request.new``, each over every delivery (request x console):

- after ``created_at``: from the server's creation time (wall clock, in the
  POST's answer, millisecond precision) to the console's receipt: the
  service's own fan-out latency;
- after the POST was sent: what a client pressing "talk now" waits until a
  therapist sees it;
- after the POST's response: what the brief asked for. The server publishes
  before it answers, so this can be negative (the frame beat the response).

Everything is in milliseconds, as count / min / p50 / p95 / p99 / max / mean
(nearest-rank percentiles).
"""

from __future__ import annotations

import math
import os
import platform
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from loadtest._config import Config
from loadtest._console import Console


@dataclass
class Posted:
    """One request the run created (times on the monotonic clock)."""

    index: int
    marker: str
    client_id: str
    server: int
    sent: float = 0.0
    responded: float | None = None
    status: int | None = None
    request_id: str | None = None
    #: the request's ``created_at`` (the server's wall clock), seconds since the epoch
    created_at: float | None = None
    cancel_sent: float | None = None
    cancel_responded: float | None = None
    cancel_status: int | None = None


@dataclass
class Results:
    """Everything a run recorded, for :func:`build`."""

    cfg: Config
    consoles: list[Console]
    posted: list[Posted]
    #: wall clock minus monotonic clock at the start, to compare arrivals with created_at
    wall_offset: float
    phases: dict[str, float] = field(default_factory=dict)
    settled: dict[str, bool] = field(default_factory=dict)
    http_errors: list[str] = field(default_factory=list)
    wallet: bool | None = None
    pool_after: dict[str, Any] | None = None
    server_metrics: list[dict[str, float]] = field(default_factory=list)
    server_logs: dict[str, Any] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    aborted: str | None = None
    setup_error: str | None = None
    #: servers' RSS before/after connecting, KiB per console (:mod:`loadtest.fanout`)
    memory: dict[str, Any] = field(default_factory=dict)
    #: CPU seconds of each process over the measured phases alone (from the
    #: first POST to the last request.gone settled): the cost of the requests,
    #: without the connect burst
    cpu_window_s: dict[str, float] = field(default_factory=dict)


def recipients(cfg: Config, ready: Sequence[Console], marker: str) -> list[Console]:
    """The consoles a request (by its marker) is for: every available console,
    or with ``--offer-fanout`` those it was offered to, that is those that got
    its ``request.new`` (the offered set is the server's, never on the wire;
    the count is checked against :meth:`Config.offered_per_request`). Its
    ``request.gone`` goes to these alone."""
    if cfg.offer_fanout <= 0:
        return list(ready)
    return [c for c in ready if marker in c.new_at]


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty sequence."""
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary(values: Iterable[float], scale: float = 1000.0) -> dict[str, float | int | None]:
    """count, min, p50, p95, p99, max and mean of ``values`` times ``scale``
    (seconds to milliseconds by default); ``None`` values for an empty series."""
    data = sorted(v * scale for v in values)
    if not data:
        return {"count": 0, **dict.fromkeys(("min", "p50", "p95", "p99", "max", "mean"))}
    return {
        "count": len(data),
        "min": round(data[0], 2),
        "p50": round(percentile(data, 50), 2),
        "p95": round(percentile(data, 95), 2),
        "p99": round(percentile(data, 99), 2),
        "max": round(data[-1], 2),
        "mean": round(sum(data) / len(data), 2),
    }


def _new_deliveries(r: Results, ready: list[Console], created: list[Posted]) -> dict[str, Any]:
    by_marker = {p.marker: p for p in created}
    after_created: list[float] = []
    after_send: list[float] = []
    after_resp: list[float] = []
    last: dict[str, float] = {}
    reached: Counter[str] = Counter()
    received = unexpected = 0
    for c in ready:
        for marker, at in c.new_at.items():
            p = by_marker.get(marker)
            if p is None or p.responded is None:
                unexpected += 1
                continue
            received += 1
            reached[marker] += 1
            after_send.append(at - p.sent)
            after_resp.append(at - p.responded)
            if p.created_at is not None:
                after_created.append(at + r.wall_offset - p.created_at)
            last[marker] = max(last.get(marker, -math.inf), at)
    complete = [
        at + r.wall_offset - created_at
        for m, at in last.items()
        if (created_at := by_marker[m].created_at) is not None
    ]
    # Each request must reach its share of the consoles (all, or the first
    # --offer-fanout): short of it is lost, beyond it is an offer too wide.
    per = r.cfg.offered_per_request(len(ready))
    counts = [reached[p.marker] for p in created]
    return {
        "expected": len(created) * per,
        "received": received,
        "lost": sum(max(0, per - n) for n in counts),
        "beyond_offer": sum(max(0, n - per) for n in counts),
        "duplicates": sum(c.new_duplicates for c in r.consoles),
        "unexpected": unexpected,
        "consoles_per_request": {
            "expected": per,
            "min": min(counts, default=None),
            "max": max(counts, default=None),
        },
        "latency_after_created_ms": summary(after_created),
        "latency_after_send_ms": summary(after_send),
        "latency_after_response_ms": summary(after_resp),
        "last_console_after_created_ms": summary(complete),
    }


def _gone_deliveries(r: Results, ready: list[Console], cancelled: list[Posted]) -> dict[str, Any]:
    by_id = {p.request_id: p for p in cancelled}
    meant = {(p.request_id, c.index) for p in cancelled for c in recipients(r.cfg, ready, p.marker)}
    latency: list[float] = []
    reasons: Counter[str] = Counter()
    received = unexpected = 0
    for c in ready:
        reasons.update(c.gone_reasons)
        for rid, at in c.gone_at.items():
            p = by_id.get(rid)
            if p is None or p.cancel_responded is None or (rid, c.index) not in meant:
                unexpected += 1
                continue
            received += 1
            latency.append(at - p.cancel_responded)
    expected = len(meant)
    return {
        "expected": expected,
        "received": received,
        "lost": max(0, expected - received),
        "duplicates": sum(c.gone_duplicates for c in r.consoles),
        "unexpected": unexpected,
        "reasons": dict(reasons),
        "latency_after_response_ms": summary(latency),
    }


def _problems(
    r: Results, report: dict[str, Any], ready: int, created: int, cancelled: int
) -> list[str]:
    cfg, new, gone = r.cfg, report["request_new"], report["request_gone"]
    closed = report["closed_by_server"]
    checks = [
        (r.setup_error is not None, f"setup failed: {r.setup_error}"),
        (r.aborted is not None, f"aborted: {r.aborted}"),
        (ready < cfg.consoles, f"{cfg.consoles - ready} console(s) never became available"),
        (created < cfg.requests, f"{cfg.requests - created} request(s) not created"),
        (cancelled < created, f"{created - cancelled} request(s) not cancelled"),
        (new["lost"] > 0, f"{new['lost']} request.new lost"),
        (
            new["beyond_offer"] > 0,
            f"{new['beyond_offer']} request.new beyond the offer to {cfg.offer_fanout}",
        ),
        (gone["lost"] > 0, f"{gone['lost']} request.gone lost"),
        (
            new["duplicates"] + gone["duplicates"] > 0,
            f"duplicates: {new['duplicates']} request.new, {gone['duplicates']} request.gone",
        ),
        (
            new["unexpected"] + gone["unexpected"] > 0,
            f"unexpected frames: {new['unexpected']} new, {gone['unexpected']} gone",
        ),
        (closed["count"] > 0, f"{closed['count']} console(s) closed by the server"),
        (bool(report["error_frames"]), f"error frames: {report['error_frames']}"),
        (
            bool(set(gone["reasons"]) - {"cancelled"}),
            f"unexpected request.gone reasons: {gone['reasons']}",
        ),
        (bool(r.http_errors), f"{len(r.http_errors)} HTTP error(s)"),
    ]
    still_open = sum(1 for c in r.consoles if c.ready_s is not None and not c.closed_by_server)
    pool = r.pool_after
    if pool is None:
        if r.setup_error is None and r.aborted is None:
            checks.append((True, "GET /v1/pool/stats did not answer after the run"))
    else:
        checks += [
            (pool.get("waiting") != 0, f"{pool.get('waiting')} request(s) still waiting"),
            (
                pool.get("therapists_available") != still_open,
                f"the pool counts {pool.get('therapists_available')} available therapists, "
                f"{still_open} consoles are",
            ),
        ]
    return [message for failed, message in checks if failed]


def build(r: Results, command: str) -> dict[str, Any]:
    """The report: JSON-ready, with ``ok`` and the list of ``problems``."""
    cfg = r.cfg
    ready = [c for c in r.consoles if c.ready_s is not None]
    created = [p for p in r.posted if p.request_id is not None and p.responded is not None]
    cancelled = [p for p in r.posted if p.cancel_status == 200 and p.cancel_responded]
    closes = [c for c in r.consoles if c.closed_by_server]
    error_frames: Counter[str] = Counter()
    for c in r.consoles:
        error_frames.update(c.error_codes)
    report: dict[str, Any] = {
        "command": command,
        "config": {
            "consoles": cfg.consoles,
            "servers": cfg.servers,
            "interval_s": cfg.interval_s,
            "requests": cfg.requests,
            "codec": cfg.codec,
            "compression": cfg.compression,
            "settle_s": cfg.settle_s,
            "deadline_s": cfg.deadline_s,
            "server_env": dict(cfg.server_env),
            "offer_fanout": cfg.offer_fanout,
            "client_procs": cfg.client_procs,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "ok": False,
        "problems": [],
        "phases_s": {k: round(v, 3) for k, v in r.phases.items()},
        "settled": r.settled,
        "wallet": r.wallet,
        "connect": {
            "consoles": cfg.consoles,
            "ready": len(ready),
            "failures": dict(Counter(c.failure for c in r.consoles if c.failure is not None)),
            "all_ready_s": round(r.phases.get("connect_all_s", 0.0), 3),
            "open_ms": summary(c.open_s for c in r.consoles if c.open_s is not None),
            "ready_ms": summary(c.ready_s for c in ready if c.ready_s is not None),
            "snapshot_sizes": {
                str(k): n for k, n in Counter(c.snapshot_size for c in ready).items()
            },
        },
        "requests": {
            "planned": cfg.requests,
            "created": len(created),
            "cancelled": len(cancelled),
            "post_ms": summary(p.responded - p.sent for p in created if p.responded is not None),
            "delete_ms": summary(
                p.cancel_responded - p.cancel_sent
                for p in cancelled
                if p.cancel_responded is not None and p.cancel_sent is not None
            ),
        },
        "request_new": _new_deliveries(r, ready, created),
        "request_gone": _gone_deliveries(r, ready, cancelled),
        "closed_by_server": {
            "count": len(closes),
            "codes": dict(Counter(str(c.closed_code) for c in closes)),
        },
        "error_frames": dict(error_frames),
        "http_errors": r.http_errors,
        "pool_after": r.pool_after,
        "server_metrics": r.server_metrics,
        "server_logs": r.server_logs,
        "cpu_s": r.cpu_s,
        "cpu_window_s": r.cpu_window_s,
        "per_request": _per_request(r, len(created)),
        "memory": r.memory,
        "exit_codes": r.exit_codes,
        "aborted": r.aborted,
        "setup_error": r.setup_error,
    }
    report["problems"] = _problems(r, report, len(ready), len(created), len(cancelled))
    report["ok"] = not report["problems"]
    return report


def _per_request(r: Results, created: int) -> dict[str, float | None]:
    """What one request cost: the frames the servers queued for it (their
    ``dispatch_ws_frames_out_total``, summed) and the servers' CPU over the
    measured phases (idle work of those seconds included), in ms."""
    if created == 0:
        return {"request_new_frames": None, "request_gone_frames": None, "server_cpu_ms": None}

    def frames(kind: str) -> float:
        name = f'dispatch_ws_frames_out_total{{type="{kind}"}}'
        return sum(m.get(name, 0.0) for m in r.server_metrics)

    cpu = sum(v for name, v in r.cpu_window_s.items() if name != "redis")
    new, gone = frames("request.new"), frames("request.gone")
    return {
        "request_new_frames": round(new / created, 2),
        "request_gone_frames": round(gone / created, 2),
        "frames": round((new + gone) / created, 2),
        "server_cpu_ms": round(1000 * cpu / created, 3) if r.cpu_window_s else None,
        "redis_cpu_ms": round(1000 * r.cpu_window_s["redis"] / created, 3)
        if "redis" in r.cpu_window_s
        else None,
    }


def _ms(s: dict[str, Any], keys: Sequence[str] = ("p50", "p95", "p99", "max")) -> str:
    if not s.get("count"):
        return "n/a"
    return ", ".join(f"{k} {s[k]:.1f}" for k in keys) + " ms"


def human(report: dict[str, Any]) -> str:
    """A few lines for a person; the JSON has the rest."""
    cfg, con, req = report["config"], report["connect"], report["requests"]
    new, gone, phases = report["request_new"], report["request_gone"], report["phases_s"]
    closed = report["closed_by_server"]
    lines = [
        f"fan-out: {cfg['consoles']} consoles x {cfg['servers']} servers, "
        f"{cfg['requests']} requests every {cfg['interval_s']} s, codec {cfg['codec']}"
        + (" + deflate" if cfg["compression"] else "")
        + (f", offered to {cfg['offer_fanout']} each" if cfg["offer_fanout"] else "")
        + f", {cfg['client_procs']} client process(es) ({report['machine']['cpus']} CPUs)",
        f"  setup: processes ready in {phases.get('start_s', 0):.1f} s, "
        f"profiles in {phases.get('profiles_s', 0):.1f} s",
        f"  connect: {con['ready']}/{con['consoles']} available in {con['all_ready_s']:.2f} s; "
        f"per console {_ms(con['ready_ms'], ('p50', 'p95', 'max'))}",
        *(f"    failed: {n} x {why}" for why, n in con["failures"].items()),
        f"  POST /v1/requests: {req['created']}/{req['planned']} created, "
        f"{_ms(req['post_ms'], ('p50', 'p95', 'max'))}",
        f"  request.new: {new['received']}/{new['expected']} received, lost {new['lost']}, "
        f"duplicates {new['duplicates']}",
        f"    after created_at:    {_ms(new['latency_after_created_ms'])}",
        f"    after POST sent:     {_ms(new['latency_after_send_ms'])}",
        f"    after POST response: {_ms(new['latency_after_response_ms'])}",
        f"    last console of each request, after created_at: "
        f"{_ms(new['last_console_after_created_ms'])}",
        f"  request.gone: {gone['received']}/{gone['expected']} received, lost {gone['lost']}, "
        f"duplicates {gone['duplicates']}; after DELETE response: "
        f"{_ms(gone['latency_after_response_ms'])}",
        f"  closed by server: {closed['count']} {closed['codes'] or ''}".rstrip(),
        f"  errors: {len(report['http_errors'])} HTTP, error frames {report['error_frames'] or 0}",
    ]
    lines += [f"    {e}" for e in report["http_errors"][:5]]
    pool = report.get("pool_after")
    if isinstance(pool, dict):
        lines.append(
            f"  pool after: waiting {pool.get('waiting')}, created_15m {pool.get('created_15m')}, "
            f"cancelled_15m {pool.get('cancelled_15m')}, "
            f"therapists_available {pool.get('therapists_available')}"
        )
    if report["cpu_s"]:
        lines.append(f"  CPU seconds used: {report['cpu_s']}")
    per = report["per_request"]
    if per.get("frames") is not None:
        lines.append(
            f"  per request: {per['frames']} frames ({per['request_new_frames']} request.new "
            f"+ {per['request_gone_frames']} request.gone), server CPU {per['server_cpu_ms']} ms, "
            f"Redis CPU {per['redis_cpu_ms']} ms (over the create and cancel phases)"
        )
    for name, log in report["server_logs"].items():
        if log["events"]:
            lines.append(f"  {name} log: {log['events']}")
    if report["ok"]:
        lines.append("result: OK (nothing lost)")
    else:
        lines.append("result: FAILED")
        lines += [f"  - {p}" for p in report["problems"]]
    return "\n".join(lines)
