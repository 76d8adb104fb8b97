"""The longest the event loop waits while WINDOWS open windows expire together: they are
opened (one copy of three each), the clock moves past their deadline, and the sweep
declares them MISSING, while a heartbeat task notes the longest gap between its turns.

    .venv/bin/python benchmarks/sweep_stalls.py [WINDOWS] [BACKEND]
    (defaults: 400,000 windows, memory)
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tempfile
import time

import orjson
from helios.daemon.app import Daemon
from helios.daemon.clock import ManualClock
from helios.daemon.config import parse
from helios.daemon.model import OutcomeKind


async def main(windows: int, backend: str) -> None:
    data = tempfile.mkdtemp(prefix="helios-sweep-")
    config = parse(
        f'[daemon]\nconsole_address = ""\ndata_dir = "{data}"\n'
        f'[index]\nbackend = "{backend}"\n[reconcile]\nmax_open_windows = {windows + 1}\n'
    )
    clock = ManualClock()
    daemon = Daemon.build(config, clock=clock)
    await daemon.start()
    payload = orjson.dumps({"amount": 1})
    for start in range(0, windows, 5000):
        batch = [
            (f"e{i}", "aws", "order.created", 0.0, payload) for i in range(start, start + 5000)
        ]
        await daemon.admission.admit(batch[: windows - start])
    await daemon.pipeline.drain()
    gc.collect()
    gc.freeze()
    gc.set_threshold(700, 50, 1000)  # as heliosd runs
    clock.advance(config.reconcile.window_seconds + config.reconcile.grace_seconds + 1)
    longest = 0.0
    beating = True

    async def heartbeat() -> None:
        nonlocal longest
        last = time.perf_counter()
        while beating:
            await asyncio.sleep(0)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    await asyncio.sleep(0)
    t0 = time.perf_counter()
    await daemon.pipeline.sweep()  # what the window-sweep job does (it runs too)
    await daemon.pipeline.drain()
    declared = daemon.reconciler.outcome_counts[OutcomeKind.MISSING]
    total = time.perf_counter() - t0
    beating = False
    await beat
    await daemon.stop()
    print(
        f"{windows:,} windows expiring together ({backend}): {declared:,} declared MISSING in "
        f"{total:.2f} s; the longest the event loop waited: {longest * 1000:.0f} ms"
    )


if __name__ == "__main__":
    asyncio.run(
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 400_000,
            sys.argv[2] if len(sys.argv) > 2 else "memory",
        )
    )
