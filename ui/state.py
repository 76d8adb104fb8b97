"""What the console shows, sampled once for every browser: rates, outcome series,
the latest discrepancies. Pages read this; they never walk the daemon's big structures."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass

from helios.daemon.model import Outcome, OutcomeKind
from helios.daemon.readmodels import ReadModels

SERIES = [k.name for k in OutcomeKind]
DISCREPANCIES = "kind=MISSING,INCONSISTENT,DUPLICATE,LATE"


@dataclass
class Point:
    at: float  # real time (epoch seconds) of the sample
    counts: dict[str, int]  # outcomes by kind since the previous sample


class ConsoleState:
    def __init__(self, reads: ReadModels, interval: float = 2.0, points: int = 300) -> None:
        self.reads = reads
        self.interval = interval
        self.series: deque[Point] = deque(maxlen=points)
        self.discrepancies: deque[Outcome] = deque(maxlen=100)
        self._last = reads.counters().outcomes
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._sample(), name="helios-console-sample"),
            asyncio.create_task(self._watch(), name="helios-console-watch"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def sample(self) -> None:
        counts = self.reads.counters().outcomes
        delta = {k: counts[k] - self._last.get(k, 0) for k in SERIES}
        self._last = counts
        self.series.append(Point(time.time(), delta))

    async def _sample(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    async def _watch(self) -> None:
        reads = self.reads
        while True:
            watcher = reads.watch(DISCREPANCIES)
            try:
                while not watcher.overflowed:
                    self.discrepancies.extend((await watcher.queue.get()).outcomes)
            finally:
                reads.unwatch(watcher)
