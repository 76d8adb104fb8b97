"""Kafka + Redis scale-out, side by side in one run: a 12-partition topic is filled with
EVENTS events x 3 copies *before* any heliosd starts (so no load generator shares the
two cores), then a group of one member reconciles all of it and a group of two members
reads it all again. The members of a group are launched together. A round runs each
group twice, in the order one, two, two, one (the next round two, one, one, two), so
that a machine whose speed drifts during the round (this one's did by a third within
minutes on 2026-11-30) drifts alike for both; ROUNDS rounds (default 3). Every run has
its own group and Redis prefix and starts from an empty Redis (FLUSHALL before it).
Reported: copies per second per run, from when every member of the run is taking
copies to the last copy (the whole run) and to the first member's last copy (while
every member had copies left); two members over one in each round, both ways (the
mean of its two-member runs over the mean of its one-member runs); and the medians of
the rounds. The bar is judged on the whole run.

    .venv/bin/python benchmarks/kafka.py [EVENTS]      (default 100000)
    ROUNDS=5 REDIS_AOF=no .venv/bin/python benchmarks/kafka.py 400000

It starts its own Tansu broker and redis-server on free ports. REDIS_AOF sets Redis's
append-only file: `always` (the default here, as in the tests: every write fsynced
before Redis answers), `everysec` (Redis's recommended setting) or `no` (Redis as it
ships: no AOF). MAX_BATCH and IN_FLIGHT set the members' max_batch and in_flight.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import orjson
import psutil
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from helios.v1 import helios_pb2 as pb
from helios.v1 import helios_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.conftest import KafkaBroker, RedisServer, start_daemon_process  # noqa: E402

SOURCES = ("aws", "gcp", "azure")


async def fill(bootstrap: str, events: int, start: int = 0, create: bool = True) -> float:
    """Events `start` to `start + events`, three copies each (the topics made first)."""
    if create:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        await admin.create_topics(
            [NewTopic(n, 12, 1) for n in ("helios.events", "helios.outcomes", "helios.dlq")]
        )
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=262144)
    await producer.start()
    started = time.perf_counter()
    for i in range(start, start + events):
        event_id = f"k-{i:08d}"
        payload = orjson.dumps({"id": event_id, "amount": i % 100, "currency": "EUR"})
        for source in SOURCES:
            value = pb.Event(
                event_id=event_id, source=source, event_type="order.created", payload=payload
            ).SerializeToString()
            await producer.send("helios.events", value, key=event_id.encode())
    await producer.flush()
    await producer.stop()
    return time.perf_counter() - started


def config(bootstrap: str, redis_url: str, group: str, member: str) -> str:
    return f"""
