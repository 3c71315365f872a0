"""Self-check of the fan-out load script (``loadtest/fanout.py``) at a tiny size.

It runs ``python -m loadtest.fanout`` for real: its own redis-server, two
``dispatch serve`` processes, 20 consoles, 5 requests. Only delivery is
asserted (every console gets every ``request.new`` and ``request.gone`` exactly
once, none is closed, nothing fails); speed is never asserted in tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONSOLES = 20
REQUESTS = 5


@pytest.mark.integration
def test_fanout_smoke_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "fanout.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtest.fanout",
            "--consoles",
            str(CONSOLES),
            "--servers",
            "2",
            "--requests",
            str(REQUESTS),
            "--interval",
            "0.1",
            "--settle",
            "10",
            "--connect-timeout",
            "15",
            "--deadline",
            "45",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    detail = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    assert out.exists(), detail
    report = json.loads(out.read_text())
    assert report["problems"] == [], detail
    assert proc.returncode == 0, detail

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
    # Both servers carried consoles and fanned out.
    assert len(report["server_metrics"]) == 2
    for metrics in report["server_metrics"]:
        assert metrics['dispatch_ws_frames_out_total{type="request.new"}'] == (
            CONSOLES // 2 * REQUESTS
        )
