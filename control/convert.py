"""Conversions between the daemon's objects and helios.v1 messages."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import combinations
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from helios.daemon.app import SourceStatus
from helios.daemon.detection import Anomaly
from helios.daemon.model import CopyIn, EventRecord, Outcome
from helios.v1 import helios_pb2 as pb


def ts(seconds: float) -> Timestamp:
    whole = int(seconds // 1)
    return Timestamp(seconds=whole, nanos=int((seconds - whole) * 1e9))


def seconds(stamp: Timestamp) -> float:
    return stamp.seconds + stamp.nanos * 1e-9


def copies_from(events: Sequence[pb.Event]) -> list[CopyIn]:
    """Proto events -> reconciler tuples (the ingest hot path)."""
    out: list[CopyIn] = []
    append = out.append
    for e in events:
        produced = e.produced_at
        append(
            (
                e.event_id,
                e.source,
                e.event_type,
                produced.seconds + produced.nanos * 1e-9,
                e.payload,
            )
        )
    return out


def outcome_pb(outcome: Outcome) -> pb.Outcome:
    return pb.Outcome(
        kind=int(outcome.kind),  # type: ignore[arg-type]
        event_id=outcome.event_id,
        event_type=outcome.event_type,
        sources=outcome.sources,
        time=ts(outcome.time),
        late_by_seconds=outcome.late_by,
        sequence=outcome.sequence,
    )


def add_outcomes(target: Any, outcomes: Iterable[Outcome]) -> None:
    """Append outcomes to a repeated Outcome field (the fast way: no temporary messages)."""
    add = target.add
    for o in outcomes:
        t = o.time
        whole = int(t // 1)
        m = add(kind=o.kind, event_id=o.event_id, event_type=o.event_type, sequence=o.sequence)
        if o.sources:
            m.sources.extend(o.sources)
        if o.late_by:
            m.late_by_seconds = o.late_by
        stamp = m.time
        stamp.seconds = whole
        stamp.nanos = int((t - whole) * 1e9)


def anomaly_pb(a: Anomaly) -> pb.Anomaly:
    return pb.Anomaly(
        id=a.id,
        detector=a.detector,
        minute=ts(a.minute),
        detected_at=ts(a.detected_at),
        score=a.score,
        severity=a.severity,
        metrics=a.metrics,
        explanation=a.explanation,
        values=a.values,
        baseline_means={m: b[0] for m, b in a.baselines.items()},
        baseline_spreads={m: b[1] for m, b in a.baselines.items()},
        diagnosis=pb.Diagnosis(
            kind=a.diagnosis.kind,
            target=a.diagnosis.target,
            confidence=a.diagnosis.confidence,
            evidence=a.diagnosis.evidence,
            onset=a.diagnosis.onset,
        ),
    )


def source_stats_pb(s: SourceStatus) -> pb.SourceStats:
    return pb.SourceStats(
        source=s.source,
        copies=s.copies,
        expected=s.expected,
        delivered=s.delivered,
        completeness=s.completeness,
        duplicates=s.duplicates,
        paused=s.paused,
    )


def record_pb(record: EventRecord, sources: Sequence[str]) -> pb.EventRecord:
    copies = []
    for i, copy in enumerate(record.copies):
        if copy is None or i >= len(sources):
            continue
        arrived_at, produced_at, digest, size = copy
        copies.append(
            pb.Copy(
                source=sources[i],
                arrived_at=ts(arrived_at),
                produced_at=ts(produced_at),
                payload_hash=digest.hex(),
                count=record.count(i),
                payload_bytes=size,
                late=record.is_late(i),
            )
        )
    latencies = []
    for a, b in combinations(range(min(len(sources), len(record.copies))), 2):
        ca, cb = record.copies[a], record.copies[b]
        if ca is not None and cb is not None:
            latencies.append(
                pb.PairLatency(
                    source_a=sources[a],
                    source_b=sources[b],
                    latency_ms=(cb[0] - ca[0]) * 1000.0,
                )
            )
    expected = [s for i, s in enumerate(sources) if record.expected >> i & 1]
    missing = [s for i, s in enumerate(sources) if record.missing >> i & 1]
    return pb.EventRecord(
        event_id=record.event_id,
        event_type=record.event_type,
        status=int(record.status),  # type: ignore[arg-type]
        expected_sources=expected,
        missing_sources=missing,
        copies=copies,
        latencies=latencies,
        outcomes=[outcome_pb(o) for o in record.outcomes],
        first_seen=ts(record.first_seen),
        deadline=ts(record.deadline),
    )
