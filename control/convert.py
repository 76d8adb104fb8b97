"""Conversions between the daemon's objects and helios.v1 messages.

Long because it is one function per message of the API, each a field-by-field copy;
split by topic, servicers would import from several places for one response."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from enum import StrEnum
from itertools import combinations
from typing import Any

from helios.control.common import ts
from helios.daemon.audit import Decision, Execution
from helios.daemon.auditlog import AuditEntry
from helios.daemon.detection import Anomaly
from helios.daemon.domain import AutomationMode, Diagnosis, Verification
from helios.daemon.identity import ApiKey
from helios.daemon.jobs import Job
from helios.daemon.metrics import MetricsMinute
from helios.daemon.model import CopyIn, EventRecord, Outcome
from helios.daemon.readmodels import (
    ActionView,
    BreakerView,
    Catalogue,
    SourceStatus,
    Stats,
    Trace,
)
from helios.daemon.tenants import SEP, scoped, tenant_in_force, unscoped
from helios.daemon.types import CRITERIA, Criteria
from helios.daemon.views import BloomView
from helios.v1 import helios_pb2 as pb


def _enum(pb_enum: Any, prefix: str, member: StrEnum) -> int:
    """A domain enum member as its proto enum value (same names; "" is UNSPECIFIED)."""
    if not member.value:
        return 0
    return int(pb_enum.Value(f"{prefix}_{member.name}"))


def _mode(text: str) -> int:
    try:
        return _enum(pb.AutomationMode, "AUTOMATION_MODE", AutomationMode(text))
    except ValueError:
        return 0  # "manual": an operator's request


def diagnosis_pb(diag: Diagnosis) -> pb.Diagnosis:
    return pb.Diagnosis(
        kind=diag.kind.value,
        target=diag.target,
        confidence=diag.confidence,
        evidence=diag.evidence,
        onset=diag.onset,
        issue_kind=_enum(pb.IssueKind, "ISSUE_KIND", diag.kind),  # type: ignore[arg-type]
        tenant=diag.tenant,
    )


def copies_from(events: Sequence[pb.Event]) -> list[CopyIn]:
    """Proto events -> reconciler tuples (the ingest hot path). A tenant's event gets
    its tenant's key (a scoped caller's own, whatever it names: naming another is
    refused); admit them with `scoped=True`."""
    out: list[CopyIn] = []
    append = out.append
    own = tenant_in_force()
    for e in events:
        produced = e.produced_at
        event_id, tenant = e.event_id, e.tenant
        if SEP in event_id:  # no id names a tenant itself: refused as event_id_invalid
            event_id = SEP + event_id
        elif tenant or own:
            event_id = scoped(event_id, own if tenant in ("", own) else tenant_in_force(tenant))
        append(
            (
                event_id,
                e.source,
                e.event_type,
                produced.seconds + produced.nanos * 1e-9,
                e.payload,
            )
        )
    return out


def outcome_pb(outcome: Outcome) -> pb.Outcome:
    tenant, event_id = unscoped(outcome.event_id)
    return pb.Outcome(
        kind=int(outcome.kind),  # type: ignore[arg-type]
        event_id=event_id,
        tenant=tenant,
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
        event_id = o.event_id
        if SEP in event_id:  # a tenant's event
            tenant, _, event_id = event_id.partition(SEP)
            m = add(kind=o.kind, event_id=event_id, event_type=o.event_type, sequence=o.sequence)
            m.tenant = tenant
        else:
            m = add(kind=o.kind, event_id=event_id, event_type=o.event_type, sequence=o.sequence)
        if o.sources:
            m.sources.extend(o.sources)
        if o.late_by:
            m.late_by_seconds = o.late_by
        stamp = m.time
        stamp.seconds = whole
        stamp.nanos = int((t - whole) * 1e9)


def anomaly_pb(a: Anomaly) -> pb.Anomaly:
    out = pb.Anomaly(
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
        diagnosis=diagnosis_pb(a.diagnosis),
    )
    if a.until:
        out.until.CopyFrom(ts(a.until))
    return out


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
    tenant, event_id = unscoped(record.event_id)
    return pb.EventRecord(
        event_id=event_id,
        tenant=tenant,
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
    return pb.Decision(
        id=d.id,
        trace_id=d.trace_id,
        created_at=ts(d.created_at),
        anomaly_id=d.anomaly_id,
        diagnosis=diagnosis_pb(d.diagnosis),
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
        automation_mode=_mode(d.mode),  # type: ignore[arg-type]
        status=d.status.value,
        decision_status=_enum(pb.DecisionStatus, "DECISION_STATUS", d.status),  # type: ignore[arg-type]
        reason=d.reason,
        expires_at=ts(d.expires_at) if d.expires_at else None,
        decided_by=d.decided_by,
        execution_ids=d.execution_ids,
        outcome=d.outcome,
        outcome_status=_enum(  # type: ignore[arg-type]
            pb.VerificationStatus, "VERIFICATION_STATUS", Verification(d.outcome or "pending")
        )
        if d.outcome
        else 0,
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
        status=x.status.value,
        execution_status=_enum(pb.ExecutionStatus, "EXECUTION_STATUS", x.status),  # type: ignore[arg-type]
        attempts=x.attempts,
        started_at=ts(x.started_at),
        finished_at=ts(x.finished_at) if x.finished_at else None,
        result=x.result,
        error=x.error,
        verification=x.verification.value,
        verification_status=_enum(  # type: ignore[arg-type]
            pb.VerificationStatus, "VERIFICATION_STATUS", x.verification
        ),
        verification_detail=x.verification_detail,
        verified_at=ts(x.verified_at) if x.verified_at else None,
        mttr_seconds=x.mttr_seconds,
        expected_copies=x.expected_copies,
        seen_copies=x.seen_copies,
        details_json=json.dumps(x.details, default=str),
    )


def breaker_pb(b: BreakerView) -> pb.Breaker:
    return pb.Breaker(
        source=b.source,
        state=b.state.value,
        breaker_state=_enum(pb.BreakerState, "BREAKER_STATE", b.state),  # type: ignore[arg-type]
        forced=b.forced,
        since=ts(b.since) if b.since else None,
        reason=b.reason,
        trips=b.trips,
        failure_ratio=b.ratio,
        volume=max(b.volume, 0),
        failed_over=b.failed_over,
    )


def action_pb(a: ActionView) -> pb.ActionInfo:
    s = a.settings
    return pb.ActionInfo(
        name=a.name,
        description=a.description,
        issue_kinds=a.issue_kinds,
        plugin=a.plugin,
        criteria=pb.Criteria(**asdict(a.criteria)),
        configured=pb.Criteria(**asdict(a.configured)),
        runs=a.runs,
        successes=a.successes,
        mode=a.mode,
        automation_mode=_mode(a.mode),  # type: ignore[arg-type]
        enabled=s.enabled,
        cooldown_seconds=s.cooldown_seconds,
        max_concurrent=s.max_concurrent,
        max_per_hour=s.max_per_hour,
        blast_radius=s.blast_radius,
        timeout_seconds=s.timeout_seconds,
        retries=s.retries,
        running=a.running,
    )


def catalogue_pb(c: Catalogue) -> pb.ListActionsResponse:
    return pb.ListActionsResponse(
        actions=[action_pb(a) for a in c.actions],
        automation_mode=c.automation_mode,
        default_mode=_mode(c.automation_mode),  # type: ignore[arg-type]
        method=c.method,
        weighting=c.weighting,
        weights=c.weights,
        breakers=[breaker_pb(b) for b in c.breakers],
        notifications=[
            pb.Notification(at=ts(n.at), level=n.level, text=n.text) for n in c.notifications
        ],
        throttles=c.throttles,
        quarantined_events=c.quarantined_events,
    )


def stats_pb(s: Stats) -> pb.GetStatsResponse:
    return pb.GetStatsResponse(
        copies_received=s.copies_received,
        events_seen=s.events_seen,
        outcomes=s.outcomes,
        rejections=s.rejections,
        errors=s.refused_requests,
        detectors=[
            pb.DetectorStatus(name=d.name, status=d.status, anomalies=d.anomalies)
            for d in s.detectors
        ],
        open_windows=s.open_windows,
        index_records=s.index_records,
        copies_per_second=s.copies_per_second,
        events_per_second=s.events_per_second,
        sources=[source_stats_pb(x) for x in s.sources],
        reconcile_latency=pb.LatencySummary(
            p50_ms=s.latency.p50,
            p90_ms=s.latency.p90,
            p99_ms=s.latency.p99,
            max_ms=s.latency.max,
            count=s.latency.count,
        ),
        ingest_queue_depth=s.queue_depth,
        ingest_queue_capacity=s.queue_capacity,
        uptime_seconds=s.uptime_seconds,
        version=s.version,
        now=ts(s.now),
        storage=pb.StorageStats(
            backend=s.storage.backend,
            durability=s.storage.durability,
            details=s.storage.details,
            open_windows=s.storage.open_windows,
            max_open_windows=s.storage.max_open_windows,
            data_dir=s.storage.data_dir,
            data_dir_locked=s.storage.data_dir_locked,
            bloom=_bloom(s.storage.bloom),
        ),
    )


def metrics_minute_pb(m: MetricsMinute) -> pb.MetricsMinute:
    return pb.MetricsMinute(
        minute=ts(m.minute),
        features=m.features,
        missing_rate_by_source=m.missing_rate_by_source,
        duplicate_rate_by_source=m.duplicate_rate_by_source,
        inconsistent_rate_by_source=m.inconsistent_rate_by_source,
        events_closed=m.events_closed,
        copies=m.copies,
    )


def job_pb(job: Job) -> pb.Job:
    return pb.Job(
        name=job.name,
        description=job.description,
        interval_seconds=job.interval,
        clock=job.clock_name,
        last_run=ts(job.last_run) if job.last_run is not None else None,
        next_run=ts(job.next_run),
        due_in_seconds=job.due_in(),
        last_result=job.last_result,
        last_error=job.last_error,
        runs=job.runs,
        failures=job.failures,
        last_duration_ms=job.last_duration_ms,
    )


def trace_pb(t: Trace) -> pb.GetTraceResponse:
    return pb.GetTraceResponse(
        trace_id=t.trace_id,
        anomalies=[anomaly_pb(a) for a in t.anomalies],
        decisions=[decision_pb(d) for d in t.decisions],
        executions=[execution_pb(x) for x in t.executions],
        spans=[pb.TraceSpan(at=ts(s.at), stage=s.stage, text=s.text) for s in t.spans],
    )


def _bloom(view: BloomView | None) -> pb.BloomStats | None:
    if view is None:
        return None
    return pb.BloomStats(
        slices=view.slices,
        capacity_per_filter=view.capacity_per_filter,
        fill=view.fill,
        configured_error_rate=view.configured_error_rate,
        false_positive_rate=view.false_positive_rate,
        lookup_false_positive_rate=view.lookup_false_positive_rate,
        bytes=view.bytes,
        aged_late=view.aged_late,
        aged_duplicates=view.aged_duplicates,
        oldest_slice_started=ts(view.oldest_slice_started) if view.slices else None,
        slices_set_aside=view.slices_set_aside,
    )


def key_pb(key: ApiKey) -> pb.ApiKey:
    out = pb.ApiKey(
        id=key.id,
        name=key.name,
        role=key.role,
        created=ts(key.created),
        state=key.state(time.time()),
        rotated_to=key.rotated_to,
        tenant=key.tenant,
    )
    if key.expires is not None:
        out.expires.CopyFrom(ts(key.expires))
    if key.revoked is not None:
        out.revoked.CopyFrom(ts(key.revoked))
    return out


def audit_event_pb(e: AuditEntry) -> pb.AuditEvent:
    return pb.AuditEvent(
        time=ts(e.time),
        who=e.who,
        via=e.via,
        peer=e.peer,
        action=e.action,
        target=e.target,
        result=e.result,
        detail=e.detail,
    )
