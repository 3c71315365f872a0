"""The service under test for the scenarios (fanout, race, lifecycle, idle): its own
``redis-server`` and ``--servers`` ``dispatch serve`` processes, tokens minted
as any platform mints them, the operator calls that set a run up, and what is
read from the processes (CPU seconds, resident memory).

Like :mod:`loadtest.fanout`, it imports nothing of the product: it speaks the
wire protocol (PROTOCOL.md) only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import secrets
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Final

import httpx
import jwt
from cryptography.fernet import Fernet

from loadtest._procs import (
    HOST,
    START_TIMEOUT_S,
    Proc,
    dispatch_server,
    free_port,
    scan_server_log,
    server_env,
    start_redis,
)

HTTP_TIMEOUT_S: Final = 30.0
HTTP_CONCURRENCY: Final = 32
#: Calls per operator id, under the per-user HTTP burst of a server (30).
CALLS_PER_OPERATOR: Final = 20
REGION: Final = "GB-ENG"
LANGUAGE: Final = "en"
PROFILE: Final[dict[str, Any]] = {
    "bio": "load test therapist",
    "regions": [REGION],
    "languages": [LANGUAGE],
    "topics": ["anxiety", "couples"],
    "works_with_minors": False,
}
TOPUP_MINOR: Final = 1_000_000


def proc_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) of a live process, from /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def proc_rss_kib(pid: int) -> int | None:
    """Resident memory (VmRSS, KiB) of a live process, from /proc/<pid>/status."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return None


def raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (uvicorn[standard] brings it): a lighter client."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return None
    return uvloop.new_event_loop


