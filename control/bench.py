"""helios bench: stream synthetic copies with known faults to a running heliosd, then
report throughput, reconcile latency, and precision/recall against the ground truth."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import grpc
from helios.control.common import Credentials, pem, ts
from helios.daemon.model import CopyIn
from helios.plugins.sources.simulator import LatencyModel, Traffic, TrafficOptions, Truth
from helios.v1 import helios_pb2 as pb
from helios.v1 import helios_pb2_grpc as pb_grpc

SCORED = ("MISSING", "DUPLICATE", "INCONSISTENT")
EOF: Any = getattr(grpc.aio, "EOF")  # noqa: B009 - missing from the grpc type stubs


@dataclass
class BenchOptions:
    address: str = "127.0.0.1:50051"
    events: int = 200_000
    rate: float = 0.0  # copies per second; 0 = as fast as acknowledged
    batch_size: int = 1000
    drop: float = 0.01
    duplicate: float = 0.01
    corrupt: float = 0.005
    sources: list[str] = field(default_factory=lambda: ["aws", "gcp", "azure"])
    event_type: str = "bench.order"
    settle_seconds: float = 40.0
    seed: int = 1
    # Watch every outcome (COMPLETE included) to time COMPLETE end to end; otherwise
    # only the scored kinds are streamed, as a production watcher would, and whether
    # every event was decided is checked on a sample with GetEvent.
    end_to_end: bool = False
    sample: int = 2000


@dataclass
class Workload:
    batches: list[bytes]
    last_batch: dict[str, int]  # event_id -> batch holding its last distinct copy
    truth: Truth
    events: int
    copies: int


def build_workload(options: BenchOptions, run_id: str) -> Workload:
    """Generate the copies (faults included) and serialise the batches up front."""
    traffic = Traffic(
        TrafficOptions(
            rate_per_second=1000.0,
            sources=options.sources,
            event_types=[options.event_type],
            seed=options.seed,
            id_prefix=f"bench-{run_id}",
            latency_ms={s: LatencyModel(median=1.0, sigma=0.3) for s in options.sources},
            drop_probability=options.drop,
            duplicate_probability=options.duplicate,
            corrupt_probability=options.corrupt,
            reorder_keys=False,
            truth_limit=max(options.events, 1),
        ),
        options.sources,
    )
    traffic.produce(options.events)
    copies: list[CopyIn] = [c for _, c in traffic.flush()]
    truth = traffic.truth
    keep = set(truth.events)
    batches: list[bytes] = []
    last_batch: dict[str, int] = {}
    seen: set[tuple[str, str]] = set()
    size = options.batch_size
    for number, start in enumerate(range(0, len(copies), size)):
        chunk = copies[start : start + size]
        events = []
        for event_id, source, event_type, produced_at, payload in chunk:
            events.append(
                pb.Event(
                    event_id=event_id,
                    source=source,
                    event_type=event_type,
                    produced_at=ts(produced_at),
                    payload=payload,
                )
            )
            if (event_id, source) not in seen:
                seen.add((event_id, source))
                last_batch[event_id] = number
        batches.append(pb.PublishStreamRequest(batch_id=number, events=events).SerializeToString())
    return Workload(batches, last_batch, truth, len(keep), len(copies))


def _percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "count": 0}
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {
        "p50": pick(0.5),
        "p90": pick(0.9),
        "p99": pick(0.99),
        "max": round(ordered[-1], 3),
        "count": len(ordered),
    }


async def _sample_decided(
    query: Any, work: Workload, options: BenchOptions, deadline: float
) -> tuple[int, int]:
    """GetEvent on a sample of the events (the last ones sent among them) until each is
    decided or the deadline passes; returns (sampled, still undecided)."""
    ids = list(work.truth.events)
    step = max(1, len(ids) // max(1, options.sample))
    sample = ids[::step][: options.sample] + ids[-10:]
    pending = set(sample)
    while pending and time.perf_counter() < deadline:
        for event_id in list(pending):
            try:
                got = await query.GetEvent(pb.GetEventRequest(event_id=event_id), metadata=_auth())
            except grpc.aio.AioRpcError:
                continue
            if got.event.status != pb.EVENT_STATUS_PENDING:
                pending.discard(event_id)
        if pending:
            await asyncio.sleep(0.5)
    return len(set(sample)), len(pending)


async def _explain_undecided(query: Any, ids: list[str]) -> None:
    for event_id in ids[:5]:
        try:
            got = await query.GetEvent(pb.GetEventRequest(event_id=event_id), metadata=_auth())
        except grpc.aio.AioRpcError as exc:
            print(f"no outcome watched for {event_id}: GetEvent {exc.code().name}")
            continue
        e = got.event
        outcomes = [pb.OutcomeKind.Name(o.kind).removeprefix("OUTCOME_KIND_") for o in e.outcomes]
        print(
            f"no outcome watched for {event_id}: heliosd has it "
            f"{pb.EventStatus.Name(e.status).removeprefix('EVENT_STATUS_')}, "
            f"{len(e.copies)} copies, outcomes {outcomes}"
        )


def _channel(address: str) -> grpc.aio.Channel:
    """An asyncio channel with the CLI's credentials (--api-key, --tls-*)."""
    options = [
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ]
    c = Credentials
    if c.tls_ca or c.tls_cert:
        creds = grpc.ssl_channel_credentials(
            root_certificates=pem(c.tls_ca, "CA certificate") if c.tls_ca else None,
            private_key=pem(c.tls_key, "client key") if c.tls_key else None,
            certificate_chain=pem(c.tls_cert, "client certificate") if c.tls_cert else None,
        )
        return grpc.aio.secure_channel(address, creds, options)
    return grpc.aio.insecure_channel(address, options)


