"""Clocks: every time-based part of HELIOS reads time through one of these."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """Wall-clock seconds since the epoch, and a sleep that follows the same time."""

    speed: float  # simulated seconds per real second (timeouts are real time)

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    """Production time."""

    speed = 1.0

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ScaledClock:
    """Simulated time that runs `speed` times faster than real time, from `start`."""

    def __init__(self, speed: float = 1.0, start: float | None = None) -> None:
        if speed <= 0:
            raise ValueError(f"clock speed must be > 0, got {speed}")
        self.speed = speed
        self._start = time.time() if start is None else start
        self._mono0 = time.monotonic()

    def now(self) -> float:
        return self._start + (time.monotonic() - self._mono0) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


class ManualClock:
    """Simulated time that moves only when told to; sleepers wake as it passes them.

    Tests and replays use it to run hours of traffic in seconds, deterministically.
    """

    speed = 1.0  # it does not run on its own: real timeouts stay real

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), future))
        await future

    def set(self, when: float) -> None:
        """Move time forward to `when` (never backwards) and wake the sleepers it passes."""
        if when < self._now:
            return
        self._now = when
        while self._sleepers and self._sleepers[0][0] <= when:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    def advance(self, seconds: float) -> None:
        self.set(self._now + seconds)

    async def run_for(self, seconds: float, step: float = 1.0) -> None:
        """Advance in steps, letting woken tasks run after each one."""
        end = self._now + seconds
        while self._now < end:
            self.set(min(end, self._now + step))
            for _ in range(5):
                await asyncio.sleep(0)


def make_clock(kind: str, speed: float = 1.0) -> Clock:
    """The clock named in the config: "real", "simulated" (scaled) or "manual"."""
    if kind == "real":
        return RealClock()
    if kind == "simulated":
        return ScaledClock(speed)
    if kind == "manual":
        return ManualClock()
    raise ValueError(f"unknown clock {kind!r}; expected real, simulated or manual")
