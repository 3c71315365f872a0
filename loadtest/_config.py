"""The fan-out run's settings: :class:`Config`, parsed from the command line.

Every count and time is capped, so no invocation can run unbounded.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

MAX_CONSOLES: Final = 5000
MAX_SERVERS: Final = 8
MAX_REQUESTS: Final = 2000
MIN_INTERVAL_S: Final = 0.01
MAX_CLIENT_PROCS: Final = 16
MAX_SECONDS: Final = 3600.0
#: With ``--offer-fanout``, the widening interval the servers get unless
#: ``--server-env`` names one: the longest the service takes, so that no offer
#: widens during a run and each request reaches exactly its first few.
QUIET_WIDEN_S: Final = "600"


@dataclass(frozen=True)
class Config:
    consoles: int = 1000
    servers: int = 2
    interval_s: float = 0.3
    requests: int = 100
    codec: str = "json"
    out: Path | None = None
    #: How long to wait for the last deliveries after each paced phase.
    settle_s: float = 15.0
    #: How long every console has to connect, authenticate and become available.
    connect_timeout_s: float = 60.0
    #: Hard limit for the whole run (0: :meth:`default_deadline`).
    deadline_s: float = 0.0
    compression: bool = False
    #: Extra ``DISPATCH_*`` settings for every server.
    server_env: tuple[tuple[str, str], ...] = ()
    keep: bool = False
    #: Also run the bare websockets + Redis floor (:mod:`loadtest.floor`) and report ratios.
    floor: bool = False
    #: Record server 0 with py-spy into this flame graph (SVG).
    profile: Path | None = None
    #: ``DISPATCH_OFFER_FANOUT`` of the servers (0: every request to every console).
    offer_fanout: int = 0
    #: Client processes the consoles are spread over (:mod:`loadtest._fleet`).
    client_procs: int = 2

    def offered_per_request(self, ready: int) -> int:
        """How many of ``ready`` available consoles (every one eligible) a
        request reaches: all of them, or the first ``offer_fanout`` when more
        are there (the service offers everyone once the eligible fit)."""
        if self.offer_fanout > 0 and ready > self.offer_fanout:
            return self.offer_fanout
        return ready

    @property
    def subprotocol(self) -> str:
        return f"qc.v1.{self.codec}"

    def default_deadline(self) -> float:
        """Generous for every phase: start-up and profiles, the connect burst,
        the two paced phases (create, cancel) and their settles."""
        paced = 2 * self.requests * self.interval_s
        setup = 120.0 + self.consoles * 0.03
        return min(MAX_SECONDS, setup + self.connect_timeout_s + paced + 3 * self.settle_s)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.fanout",
        description=(
            "Fan-out load test of dispatch: therapist consoles on several servers "
            "sharing one Redis, a request broadcast every --interval seconds."
        ),
    )
    p.add_argument("--consoles", type=int, default=1000, help="therapist consoles (1000)")
    p.add_argument("--servers", type=int, default=2, help="dispatch serve processes (2)")
    p.add_argument("--interval", type=float, default=0.3, help="seconds between requests (0.3)")
    p.add_argument("--requests", type=int, default=100, help="requests to broadcast (100)")
    p.add_argument("--codec", choices=("json", "msgpack"), default="json", help="subprotocol")
    p.add_argument("--out", type=Path, help="write the full report as JSON here")
    p.add_argument(
        "--settle",
        type=float,
        default=15.0,
        help="seconds to wait for the last deliveries after each phase (15)",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=60.0,
        help="seconds for every console to connect and become available (60)",
    )
    p.add_argument("--deadline", type=float, help="hard limit for the whole run, in seconds")
    p.add_argument(
        "--compression",
        action="store_true",
        help="offer permessage-deflate, as browsers do (off by default)",
    )
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="DISPATCH_X=V",
        help="extra setting for every server, e.g. DISPATCH_REDIS_MAX_CONNECTIONS=32",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    p.add_argument(
        "--floor",
        action="store_true",
        help="then run the bare websockets + Redis floor at the same size; report ratios",
    )
    p.add_argument("--profile", type=Path, help="record server 0 with py-spy into this SVG")
    p.add_argument(
        "--offer-fanout",
        type=int,
        default=0,
        metavar="K",
        help="set DISPATCH_OFFER_FANOUT=K on the servers: each request goes to K consoles "
        f"(no widening during the run: DISPATCH_OFFER_WIDEN_S={QUIET_WIDEN_S} unless "
        "--server-env sets it); 0, the default: to every console",
    )
    p.add_argument(
        "--client-procs",
        type=int,
        default=2,
        metavar="N",
        help=f"client processes driving the consoles, 1..{MAX_CLIENT_PROCS} (2); "
        "the floor (--floor) uses as many",
    )
    return p


def parse_args(argv: Sequence[str] | None) -> Config:
    """The run's :class:`Config`; exits with status 2 and a message for bad usage."""
    parser = _parser()
    a = parser.parse_args(argv)
    if not 1 <= a.consoles <= MAX_CONSOLES:
        parser.error(f"--consoles must be 1..{MAX_CONSOLES}")
    if not 1 <= a.servers <= MAX_SERVERS:
        parser.error(f"--servers must be 1..{MAX_SERVERS}")
    if not 1 <= a.requests <= MAX_REQUESTS:
        parser.error(f"--requests must be 1..{MAX_REQUESTS}")
    if not (math.isfinite(a.interval) and MIN_INTERVAL_S <= a.interval <= 60):
        parser.error(f"--interval must be {MIN_INTERVAL_S}..60 seconds")
    for name in ("settle", "connect_timeout"):
        if not _seconds_ok(getattr(a, name)):
            parser.error(f"--{name.replace('_', '-')} must be in (0, {MAX_SECONDS:.0f}]")
    env: list[tuple[str, str]] = []
    for item in a.server_env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("DISPATCH_"):
            parser.error(f"--server-env wants DISPATCH_NAME=VALUE, not {item!r}")
        env.append((key, value))
    if not 1 <= a.client_procs <= MAX_CLIENT_PROCS:
        parser.error(f"--client-procs must be 1..{MAX_CLIENT_PROCS}")
    if not 0 <= a.offer_fanout <= MAX_CONSOLES:
        parser.error(f"--offer-fanout must be 0..{MAX_CONSOLES}")
    if a.offer_fanout > 0:
        named = {key for key, _ in env}
        if "DISPATCH_OFFER_FANOUT" in named:
            parser.error("give the fan-out as --offer-fanout, not --server-env")
        env.append(("DISPATCH_OFFER_FANOUT", str(a.offer_fanout)))
        if "DISPATCH_OFFER_WIDEN_S" not in named:
            env.append(("DISPATCH_OFFER_WIDEN_S", QUIET_WIDEN_S))
    cfg = Config(
        consoles=a.consoles,
        servers=a.servers,
        interval_s=a.interval,
        requests=a.requests,
        codec=a.codec,
        out=a.out,
        settle_s=a.settle,
        connect_timeout_s=a.connect_timeout,
        compression=a.compression,
        server_env=tuple(env),
        keep=a.keep,
        floor=a.floor,
        profile=a.profile,
        offer_fanout=a.offer_fanout,
        client_procs=a.client_procs,
    )
    deadline = a.deadline if a.deadline is not None else cfg.default_deadline()
    if not _seconds_ok(deadline):
        parser.error(f"--deadline must be in (0, {MAX_SECONDS:.0f}]")
    return dataclasses.replace(cfg, deadline_s=deadline)


def _seconds_ok(value: float) -> bool:
    return math.isfinite(value) and 0 < value <= MAX_SECONDS