def _auth() -> tuple[tuple[str, str], ...]:
    """The metadata of every call: the CLI's --api-key, if any."""
    return (("authorization", f"Bearer {Credentials.api_key}"),) if Credentials.api_key else ()


async def _run(options: BenchOptions) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    t_build = time.perf_counter()
    work = build_workload(options, run_id)
    build_seconds = time.perf_counter() - t_build
    channel = _channel(options.address)
    try:
        await asyncio.wait_for(channel.channel_ready(), 5.0)
    except TimeoutError:
        await channel.close(None)
        raise ConnectionError(f"cannot reach heliosd at {options.address}") from None
    query = pb_grpc.QueryServiceStub(channel)
    predicted: dict[str, set[str]] = {k: set() for k in (*SCORED, "COMPLETE", "LATE")}
    decided: set[str] = set()
    latencies: list[float] = []
    sent_at: list[float] = [0.0] * len(work.batches)
    kinds = "" if options.end_to_end else " kind=MISSING,DUPLICATE,INCONSISTENT"
    watch = query.WatchOutcomes(
        pb.WatchOutcomesRequest(filter=f"event_type={options.event_type}{kinds}"),
        metadata=_auth(),
    )
    await watch.initial_metadata()
    prefix = f"bench-{run_id}-"

    async def read_outcomes() -> None:
        try:
            await _read()
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                raise

    async def _read() -> None:
        async for response in watch:
            now = time.perf_counter()
            for o in response.outcomes:
                if not o.event_id.startswith(prefix):
                    continue
                kind = pb.OutcomeKind.Name(o.kind).removeprefix("OUTCOME_KIND_")
                predicted.setdefault(kind, set()).add(o.event_id)
                if kind in ("COMPLETE", "INCONSISTENT", "MISSING"):
                    decided.add(o.event_id)
                if kind == "COMPLETE":
                    batch = work.last_batch.get(o.event_id)
                    if batch is not None and sent_at[batch]:
                        latencies.append((now - sent_at[batch]) * 1000.0)

    reader = asyncio.create_task(read_outcomes())
    publish: Any = channel.stream_stream(
        "/helios.v1.IngestService/PublishStream",
        request_serializer=None,
        response_deserializer=pb.PublishStreamResponse.FromString,
    )
    call = publish(metadata=_auth())
    accepted = 0
    rejected = 0
    acks = 0

    async def read_acks() -> float:
        nonlocal accepted, rejected, acks
        while True:
            ack = await call.read()
            if ack is EOF:
                return time.perf_counter()
            acks += 1
            accepted += ack.accepted
            rejected += len(ack.rejections)
            if acks == len(work.batches):
                return time.perf_counter()

    ack_task = asyncio.create_task(read_acks())
    interval = options.batch_size / options.rate if options.rate > 0 else 0.0
    start = time.perf_counter()
    for number, batch in enumerate(work.batches):
        if interval:
            delay = start + number * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        sent_at[number] = time.perf_counter()
        await call.write(batch)
    await call.done_writing()
    finished = await ack_task
    elapsed = finished - start
    deadline = time.perf_counter() + options.settle_seconds
    if options.end_to_end:
        while len(decided) < work.events and time.perf_counter() < deadline:
            await asyncio.sleep(0.1)
        checked, undecided = work.events, work.events - len(decided)
        if undecided:  # say which, and what heliosd holds for them
            await _explain_undecided(query, [e for e in work.truth.events if e not in decided])
    else:
        checked, undecided = await _sample_decided(query, work, options, deadline)
    await asyncio.sleep(0.5)
    watch.cancel()
    reader.cancel()
    stats = await query.GetStats(pb.GetStatsRequest(), metadata=_auth())
    await channel.close(None)

    truth_sets = {
        "MISSING": work.truth.missing(),
        "DUPLICATE": set(work.truth.duplicated),
        "INCONSISTENT": set(work.truth.inconsistent),
    }
    scores = {}
    correct = undecided == 0 and rejected == 0
    for kind in SCORED:
        p, t = predicted[kind], truth_sets[kind]
        hit = len(p & t)
        precision = hit / len(p) if p else 1.0
        recall = hit / len(t) if t else 1.0
        scores[kind] = {
            "precision": round(precision, 6),
            "recall": round(recall, 6),
            "predicted": len(p),
            "truth": len(t),
        }
        correct = correct and precision == 1.0 and recall == 1.0
    lat = stats.reconcile_latency
    return {
        "run_id": run_id,
        "events": work.events,
        "copies": work.copies,
        "batches": len(work.batches),
        "batch_size": options.batch_size,
        "target_rate": options.rate,
        "seconds": round(elapsed, 3),
        "copies_per_second": round(work.copies / elapsed, 1),
        "events_per_second": round(work.events / elapsed, 1),
        "accepted": accepted,
        "rejected": rejected,
        "decided": checked - undecided,
        "decided_checked": checked,
        "end_to_end": options.end_to_end,
        "complete_latency_ms": _percentiles(latencies),
        "server_latency_ms": {"p50": lat.p50_ms, "p99": lat.p99_ms, "max": lat.max_ms},
        "scores": scores,
        "correct": correct,
        "build_seconds": round(build_seconds, 2),
    }


