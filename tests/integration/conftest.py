"""Fixtures of the integration tier: clusters of real server processes on the
suite's own redis-server (``redis_url`` from ``tests/conftest.py``).

``start_cluster(n, **settings)`` starts ``n`` servers in parallel (settings are
``Settings`` field names over :data:`harness.FAST_SETTINGS`) and returns a
:class:`harness.Cluster`; whatever it started is closed after the test, and
when the test failed the tail of each server's log is printed.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Generator
from pathlib import Path

import pytest
import pytest_asyncio

from .harness import Cluster, ServerProcess, StartCluster, dispatch_executable


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember each phase's report on the item, so fixtures know a test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _failed(node: pytest.Item) -> bool:
    return any(
        getattr(getattr(node, f"rep_{when}", None), "failed", False) for when in ("setup", "call")
    )


@pytest.fixture(scope="session")
def dispatch_cli() -> Path:
    """The ``dispatch`` console script; the tier is skipped when it is not installed."""
    exe = dispatch_executable()
    if not exe.exists() or shutil.which(str(exe)) is None:
        pytest.skip(f"{exe} is not installed (pip install -e '.[dev]')")
    return exe


@pytest_asyncio.fixture
async def start_cluster(
    redis_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    dispatch_cli: Path,
) -> AsyncIterator[StartCluster]:
    clusters: list[Cluster] = []
    names = iter("ABCDEFGH")

    async def start(n: int = 2, **settings: object) -> Cluster:
        servers = [
            ServerProcess(name, redis_url, tmp_path, settings)
            for name in (next(names) for _ in range(n))
        ]
        cluster = Cluster(servers)
        clusters.append(cluster)
        for server in servers:
            server.spawn()
        await asyncio.gather(*(s.wait_ready() for s in servers))
        return cluster

    try:
        yield start
    finally:
        for cluster in clusters:
            await cluster.aclose()
        if _failed(request.node):
            for cluster in clusters:
                for server in cluster.servers:
                    print(f"\n----- server {server.name} log (tail) -----\n{server.log_tail(60)}")
