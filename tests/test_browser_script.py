"""``scripts/browser-tests``: what it does when the browser tier cannot run.

A developer's ``make test`` goes on with one clear line; under ``CI=true`` the same is
a failure, so CI never passes without having run the real-browser tests. The missing
piece here is the browser (``QC_CHROMIUM`` pointing nowhere), which also keeps the
script from installing anything: it installs only Debian's ``/usr/bin/chromium``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "browser-tests"


def run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "QC_BROWSER")}
    env["QC_CHROMIUM"] = str(tmp_path / "no-chromium-here")
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        ["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_a_missing_browser_skips_with_one_line(tmp_path: Path) -> None:
    done = run(tmp_path, ci=None)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"browser tests: SKIPPED ({tmp_path / 'no-chromium-here'} is missing;"
        " as root: apt-get install chromium)"
    ]
    assert done.stderr == ""


@pytest.mark.parametrize("ci", ["true", "1"])
def test_a_missing_browser_fails_under_ci(tmp_path: Path, ci: str) -> None:
    done = run(tmp_path, ci=ci)
    assert done.returncode == 1
    assert done.stdout == ""
    assert "browser tests: FAILED to start under CI" in done.stderr
    assert "no-chromium-here is missing" in done.stderr
