"""How long a restart takes to read the sqlite index back: EVENTS events admitted (one in
ten left with an open window), heliosd stopped, then built and started again on the
same data directory; prints the time to start, what was resumed, and the file's size.

    .venv/bin/python benchmarks/restart.py [EVENTS]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import orjson
from helios.daemon.app import Daemon
from helios.daemon.clock import ManualClock
from helios.daemon.config import parse


async def main(events: int) -> None:
    data = Path(tempfile.mkdtemp(prefix="helios-restart-"))
    config = parse(
        f'[daemon]\nconsole_address = ""\ndata_dir = "{data}"\n'
        '[reconcile]\nwindow_seconds = 3600.0\n[index]\nbackend = "sqlite"\n'
        f"max_records = {events}\n"
    )
    clock = ManualClock()
    daemon = Daemon.build(config, clock=clock)
    await daemon.start()
    for start in range(0, events, 1000):
        batch = []
        for i in range(start, min(events, start + 1000)):
            payload = orjson.dumps({"id": i, "amount": i % 97, "currency": "EUR"})
            sources = ("aws",) if i % 10 == 0 else ("aws", "gcp", "azure")
            batch += [(f"e{i}", s, "order.created", 0.0, payload) for s in sources]
        for at in range(0, len(batch), 3000):
            await daemon.admission.admit(batch[at : at + 3000])
        clock.advance(0.01)
    await daemon.stop()
    size = sum(p.stat().st_size for p in data.glob("index.sqlite3*"))
    t0 = time.perf_counter()
    again = Daemon.build(config, clock=clock)
    await again.start()
    elapsed = time.perf_counter() - t0
    records, open_windows = await again.index.count(), len(again.reconciler.open)
    await again.stop()
    print(
        f"{events:,} events ({records:,} closed, {open_windows:,} open windows resumed): "
        f"start took {elapsed:.2f} s; index file {size / 1_048_576:.1f} MiB"
    )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000))
