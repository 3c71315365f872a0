"""Spawned client worker processes: what :mod:`loadtest._fleet` and
:mod:`loadtest._racer` share.

Each worker gets a job, a command queue of its own and the one queue back to
the parent. A worker reads its commands with :func:`next_command`, which
answers ``("close",)`` once the parent is gone (its parent id changes), so a
worker never outlives a parent that died without telling it.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import queue
from collections.abc import Callable, Sequence
from typing import Any, Final

#: How long the parent waits on the queue back at a time (then checks the workers).
POLL_S: Final = 0.1
#: How long a worker waits on its command queue at a time (then checks its parent).
PARENT_CHECK_S: Final = 1.0
JOIN_TIMEOUT_S: Final = 5.0

Command = tuple[Any, ...]


async def next_command(commands: Any, parent: int) -> Command:
    """The parent's next command; ``("close",)`` when the parent (pid ``parent``) is gone."""
    loop = asyncio.get_running_loop()
    while True:
        if os.getppid() != parent:
            return ("close",)
        try:
            cmd: Command = await loop.run_in_executor(None, commands.get, True, PARENT_CHECK_S)
            return cmd
        except queue.Empty:
            continue


class Workers:
    """One spawned process per job, running ``target(job, commands, results)``."""

    def __init__(self, target: Callable[..., None], jobs: Sequence[Any]) -> None:
        ctx = mp.get_context("spawn")
        self.commands = [ctx.Queue() for _ in jobs]
        self.results = ctx.Queue()
        self.procs = [
            ctx.Process(target=target, args=(job, cmd, self.results), daemon=True)
            for job, cmd in zip(jobs, self.commands, strict=True)
        ]

    def start(self) -> None:
        for p in self.procs:
            p.start()

    def send_all(self, cmd: Command) -> None:
        for q in self.commands:
            q.put(cmd)

    def get(self) -> Any:
        """The next message back, or None after :data:`POLL_S` (call in a thread)."""
        try:
            return self.results.get(timeout=POLL_S)
        except queue.Empty:
            return None

    def exited(self) -> list[int]:
        """The workers that have exited, by index."""
        return [w for w, p in enumerate(self.procs) if p.exitcode is not None]

    def stop(self) -> None:
        """Tell any live worker to close, join them, and kill any still alive
        after :data:`JOIN_TIMEOUT_S`."""
        for q, p in zip(self.commands, self.procs, strict=True):
            if p.pid is not None and p.is_alive():
                q.put(("close",))
        for p in self.procs:
            if p.pid is None:
                continue
            p.join(timeout=JOIN_TIMEOUT_S)
            if p.is_alive():
                p.kill()
                p.join(timeout=JOIN_TIMEOUT_S)

    def kill(self) -> None:
        """Kill every worker now (from a watchdog's thread, when the loop is stuck)."""
        for p in self.procs:
            if p.pid is not None:
                with contextlib.suppress(Exception):
                    p.kill()