class Stack:
    """Redis and the servers of one run; start with :meth:`start`, always :meth:`stop`."""

    def __init__(
        self, servers: int, workdir: Path, env: Sequence[tuple[str, str]] = (), ttl_s: int = 7200
    ) -> None:
        self.n = servers
        self.workdir = workdir
        self.extra_env = dict(env)
        self.secret = secrets.token_urlsafe(48)
        self.data_key = Fernet.generate_key().decode()
        self.redis: Proc | None = None
        self.servers: list[Proc] = []
        self.ports: list[int] = []
        self.ttl_s = ttl_s

    # -- identity and addresses --------------------------------------------------------
    def token(self, role: str, sub: str) -> str:
        now = int(time.time())
        claims = {"sub": sub, "role": role, "iat": now, "exp": now + self.ttl_s}
        return jwt.encode(claims, self.secret, algorithm="HS256")

    def auth(self, role: str, sub: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role, sub)}"}

    def base(self, server: int) -> str:
        return f"http://{HOST}:{self.ports[server]}"

    def ws_url(self, server: int) -> str:
        return f"ws://{HOST}:{self.ports[server]}/v1/ws"

    # -- processes ---------------------------------------------------------------------
    def start(self) -> None:
        self.redis, redis_port = start_redis(self.workdir)
        env = server_env(f"redis://{HOST}:{redis_port}/0", self.secret, self.data_key, self.workdir)
        env.update(self.extra_env)
        for i in range(self.n):
            self.ports.append(free_port())
            proc = dispatch_server(i, self.ports[i], env, self.workdir)
            proc.start()
            self.servers.append(proc)

    def pids(self) -> dict[str, int]:
        procs = [*self.servers, *([self.redis] if self.redis is not None else [])]
        return {p.name: p.popen.pid for p in procs if p.popen is not None and p.running}

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds so far of each server and of Redis."""
        out: dict[str, float] = {}
        for name, pid in self.pids().items():
            cpu = proc_cpu_s(pid)
            if cpu is not None:
                out[name] = cpu
        return out

    def rss_kib(self) -> dict[str, int]:
        """Resident memory of each server (not Redis), KiB."""
        out: dict[str, int] = {}
        for name, pid in self.pids().items():
            rss = proc_rss_kib(pid)
            if rss is not None and name != "redis":
                out[name] = rss
        return out

    def stop(self) -> dict[str, Any]:
        """Stop every child (servers first); their exit codes and log counts."""
        procs = [*self.servers, *([self.redis] if self.redis is not None else [])]
        codes = {p.name: p.stop() for p in procs}
        return {
            "exit_codes": codes,
            "server_logs": {p.name: scan_server_log(p.log) for p in self.servers},
        }

    def kill(self) -> None:
        for proc in [*self.servers, *([self.redis] if self.redis is not None else [])]:
            proc.kill()

    # -- HTTP --------------------------------------------------------------------------
    @staticmethod
    def client() -> httpx.AsyncClient:
        # Idle connections are dropped before uvicorn's 5 s keep-alive closes them.
        limits = httpx.Limits(
            max_connections=2 * HTTP_CONCURRENCY, max_keepalive_connections=64, keepalive_expiry=2.0
        )
        return httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, limits=limits)

    async def wait_ready(self, client: httpx.AsyncClient) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        for i, proc in enumerate(self.servers):
            while True:
                if not proc.running:
                    raise RuntimeError(f"{proc.name} exited:\n{proc.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    health = await client.get(f"{self.base(i)}/healthz", timeout=2.0)
                    ready = await client.get(f"{self.base(i)}/readyz", timeout=2.0)
                    if health.status_code == 200 and ready.status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{proc.name} not ready in time:\n{proc.log_tail()}")
                await asyncio.sleep(0.1)

    async def as_operators(
        self, client: httpx.AsyncClient, calls: Sequence[tuple[str, str, dict[str, Any]]]
    ) -> None:
        """Run ``(method, path, body)`` calls as operators, a few in flight; each
        operator id makes few enough calls on one server to stay under its rate limit."""
        gate = asyncio.Semaphore(HTTP_CONCURRENCY)
        run_id = secrets.token_hex(3)

        async def call(n: int, method: str, path: str, body: dict[str, Any]) -> None:
            batch = n // CALLS_PER_OPERATOR
            url = self.base(batch % self.n) + path
            async with gate:
                resp = await client.request(
                    method, url, json=body, headers=self.auth("operator", f"lt-op-{run_id}-{batch}")
                )
            if resp.status_code not in (200, 201):
                raise RuntimeError(f"{method} {path}: {resp.status_code} {resp.text[:200]}")

        await asyncio.gather(*(call(n, *c) for n, c in enumerate(calls)))

    async def put_profiles(self, client: httpx.AsyncClient, therapist_ids: Sequence[str]) -> None:
        await self.as_operators(
            client,
            [
                ("PUT", f"/v1/therapists/{t}", {**PROFILE, "name": f"Therapist {t}"})
                for t in therapist_ids
            ],
        )

    async def fund(self, client: httpx.AsyncClient, client_ids: Sequence[str]) -> bool:
        """Top up every client when the server has wallets; whether it has."""
        resp = await client.get(
            f"{self.base(0)}/v1/wallet", headers=self.auth("client", client_ids[0])
        )
        if resp.status_code != 200:
            return False
        ref = secrets.token_hex(3)
        await self.as_operators(
            client,
            [
                (
                    "POST",
                    "/v1/wallet/topups",
                    {"amount_minor": TOPUP_MINOR, "client_id": c, "reference": f"lt-{ref}-{c}"},
                )
                for c in client_ids
            ],
        )
        return True


def write_report(out: Path | None, report: dict[str, Any]) -> None:
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {out}", flush=True)


def run_async(
    main: Callable[[], Coroutine[Any, Any, None]],
    deadline_s: float,
    on_timeout: Callable[[], None],
    name: str = "loadtest",
) -> None:
    """Run ``main`` on uvloop with a watchdog that calls ``on_timeout`` and
    exits the process (status 2) a minute past ``deadline_s`` if the loop is
    stuck, saying so on stderr under ``name``."""
    import threading

    def watchdog() -> None:
        print(f"{name}: hard deadline passed; killing everything", file=sys.stderr, flush=True)
        on_timeout()
        os._exit(2)

    timer = threading.Timer(deadline_s + 60.0, watchdog)
    timer.daemon = True
    timer.start()
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(main())
    finally:
        timer.cancel()


def start_profiler(pid: int, svg: Path, log: Path) -> Proc | None:
    """``py-spy record`` of a running process into a flame graph (``svg``);
    ``None`` (with the reason printed) when py-spy is missing."""
    exe = Path(sys.executable).parent / "py-spy"
    if not exe.exists():
        print(f"profile: {exe} is missing", file=sys.stderr)
        return None
    svg.parent.mkdir(parents=True, exist_ok=True)
    # --nonblocking: sample without pausing the server, so it is not slowed down.
    argv = [str(exe), "record", "--pid", str(pid), "--output", str(svg.resolve())]
    argv += ["--format", "flamegraph", "--rate", "100", "--nonblocking"]
    proc = Proc("py-spy", argv, dict(os.environ), log)
    proc.start()
    return proc


def stop_profiler(proc: Proc) -> str:
    """Stop ``py-spy`` with SIGINT (it writes its output then); its log tail."""
    import signal
    import subprocess

    if proc.popen is not None and proc.popen.poll() is None:
        proc.popen.send_signal(signal.SIGINT)
        try:
            proc.popen.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.log_tail(5)