[reconcile]
window_seconds = 120.0
[index]
backend = "redis"
options = {{ url = "{redis_url}", prefix = "{group}", member = "{member}" }}
[sources.inputs.bus]
plugin = "kafka"
bootstrap_servers = "{bootstrap}"
group_id = "{group}"
outcomes_topic = ""
max_batch = {os.environ.get("MAX_BATCH", "2000")}
in_flight = {os.environ.get("IN_FLIGHT", "8")}
"""


CHANNELS: dict[str, grpc.Channel] = {}


def copies_of(address: str) -> int:
    """One channel per member, kept: a new channel per poll cost this process more CPU
    than the poll, on the cores being measured."""
    channel = CHANNELS.get(address)
    if channel is None:
        channel = CHANNELS[address] = grpc.insecure_channel(address)
    stats = pb_grpc.QueryServiceStub(channel).GetStats(pb.GetStatsRequest(), timeout=10)
    return int(stats.copies_received)


def cpu(pids: dict[str, int]) -> dict[str, float]:
    found = {}
    for name, pid in pids.items():
        times = psutil.Process(pid).cpu_times()
        found[name] = times.user + times.system
    return found


def run(
    members: int, bootstrap: str, redis_url: str, total: int, work: Path, others: dict[str, int]
) -> tuple[float, float, float]:
    """Copies per second over the whole run and while every member had copies left, and
    copies per busy core-second of the whole machine."""
    group = f"bench{members}-{len(list(work.iterdir()))}"  # a new group each run
    homes = []
    for k in range(members):
        homes.append(work / f"{group}-{k}")
        homes[-1].mkdir()
    # Launched together: launched one after the other, the first member took 36,000-
    # 73,000 copies of its partitions before the second took any, and finished up to
    # 2.9 s of a 9.4 s run before it, alone meanwhile (2026-11-30).
    launched = time.perf_counter()
    with ThreadPoolExecutor(members) as pool:
        procs = list(
            pool.map(
                lambda k: start_daemon_process(
                    homes[k], config(bootstrap, redis_url, group, f"m{k}")
                ),
                range(members),
            )
        )
    try:
        first = None
        counts = [0] * members
        changed = [0.0] * members  # when each member's count last grew
        seen: list[tuple[float, int]] = []  # (when, copies taken by all members)
        while True:
            latest = [copies_of(p.address) for p in procs]
            now = time.perf_counter()
            changed = [
                now if n != c else t for n, c, t in zip(latest, counts, changed, strict=True)
            ]
            counts = latest
            # Measured from when every member is taking copies: a member that joined
            # first reads alone until the group has rebalanced, and that pause is the
            # group protocol's (about 5 s on Tansu), not reconciliation.
            if first is None and all(counts):
                first = (now, sum(counts))
                first_counts = list(counts)
                pids = {
                    **others,
                    "this benchmark": os.getpid(),
                    **{f"heliosd {k}": p.proc.pid for k, p in enumerate(procs)},
                }
                before = cpu(pids)
                machine = psutil.cpu_times()
            if first is not None:
                seen.append((now, sum(counts)))
            if sum(counts) >= total:
                break
            time.sleep(0.1)
        assert first is not None
        print(
            f"  measured from {first[0] - launched:.1f} s after the members were launched; "
            f"copies each member had taken by then: {first_counts}"
        )
        elapsed = now - first[0]
        rate = (total - first[1]) / elapsed
        # While every member had copies left: up to the first member's last copy. After
        # it that member has nothing to do (partitions are split by count, not speed),
        # which a pre-filled topic shows and a stream that goes on does not.
        busy_until, busy_copies = max(
            (w for w in seen if w[0] <= min(changed)), default=(now, total)
        )
        steady = rate
        if busy_until > first[0]:
            steady = (busy_copies - first[1]) / (busy_until - first[0])
        used = {k: v - before[k] for k, v in cpu(pids).items()}
        shares = ", ".join(f"{k} {v / elapsed:.2f}" for k, v in used.items())
        after = psutil.cpu_times()
        idle = (after.idle - machine.idle) / elapsed
        shares += f"; the machine idle {idle:.2f} of {psutil.cpu_count()} cores"
        kernel = {
            k: (getattr(after, k) - getattr(machine, k)) / elapsed
            for k in ("softirq", "irq", "steal", "iowait")
        }
        shares += " (" + ", ".join(f"{k} {v:.2f}" for k, v in kernel.items()) + ")"
        print(f"  cores busy while measured ({elapsed:.1f} s): {shares}")
        if members > 1:  # a member done early leaves the others alone at the end
            ends = ", ".join(f"{t - first[0]:.1f} s" for t in changed)
            print(f"  each member's last copy, from the start of the measurement: {ends}")
            print(
                f"  while every member had copies left ({busy_until - first[0]:.1f} s): "
                f"{steady:,.0f} copies/s"
            )
        print(
            f"{members} member(s): {total:,} copies, {rate:,.0f} copies/s "
            f"({rate / members:,.0f} per member); split {counts}"
        )
        busy = psutil.cpu_count() - idle
        return rate, steady, rate / busy
    finally:
        for channel in CHANNELS.values():
            channel.close()
        CHANNELS.clear()
        for p in procs:
            p.proc.terminate()
        for p in procs:
            p.proc.wait(30)


def main() -> None:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    work = Path(tempfile.mkdtemp(prefix="helios-kafka-bench-"))
    broker, redis_server = KafkaBroker(work), RedisServer(work)
    aof = os.environ.get("REDIS_AOF", "always")
    if aof not in ("always", "everysec", "no"):
        sys.exit(f"REDIS_AOF must be always, everysec or no, not {aof!r}")
    redis_server.persistence = (
        ["--appendonly", "no"] if aof == "no" else ["--appendonly", "yes", "--appendfsync", aof]
    )
    print(f"Redis append-only file: {aof}")
    broker.start()
    redis_server.start()
    try:
        took = asyncio.run(fill(broker.bootstrap, events))
        total = events * len(SOURCES)
        print(f"topic filled: {total:,} copies in 12 partitions in {took:.1f} s")
        assert broker.proc is not None and redis_server.proc is not None
        others = {"tansu": broker.proc.pid, "redis": redis_server.proc.pid}
        rounds = int(os.environ.get("ROUNDS", "3"))
        cores = psutil.cpu_count()
        ratios, steadies, allowed = [], [], []
        for k in range(rounds):
            got: dict[int, list[tuple[float, float, float]]] = {1: [], 2: []}
            # one, two, two, one (then two, one, one, two): a machine whose speed drifts
            # during the round drifts alike for both, to first order
            for members in (1, 2, 2, 1) if k % 2 == 0 else (2, 1, 1, 2):
                redis_server.cli("FLUSHALL", "SYNC")
                print(f"round {k + 1}:")
                got[members].append(
                    run(members, broker.bootstrap, redis_server.url, total, work, others)
                )
            one = statistics.mean(r for r, _, _ in got[1])
            two = statistics.mean(r for r, _, _ in got[2])
            steady = statistics.mean(s for _, s, _ in got[2]) / statistics.mean(
                s for _, s, _ in got[1]
            )
            per_core = statistics.mean(c for _, _, c in got[2])
            ratios.append(two / one)
            steadies.append(steady)
            # What the machine allows: every core busy at what a copy cost in the
            # two-member run (heliosd, Redis, the broker and the kernel together).
            allowed.append(per_core * cores / one)
            print(
                f"round {k + 1}: two members / one: {two / one:.2f}x over the whole run, "
                f"{steady:.2f}x while every member had copies left (at most "
                f"{allowed[-1]:.2f}x on {cores} cores: the two-member run took "
                f"{per_core:,.0f} copies per busy core-second of the machine)"
            )
        shown = ", ".join(f"{r:.2f}x" for r in ratios)
        shown_steady = ", ".join(f"{r:.2f}x" for r in steadies)
        print(
            f"two members / one, median of {rounds} rounds: {statistics.median(ratios):.2f}x "
            f"over the whole run ({shown}); {statistics.median(steadies):.2f}x while every "
            f"member had copies left ({shown_steady}); the machine allowed a median "
            f"{statistics.median(allowed):.2f}x"
        )
    finally:
        broker.stop()
        redis_server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
