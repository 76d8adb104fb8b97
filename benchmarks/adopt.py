"""How long a Kafka member takes to adopt the open windows of the partitions it is
given (the Redis index's open_windows, as SourceContext.adopt calls it): OPEN open
windows in Redis, spread over 12 partitions by Kafka's partitioner; the member is given
all 12, 6 (a group of two) or 1 (a member that joined a group of twelve). Each case is
timed ROUNDS times (default 3) on a redis-server started here on a free port; the best
is reported, with how long the event loop went without a turn at most (a 1 ms ticker).

    .venv/bin/python benchmarks/adopt.py [OPEN]      (default 100000)
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from helios.daemon.clock import RealClock
from helios.daemon.housekeeping import freeze_gc
from helios.daemon.model import EventRecord
from helios.plugins.index.redis import RedisIndex
from helios.plugins.sources.kafka_wire import partition_of

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.conftest import RedisServer  # noqa: E402

PARTITIONS = 12


async def ticker(longest: list[float]) -> None:
    last = time.perf_counter()
    while True:
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        longest[0] = max(longest[0], now - last)
        last = now


async def main(url: str, work: Path, n: int, rounds: int) -> None:
    clock = RealClock()
    index = RedisIndex(
        url, "adopt", "m0", 3600.0, 10_000_000, work / "spill.db", 1 << 30, 5.0, clock
    )
    await index.open()
    now = clock.now()
    for start in range(0, n, 2000):
        records = []
        for k in range(start, min(n, start + 2000)):
            rec = EventRecord(f"adopt-{k:09d}", "order.created", 0b111, 3, now, now + 3000.0)
            records.append(rec)
        await index.write(records, [])
    print(f"{n:,} open windows in Redis ({PARTITIONS} partitions)")
    freeze_gc()  # as heliosd's housekeeping does (its records out of the full GC's reach)
    for given in (PARTITIONS, PARTITIONS // 2, 1):
        parts = set(range(given))

        def wanted(event_id: str, parts: set[int] = parts) -> bool:
            return partition_of(event_id, PARTITIONS) in parts

        best, stall = float("inf"), 0.0
        for _ in range(rounds):
            longest = [0.0]
            tick = asyncio.create_task(ticker(longest))
            started = time.perf_counter()
            found = await index.open_windows(wanted)
            took = time.perf_counter() - started
            tick.cancel()
            chosen = [r for r in found if wanted(r.event_id)]
            best, stall = min(best, took), max(stall, longest[0])
        print(
            f"given {given:>2} of {PARTITIONS} partitions: {len(chosen):,} windows adopted, "
            f"read in {best * 1000:,.0f} ms; the event loop's longest wait {stall * 1000:.1f} ms"
        )
    await index.close()


if __name__ == "__main__":
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    work = Path(tempfile.mkdtemp(prefix="helios-adopt-"))
    server = RedisServer(work)
    server.persistence = ["--appendonly", "no"]
    server.start()
    try:
        asyncio.run(main(server.url, work, total, int(os.environ.get("ROUNDS", "3"))))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
