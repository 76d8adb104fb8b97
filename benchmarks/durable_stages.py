"""The cost of durability in process, no network: the same workload admitted through
`Admission.submit` (as PublishStream does: up to 64 batches in flight, acknowledgements
awaited in order) into a started daemon with the memory index, the sqlite index with
synchronous = full, and with synchronous = normal, alternating ROUNDS times.

    .venv/bin/python benchmarks/durable_stages.py [EVENTS] [ROUNDS]
"""

from __future__ import annotations

import asyncio
import collections
import sys
import tempfile
import time
from collections.abc import Awaitable

from helios.control.bench import BenchOptions, build_workload
from helios.control.convert import copies_from
from helios.daemon.app import Daemon
from helios.daemon.clock import ManualClock
from helios.daemon.config import parse
from helios.v1 import helios_pb2 as pb

MODES = {
    "memory": '[index]\nbackend = "memory"\n',
    "sqlite full": '[index]\nbackend = "sqlite"\noptions = { synchronous = "full" }\n',
    "sqlite normal": '[index]\nbackend = "sqlite"\noptions = { synchronous = "normal" }\n',
}


async def run(mode: str, batches: list[list[tuple[str, str, str, float, bytes]]]) -> float:
    data = tempfile.mkdtemp(prefix="helios-durable-")
    config = parse(f'[daemon]\nconsole_address = ""\ndata_dir = "{data}"\n' + MODES[mode])
    daemon = Daemon.build(config, clock=ManualClock())
    await daemon.start()
    acks: collections.deque[Awaitable[None]] = collections.deque()
    started = time.perf_counter()
    for copies in batches:
        _, stored = await daemon.admission.submit(copies, wait=True)
        acks.append(stored)
        while len(acks) > 64:
            await acks.popleft()
    while acks:
        await acks.popleft()
    elapsed = time.perf_counter() - started
    await daemon.stop()
    return elapsed


async def main(events: int, rounds: int) -> None:
    work = build_workload(BenchOptions(events=events), "durable")
    batches = [copies_from(pb.PublishStreamRequest.FromString(raw).events) for raw in work.batches]
    results: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode in MODES:
            results[mode].append(work.copies / await run(mode, batches))
    print(f"{work.copies:,} copies of {work.events:,} events, batches of 1000, in process")
    memory = results["memory"]
    for mode, rates in results.items():
        ratio = ", ".join(f"{r / m:.2f}" for r, m in zip(rates, memory, strict=True))
        shown = ", ".join(f"{r:,.0f}" for r in rates)
        print(f"  {mode:<14} {shown} copies/s   vs memory: {ratio}")


if __name__ == "__main__":
    asyncio.run(
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 100_000,
            int(sys.argv[2]) if len(sys.argv) > 2 else 2,
        )
    )
