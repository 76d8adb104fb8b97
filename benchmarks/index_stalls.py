"""The longest single put_many of the in-memory index, as the daemon calls it (a flush
of about 333 closed records), while it fills to `max_records` and then keeps evicting:
a stall there is a stall of heliosd's event loop.

    .venv/bin/python benchmarks/index_stalls.py [MAX_RECORDS] [TOTAL]
    (defaults: 2,000,000 kept, 3,500,000 put)
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time

from helios.daemon.model import EventRecord
from helios.plugins.index.memory import MemoryIndex

BATCH = 333  # records closed per flush of a 1000-copy batch of 3-source events


async def main(max_records: int, total: int) -> None:
    index = MemoryIndex(ttl_seconds=86_400.0, max_records=max_records)
    durations: list[tuple[float, int]] = []
    gc.set_threshold(700, 50, 1000)  # as heliosd runs, freezing live objects every 2 s
    for number, start in enumerate(range(0, total, BATCH)):
        if number % 100 == 0:  # about 2 s of flushes at 50,000 copies/s
            gc.collect(1)
            gc.freeze()
        batch = [
            EventRecord(f"bench-0123abcd-{i:010d}", "bench.order", 7, 3, float(i), float(i))
            for i in range(start, min(total, start + BATCH))
        ]
        t0 = time.perf_counter()
        await index.put_many(batch)
        durations.append((time.perf_counter() - t0, start))
    ordered = sorted(d for d, _ in durations)
    worst = sorted(durations, reverse=True)[:5]
    print(f"{total:,} records put in flushes of {BATCH}, {max_records:,} kept")
    print(
        f"  put_many: p50 {ordered[len(ordered) // 2] * 1e3:.3f} ms  "
        f"p99.9 {ordered[int(len(ordered) * 0.999)] * 1e3:.3f} ms  "
        f"max {ordered[-1] * 1e3:.1f} ms"
    )
    print("  longest:", ", ".join(f"{d * 1e3:.1f} ms at {at:,}" for d, at in worst))


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    asyncio.run(main(*(args or [2_000_000, 3_500_000])))
