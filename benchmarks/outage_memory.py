"""What a Kafka member holds in memory while Redis is away: one heliosd (Redis index,
Kafka input) takes a first part of the topic with Redis up, then Redis is stopped and
EVENTS more events (3 copies each) are produced. The member reconciles them into its
local spill; besides the spill file it keeps in memory the records not yet in Redis
(read your writes) and the outcomes waiting for Redis (docs/kafka.md). Reported every
few seconds: copies taken, the spill's bytes, the member's resident memory (RSS); at
the end the memory it gained per copy spilled, then again once Redis is back and the
spill is replayed; CYCLES outages in a row (default 2: whether the memory of the first
is used again by the second, or grows).

    .venv/bin/python benchmarks/outage_memory.py [EVENTS]      (default 200000)

It starts its own Tansu broker and redis-server on free ports. SPILL_MAX_BYTES sets
index.options.spill_max_bytes (default: heliosd's), to see memory at the push-back.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import grpc
import psutil
from helios.v1 import helios_pb2 as pb
from helios.v1 import helios_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.kafka import SOURCES, fill  # noqa: E402
from tests.conftest import KafkaBroker, RedisServer, start_daemon_process  # noqa: E402

FIRST = 2_000  # events taken with Redis up, before the outage
# Short: the reconciler keeps every record, closed ones too, in its deadline FIFO
# until window + grace has passed (the sweep pops them); with a long window that
# memory, not the outage's, would be measured.
WINDOW = 5.0


def config(bootstrap: str, redis_url: str) -> str:
    spill = os.environ.get("SPILL_MAX_BYTES")
    more = f", spill_max_bytes = {int(spill)}" if spill else ""
    return f"""
[reconcile]
window_seconds = {WINDOW}
grace_seconds = 1.0
[index]
backend = "redis"
options = {{ url = "{redis_url}", timeout_seconds = 0.5{more} }}
[sources.inputs.bus]
plugin = "kafka"
bootstrap_servers = "{bootstrap}"
group_id = "outage"
outcomes_topic = ""
"""


def stats(stub: pb_grpc.QueryServiceStub) -> tuple[int, str, str]:
    found = stub.GetStats(pb.GetStatsRequest(), timeout=10)
    details = found.storage.details
    return int(found.copies_received), details.get("spill", ""), details.get("health", "")


def spill_bytes(line: str) -> int:
    match = re.search(r"writes, ([\d,]+) of", line)
    return int(match.group(1).replace(",", "")) if match else 0


def outage(
    broker: KafkaBroker,
    redis_server: RedisServer,
    stub: pb_grpc.QueryServiceStub,
    process: psutil.Process,
    events: int,
    produced: int,
    cycle: int,
) -> int:
    """One outage: Redis stopped, `events` more produced and spilled, Redis started
    again and the spill replayed. Returns the events produced so far."""
    taken = stats(stub)[0]
    before = process.memory_info().rss
    redis_server.stop()
    print(f"outage {cycle + 1}: Redis stopped; heliosd RSS {before / 2**20:,.0f} MiB")
    asyncio.run(fill(broker.bootstrap, events, start=produced, create=False))
    total = (produced + events) * len(SOURCES)
    last, still = -1, 0.0
    while True:
        copies, spill, health = stats(stub)
        rss = process.memory_info().rss
        print(
            f"  {copies:,} copies taken, spill {spill_bytes(spill) / 2**20:,.1f} MiB, "
            f"RSS {rss / 2**20:,.0f} MiB ({health[:40]})"
        )
        if copies >= total:
            break
        still = still + 2.0 if copies == last else 0.0
        if still >= 10.0:  # pushed back at the spill budget
            print("  no copy taken for 10 s: pushed back at the spill budget")
            break
        last = copies
        time.sleep(2.0)
    time.sleep(2.0)
    copies, spill, _ = stats(stub)
    during = process.memory_info().rss
    spilled = copies - taken
    print(
        f"  while Redis is away: {spilled:,} copies spilled "
        f"({spill_bytes(spill) / 2**20:,.1f} MiB of spill file), heliosd RSS "
        f"{during / 2**20:,.0f} MiB: {(during - before) / max(1, spilled):,.0f} bytes of "
        f"memory more per copy spilled ({(during - before) * 3 / max(1, spilled):,.0f} per "
        "event of 3 copies)"
    )
    redis_server.start()
    deadline = time.monotonic() + 300
    while stats(stub)[2] != "up" and time.monotonic() < deadline:
        time.sleep(1.0)
    time.sleep(WINDOW + 5.0)  # the FIFO swept of everything spilled
    after = process.memory_info().rss
    print(f"  Redis back, spill replayed ({stats(stub)[2]}): heliosd RSS {after / 2**20:,.0f} MiB")
    return produced + events


def main() -> None:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    work = Path(tempfile.mkdtemp(prefix="helios-outage-memory-"))
    broker, redis_server = KafkaBroker(work), RedisServer(work)
    redis_server.persistence = ["--appendonly", "no"]
    broker.start()
    redis_server.start()
    member = None
    try:
        asyncio.run(fill(broker.bootstrap, FIRST, start=0))
        home = work / "m0"
        home.mkdir()
        member = start_daemon_process(home, config(broker.bootstrap, redis_server.url))
        channel = grpc.insecure_channel(member.address)
        stub = pb_grpc.QueryServiceStub(channel)
        process = psutil.Process(member.proc.pid)
        while stats(stub)[0] < FIRST * len(SOURCES):
            time.sleep(0.2)
        time.sleep(2.0)
        produced = FIRST
        for cycle in range(int(os.environ.get("CYCLES", "2"))):
            produced = outage(broker, redis_server, stub, process, events, produced, cycle)
        channel.close()
    finally:
        if member is not None:
            member.proc.terminate()
            member.proc.wait(30)
        broker.stop()
        redis_server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
