"""Where ingest time goes, per copy, with no network: protobuf parse, conversion,
validation (JSON + canonical digest), index prefetch, reconcile, flush.

    .venv/bin/python benchmarks/reconcile_stages.py [EVENTS]
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time

from helios.control.bench import BenchOptions, build_workload
from helios.control.convert import copies_from
from helios.daemon.app import Daemon
from helios.daemon.clock import ManualClock
from helios.daemon.config import parse
from helios.daemon.plugins import load
from helios.v1 import helios_pb2 as pb


async def main(events: int) -> None:
    config = parse('[daemon]\nconsole_address = ""\n')
    work = build_workload(BenchOptions(events=events), "stages")
    manager, registry = load()
    daemon = Daemon(config, manager, registry, ManualClock())
    pipeline, reconciler = daemon.pipeline, daemon.reconciler
    gc.collect()
    gc.freeze()
    gc.set_threshold(700, 50, 1000)  # as heliosd runs
    spent = dict.fromkeys(("parse", "convert", "validate", "prefetch", "reconcile", "flush"), 0.0)
    for raw in work.batches:
        t0 = time.perf_counter()
        request = pb.PublishStreamRequest.FromString(raw)
        t1 = time.perf_counter()
        copies = copies_from(request.events)
        t2 = time.perf_counter()
        good, _ = pipeline.check(copies)
        t3 = time.perf_counter()
        closed = pipeline.resident
        if closed is None:
            closed = await daemon.index.get_many(
                {c[0] for c in good if c[0] not in reconciler.open}
            )
        t4 = time.perf_counter()
        reconciler.apply(good, daemon.clock.now(), closed)
        t5 = time.perf_counter()
        await pipeline._flush([])
        t6 = time.perf_counter()
        for name, a, b in (
            ("parse", t0, t1),
            ("convert", t1, t2),
            ("validate", t2, t3),
            ("prefetch", t3, t4),
            ("reconcile", t4, t5),
            ("flush", t5, t6),
        ):
            spent[name] += b - a
    total = sum(spent.values())
    print(f"{work.copies:,} copies of {work.events:,} events, batches of 1000, in-process")
    for name, seconds in spent.items():
        print(f"  {name:<10} {seconds / work.copies * 1e6:6.2f} us/copy")
    print(
        f"  {'total':<10} {total / work.copies * 1e6:6.2f} us/copy = "
        f"{work.copies / total:,.0f} copies/s on one core"
    )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
