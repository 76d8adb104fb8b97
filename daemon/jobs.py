"""Scheduled jobs: every periodic task of heliosd in one registry, each with its last run,
result, failures and next run (QueryService.ListJobs, `helios jobs`, the console)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from helios.daemon.clock import Clock, RealClock

log = logging.getLogger("helios.jobs")
Action = Callable[[], Awaitable[str]]


@dataclass(eq=False)
class Job:
    name: str
    description: str
    interval: float  # seconds of `clock`
    action: Action
    clock: Clock
    clock_name: str  # "daemon" (may be simulated) or "wall"
    run_at_start: bool = False
    runs: int = 0
    failures: int = 0
    last_run: float | None = None
    last_result: str = ""
    last_error: str = ""
    last_duration_ms: float = 0.0
    next_run: float = field(default=0.0)

    def due_in(self) -> float:
        return max(0.0, self.next_run - self.clock.now())


class Scheduler:
    """Runs each job on its own clock, one task per job; a failing run is recorded and
    the job carries on."""

    def __init__(self, daemon_clock: Clock) -> None:
        self.daemon_clock = daemon_clock
        self.wall_clock = RealClock()
        self.jobs: dict[str, Job] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def add(
        self,
        name: str,
        interval: float,
        action: Action,
        description: str,
        wall_clock: bool = False,
        run_at_start: bool = False,
    ) -> Job:
        if name in self.jobs:
            raise ValueError(f"a job named {name!r} exists already")
        if interval <= 0:
            raise ValueError(f"job {name}: interval must be > 0, got {interval}")
        clock = self.wall_clock if wall_clock else self.daemon_clock
        job = Job(
            name,
            description,
            interval,
            action,
            clock,
            "wall" if wall_clock else "daemon",
            run_at_start,
        )
        job.next_run = clock.now() + (0.0 if run_at_start else interval)
        self.jobs[name] = job
        return job

    async def run_once(self, job: Job) -> None:
        started = time.perf_counter()
        try:
            job.last_result = await job.action() or "ok"
            job.last_error = ""
        except Exception as exc:
            job.failures += 1
            job.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("job %s failed", job.name)
        finally:
            job.runs += 1
            job.last_run = job.clock.now()
            job.last_duration_ms = (time.perf_counter() - started) * 1000.0

    async def _loop(self, job: Job) -> None:
        if not job.run_at_start:
            await job.clock.sleep(job.interval)
        while True:
            await self.run_once(job)
            job.next_run = job.clock.now() + job.interval
            await job.clock.sleep(job.interval)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._loop(job), name=f"helios-job-{job.name}")
            for job in self.jobs.values()
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
