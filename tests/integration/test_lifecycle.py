"""A server process's own life: a deploy's SIGTERM stops it promptly and cleanly."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from .harness import ServerProcess, open_ws, token

pytestmark = pytest.mark.integration

#: Rounds of start/stop: a stop that lands while a background loop is inside a
#: Redis call is the case that matters, and the loops run every 10 ms here, so
#: a few rounds meet it.
ROUNDS = 8
STOP_WITHIN_S = 5.0


# Eight server start-ups (each imports the whole app: seconds on a loaded
# machine); the stop itself is bounded by STOP_WITHIN_S.
@pytest.mark.timeout(240)
async def test_sigterm_stops_the_server_promptly(
    redis_url: str, tmp_path: Path, dispatch_cli: Path
) -> None:
    for i in range(ROUNDS):
        server = ServerProcess(
            f"L{i}", redis_url, tmp_path, {"timer_tick_s": 0.01, "heartbeat_s": 0.01}
        )
        try:
            await server.start()
            ws = await open_ws(server.ws_url, f"client@L{i}")
            await ws.auth(token("client", f"c{i}"))
            await asyncio.sleep(0.3)
            started = time.monotonic()
            server.terminate()
            code = await ws.wait_closed(STOP_WITHIN_S)
            # Consoles are told to come back (1012 service restart, or 1001
            # going away), not dropped without a close frame.
            assert code in (1001, 1012), code
            exited = await asyncio.to_thread(_wait_exit, server, STOP_WITHIN_S)
            took = time.monotonic() - started
            assert exited, f"round {i}: still running {STOP_WITHIN_S}s after SIGTERM"
            # uvicorn re-raises the SIGTERM it handled once it has shut down.
            assert server.returncode in (0, -signal.SIGTERM), server.returncode
            assert "Application shutdown complete" in server.log_tail(10), server.log_tail(10)
            assert took < STOP_WITHIN_S
            await ws.close()
        finally:
            server.kill()


def _wait_exit(server: ServerProcess, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if server.returncode is not None:
            return True
        time.sleep(0.02)
    return False
