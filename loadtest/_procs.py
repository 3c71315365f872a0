"""Child processes of a run (``redis-server``, ``dispatch serve``) and what is
read from them afterwards (log levels, metrics, CPU time).

Each child writes to its own log file, is stopped with SIGTERM and then
SIGKILL, and on Linux is killed by the kernel if the load script dies first
(``PR_SET_PDEATHSIG``), so no run leaves a process behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

HOST: Final = "127.0.0.1"
START_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the kernel SIGKILLs the child if the load script dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Proc:
    """A child process with its output in a log file."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log: Path, cwd: Path | None = None
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        #: Where it runs (None: here); a server writes its profiling files there.
        self.cwd = cwd
        self.log = log
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL; the exit code."""
        proc = self.popen
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=timeout_s)
        return proc.returncode

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()

    def cpu_s(self) -> float | None:
        """CPU seconds (user + system) the running process has used so far (Linux)."""
        if self.popen is None or self.popen.poll() is not None:
            return None
        try:
            stat = Path(f"/proc/{self.popen.pid}/stat").read_text()
        except OSError:
            return None
        # Fields after the command name (which may hold spaces): utime, stime are 14, 15.
        fields = stat.rpartition(")")[2].split()
        try:
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (IndexError, ValueError, OSError):
            return None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def start_redis(workdir: Path) -> tuple[Proc, int]:
    """A ``redis-server`` of this run's own (append-only file on, as in
    production) on a free port, answering PING; the process and its port."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not on PATH")
    port = free_port()
    data = workdir / "redis"
    data.mkdir(exist_ok=True)
    argv = [exe, "--port", str(port), "--bind", HOST, "--dir", str(data)]
    argv += ["--appendonly", "yes", "--save", "", "--daemonize", "no", "--maxclients", "10000"]
    proc = Proc(
        "redis", argv, {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, workdir / "redis.log"
    )
    proc.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _redis_ping(port):
        if not proc.running or time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"redis-server did not start:\n{proc.log_tail()}")
        time.sleep(0.05)
    return proc, port


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def server_env(redis_url: str, secret: str, data_key: str, workdir: Path) -> dict[str, str]:
    """The environment of every ``dispatch serve`` of the run.

    The caller's own ``DISPATCH_*`` variables are dropped: one could name a
    shared Redis or database, and a load test must only touch its own.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    env.update(
        {
            "DISPATCH_REDIS_URL": redis_url,
            "DISPATCH_SECRET": secret,
            "DISPATCH_DATA_KEY": data_key,
            "DISPATCH_LOG_LEVEL": "warning",
            "DISPATCH_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'dispatch.db'}",
            "DISPATCH_HOST": HOST,
        }
    )
    return env


def dispatch_server(index: int, port: int, env: dict[str, str], workdir: Path) -> Proc:
    """``python -m dispatch serve`` on ``port`` (not started yet)."""
    argv = [sys.executable, "-m", "dispatch", "serve", "--host", HOST, "--port", str(port)]
    own = {**env, "DISPATCH_PORT": str(port), "DISPATCH_SERVER_ID": f"loadtest-{index}"}
    return Proc(f"server{index}", argv, own, workdir / f"server{index}.log", cwd=workdir)


def scan_server_log(path: Path) -> dict[str, Any]:
    """Counts of a server log's lines by level, and of its warning and error
    events by name (the first line of the event only, never the whole line)."""
    levels: Counter[str] = Counter()
    events: Counter[str] = Counter()
    other = 0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            other += 1
            continue
        level = str(obj.get("level", "?"))
        levels[level] += 1
        if level in ("warning", "error", "critical"):
            event = str(obj.get("event", "?")).strip().splitlines() or ["?"]
            events[f"{level}:{event[0][:80]}"] += 1
    return {"levels": dict(levels), "events": dict(events), "unparsed_lines": other}


def metric_values(text: str, names: Sequence[str]) -> dict[str, float]:
    """The values of the named series (exact name with labels) in Prometheus text."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        if name in names:
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out