def run_bench(options: BenchOptions) -> dict[str, Any]:
    return asyncio.run(_run(options))


def print_report(report: dict[str, Any]) -> None:
    rate = (
        f"{report['target_rate']:,.0f} copies/s target" if report["target_rate"] else "full speed"
    )
    print(
        f"bench {report['run_id']}: {report['events']:,} events, {report['copies']:,} copies "
        f"in {report['batches']:,} batches of {report['batch_size']} ({rate})"
    )
    print(
        f"sustained: {report['copies_per_second']:,.0f} copies/s "
        f"({report['events_per_second']:,.0f} events/s) over {report['seconds']} s; "
        f"accepted {report['accepted']:,}, rejected {report['rejected']:,}"
    )
    lat = report["complete_latency_ms"]
    if report["end_to_end"]:
        print(
            f"COMPLETE latency ms (last copy sent -> outcome received): p50 {lat['p50']}  "
            f"p90 {lat['p90']}  p99 {lat['p99']}  max {lat['max']}  n={lat['count']:,}"
        )
    srv = report["server_latency_ms"]
    print(f"  in the daemon (receipt -> outcome): p50 {srv['p50']:.2f}  p99 {srv['p99']:.2f}")
    if report["end_to_end"]:
        print(f"decided {report['decided']:,} of {report['events']:,} events")
    else:
        print(
            f"decided {report['decided']:,} of a sample of {report['decided_checked']:,} "
            "events (GetEvent)"
        )
    print(f"{'OUTCOME':<14}{'PRECISION':>10}{'RECALL':>10}{'PREDICTED':>11}{'TRUTH':>9}")
    for kind, s in report["scores"].items():
        print(
            f"{kind:<14}{s['precision']:>10.4f}{s['recall']:>10.4f}{s['predicted']:>11,}{s['truth']:>9,}"
        )
    print("all outcomes correct" if report["correct"] else "OUTCOMES DISAGREE WITH GROUND TRUTH")
