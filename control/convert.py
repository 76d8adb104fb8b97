"""Conversions between the daemon's objects and helios.v1 messages."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from itertools import combinations
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from helios.daemon.app import SourceStatus
from helios.daemon.audit import Decision, Execution
from helios.daemon.detection import Anomaly
from helios.daemon.model import CopyIn, EventRecord, Outcome
from helios.daemon.safety import Breaker
from helios.daemon.types import CRITERIA, Criteria
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


def _criteria(values: dict[str, float] | Criteria) -> pb.Criteria:
    if isinstance(values, Criteria):
        return pb.Criteria(**asdict(values))
    return pb.Criteria(**{k: float(values.get(k, 0.0)) for k in CRITERIA})


def decision_pb(d: Decision) -> pb.Decision:
    diag = d.diagnosis
    return pb.Decision(
        id=d.id,
        trace_id=d.trace_id,
        created_at=ts(d.created_at),
        anomaly_id=d.anomaly_id,
        diagnosis=pb.Diagnosis(
            kind=str(diag.get("kind", "")),
            target=str(diag.get("target", "")),
            confidence=float(diag.get("confidence", 0.0)),
            evidence=[str(e) for e in diag.get("evidence", [])],
            onset=str(diag.get("onset", "")),
        ),
        method=d.method,
        weighting=d.weighting,
        weights=d.weights,
        alternatives=[
            pb.Alternative(
                action=a.action,
                target=a.target,
                criteria=_criteria(a.criteria),
                eligible=a.eligible,
                reason=a.reason,
                score=a.score,
                rank=a.rank,
            )
            for a in d.alternatives
        ],
        chosen_action=d.chosen,
        target=d.target,
        mode=d.mode,
        status=d.status,
        reason=d.reason,
        expires_at=ts(d.expires_at) if d.expires_at else None,
        decided_by=d.decided_by,
        execution_ids=d.execution_ids,
        outcome=d.outcome,
        mttr_seconds=d.mttr_seconds,
        spans=[pb.TraceSpan(at=ts(s.at), stage=s.stage, text=s.text) for s in d.spans],
        follow_up_of=d.follow_up_of,
    )


def execution_pb(x: Execution) -> pb.Execution:
    return pb.Execution(
        id=x.id,
        decision_id=x.decision_id,
        trace_id=x.trace_id,
        action=x.action,
        target=x.target,
        params=x.params,
        dry_run=x.dry_run,
        plan=x.plan,
        size=x.size,
        status=x.status,
        attempts=x.attempts,
        started_at=ts(x.started_at),
        finished_at=ts(x.finished_at) if x.finished_at else None,
        result=x.result,
        error=x.error,
        verification=x.verification,
        verification_detail=x.verification_detail,
        verified_at=ts(x.verified_at) if x.verified_at else None,
        mttr_seconds=x.mttr_seconds,
        expected_copies=x.expected_copies,
        seen_copies=x.seen_copies,
        details_json=json.dumps(x.details, default=str),
    )


def breaker_pb(b: Breaker, failed_over: bool) -> pb.Breaker:
    return pb.Breaker(
        source=b.source,
        state=b.state,
        forced=b.forced,
        since=ts(b.since) if b.since else None,
        reason=b.reason,
        trips=b.trips,
        failure_ratio=b.ratio,
        volume=max(b.volume, 0),
        failed_over=failed_over,
    )
