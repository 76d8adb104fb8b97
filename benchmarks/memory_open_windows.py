"""Resident memory with one million events in flight (every window open, 2 of 3 copies).

.venv/bin/python benchmarks/memory_open_windows.py [EVENTS]
"""

from __future__ import annotations

import gc
import sys
import time

import orjson
import psutil
from helios.daemon.ingest import canonical_digest
from helios.daemon.metrics import MetricsRollup
from helios.daemon.reconciler import Reconciler

SOURCES = ["aws", "gcp", "azure"]


def main(events: int) -> None:
    gc.freeze()
    gc.set_threshold(700, 50, 1000)  # as heliosd runs
    process = psutil.Process()
    before = process.memory_info().rss
    # A window of an hour: nothing closes while the events load.
    reconciler = Reconciler(SOURCES, [], 3600.0, 5.0, MetricsRollup(SOURCES, 1440))
    started = time.perf_counter()
    batch = []
    for i in range(events):
        event_id = f"evt-{i:012d}"
        body = {
            "id": event_id,
            "type": "order.created",
            "customer": f"c-{i % 100_000:05d}",
            "amount": 12.5,
            "currency": "EUR",
            "items": 3,
            "seq": i,
        }
        payload = bytes(memoryview(orjson.dumps(body)))  # exact-size, as gRPC hands them over
        digest = canonical_digest(payload)
        batch.append((event_id, "aws", "order.created", 1.0, payload, digest))
        batch.append((event_id, "gcp", "order.created", 1.0, payload, digest))
        if len(batch) >= 2000:
            reconciler.apply(batch, 1000.0, {})
            reconciler.drain()
            batch = []
    reconciler.apply(batch, 1000.0, {})
    reconciler.drain()
    elapsed = time.perf_counter() - started
    rss = process.memory_info().rss
    print(f"{len(reconciler.open):,} events in flight (2 of 3 copies each, ~150-byte payloads)")
    print(
        f"RSS {rss / 2**20:,.0f} MiB ({(rss - before) / len(reconciler.open):,.0f} bytes/event; "
        f"process started at {before / 2**20:,.0f} MiB); loaded in {elapsed:.1f} s"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
