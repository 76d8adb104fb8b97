"""Read models: what the gRPC API, the console and /metrics show, computed in one
place from the daemon's parts (shapes in helios.daemon.views). Front-ends read these
and nothing else of the daemon."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from helios.daemon.audit import Decision, Execution
from helios.daemon.detection import Anomaly, StepRecord, parse_anomaly_filter
from helios.daemon.domain import AutomationMode, DecisionStatus
from helios.daemon.errors import ErrorCode, RequestError
from helios.daemon.inputs import InputView, input_views
from helios.daemon.jobs import Job
from helios.daemon.metrics import MetricsMinute
from helios.daemon.model import Outcome
from helios.daemon.pipeline import Batch as Batch  # re-exported for front-ends
from helios.daemon.pipeline import Watcher
from helios.daemon.query import (
    OutcomeQuery,
    PageRequest,
    encode_token,
    newest_first,
    parse_filter,
    parse_terms,
    tenant_term,
)
from helios.daemon.tenants import SEP, scoped, tenant_filter, tenant_in_force
from helios.daemon.views import (
    ActionView,
    BreakerView,
    Catalogue,
    DetectorStatus,
    EventView,
    Latency,
    Notification,
    SourceStatus,
    Stats,
    Storage,
    Trace,
)

if TYPE_CHECKING:
    from helios.daemon.app import Daemon

# Filter keys of ListDecisions / ListExecutions -> the attribute they match.
DECISION_FIELDS = {
    "status": "status",
    "action": "chosen",
    "target": "target",
    "trace": "trace_id",
    "mode": "mode",
}
EXECUTION_FIELDS = {
    "status": "status",
    "action": "action",
    "target": "target",
    "verification": "verification",
    "trace": "trace_id",
}


def _matcher(values: dict[str, str], fields: dict[str, str]) -> Callable[[Any], bool]:
    wanted = {fields[k]: set(v.split(",")) for k, v in values.items()}

    def matches(item: Any) -> bool:
        return all(str(getattr(item, attr)) in allowed for attr, allowed in wanted.items())

    return matches


def _number(item: Decision | Execution) -> int:
    return int(item.id.rsplit("-", 1)[1])  # ids like d-000123


class ReadModels:
    def __init__(self, daemon: Daemon) -> None:
        self._d = daemon

    # ---- reconciliation ------------------------------------------------------------
    def sources(self) -> list[SourceStatus]:
        d = self._d
        names, counts = d.config.sources.names, d.reconciler.by_source
        paused = d.pipeline.paused
        return [
            SourceStatus(n, c.copies, c.expected, c.delivered, c.share, c.duplicates, n in paused)
            for n, c in zip(names, counts, strict=True)
        ]

    def inputs(self) -> list[InputView]:
        return input_views(self._d)

    def source(self, name: str) -> SourceStatus:
        self._d.runtime.check_source(name)
        return next(s for s in self.sources() if s.source == name)

    def detectors(self) -> list[DetectorStatus]:
        detection = self._d.detection
        return [
            DetectorStatus(
                name,
                text,
                detection.counts[name],
                float(detection.detectors[name].threshold),
                detection.detectors[name].score_unit,
            )
            for name, text in detection.status().items()
        ]

    def latency(self) -> Latency:
        s = self._d.pipeline.latency_summary()
        return Latency(s["p50"], s["p90"], s["p99"], s["max"], int(s["count"]))

    def counters(self) -> Stats:
        """Everything in Stats but the index size (which may need I/O)."""
        d = self._d
        rec, pipeline = d.reconciler, d.pipeline
        copies_rate, events_rate = d.rates.per_second()
        return Stats(
            copies_received=rec.copies_received,
            events_seen=rec.events_seen,
            outcomes=pipeline.outcome_counts(),
            rejections=dict(pipeline.rejections),
            refused_requests=dict(d.refused),
            detectors=self.detectors(),
            open_windows=len(rec.open),
            index_records=-1,
            copies_per_second=copies_rate,
            events_per_second=events_rate,
            sources=self.sources(),
            latency=self.latency(),
            queue_depth=pipeline.queued,
            queue_capacity=pipeline.capacity,
            uptime_seconds=time.monotonic() - d.started_at,
            version=d.version,
            now=d.clock.now(),
            storage=self.storage(),
        )

    def storage(self) -> Storage:
        d = self._d
        details = dict(d.index.describe())
        ttls = d.config.index.tenant_ttl_seconds  # how long records are kept, per tenant
        details["retention"] = f"{d.config.index.ttl_seconds:g} s" + "".join(
            f"; tenant {t}: {s:g} s" for t, s in sorted(ttls.items())
        )
        details.update(d.pipeline.describe())
        for source in d.inputs.values():  # a Kafka input: its partitions and lag
            details.update(getattr(source, "describe", dict)())
        return Storage(
            backend=details.pop("backend", d.config.index.backend),
            durability=details.pop("durability", ""),
            details=details,
            open_windows=len(d.reconciler.open),
            max_open_windows=d.config.reconcile.max_open_windows,
            data_dir=d.config.daemon.data_dir,
            data_dir_locked=d.lock.held,
            bloom=None if d.reconciler.filters is None else d.reconciler.filters.stats(),
        )

    async def stats(self) -> Stats:
        records = await self._d.index.count()
        return Stats(**{**self.counters().__dict__, "index_records": records})

    async def event(self, event_id: str, tenant: str = "") -> EventView:
        if not event_id:
            raise RequestError("event_id", "event_id is empty")
        d = self._d
        record = await d.runtime.get_event(scoped(event_id, tenant_in_force(tenant)))
        if record is None:
            raise RequestError(
                "event_id",
                f"no event {event_id!r} in open windows or the index "
                f"(records age out after {d.config.index.ttl_seconds:g} s)",
                ErrorCode.NOT_FOUND,
            )
        return EventView(record, d.runtime.quarantined.get(record.event_id, ""))

    async def outcomes(
        self, filter_text: str, page_size: int, page_token: str
    ) -> tuple[list[Outcome], str]:
        page, d = PageRequest.parse(page_size, page_token), self._d
        query = parse_filter(filter_text).retained(d.config.index.tenant_ttl_seconds, d.clock.now())
        found, before = await d.index.list_outcomes(query, page.size, page.before)
        return found, encode_token(before) if before is not None else ""

    def watch(self, filter_text: str) -> Watcher:
        """A subscription to outcomes as they are decided; unwatch() ends it. Refused
        (RESOURCE_EXHAUSTED) past ingest.max_watchers."""
        pipeline = self._d.pipeline
        limit = self._d.config.ingest.max_watchers
        if len(pipeline.watchers) >= limit:
            pipeline.rejections["watchers_full"] += 1
            raise RequestError(
                "filter",
                f"{limit} watchers are open (ingest.max_watchers): close one or retry later",
                ErrorCode.EXHAUSTED,
            )
        query = parse_filter(text := " ".join(filter_text.split()))  # a tenant: its own only
        everything = query == OutcomeQuery()
        return pipeline.watch(None if everything else query, key=f"{query.tenant}{SEP}{text}")

    def unwatch(self, watcher: Watcher) -> None:
        self._d.pipeline.unwatch(watcher)

    def metrics(self, start: float | None, end: float | None) -> list[MetricsMinute]:
        if start is not None and end is not None and end < start:
            raise RequestError("end_time", "end_time is before start_time")
        return self._d.metrics.query(start, end)

    def metric_names(self) -> list[str]:
        return list(self._d.metrics.names)

    # ---- detection -----------------------------------------------------------------
    def anomalies(
        self, filter_text: str, page_size: int, page_token: str
    ) -> tuple[list[Anomaly], str]:
        page = PageRequest.parse(page_size, page_token)
        return self._d.detection.list(parse_anomaly_filter(filter_text), page)

    def recent_anomalies(self) -> list[Anomaly]:
        return list(self._d.detection.anomalies)

    def anomaly(self, anomaly_id: str) -> Anomaly:
        if not anomaly_id:
            raise RequestError("id", "id is empty")
        found = self._d.detection.get(anomaly_id)
        if found is None:
            raise RequestError(
                "id",
                f"no anomaly {anomaly_id!r}; ids look like ewma-20261126T0712",
                ErrorCode.NOT_FOUND,
            )
        return found

    def detection_history(self) -> list[StepRecord]:
        return list(self._d.detection.history)

    def jobs(self) -> list[Job]:
        return list(self._d.jobs.jobs.values())

    # ---- decide and heal -----------------------------------------------------------
    def decisions(
        self, filter_text: str, page_size: int, page_token: str
    ) -> tuple[list[Decision], str]:
        tenant, text = tenant_term(filter_text)  # a tenant's caller: its own decisions only
        found: Any = self._d.loop.audit.decisions.values()
        if tenant is not None:
            found = [d for d in found if d.diagnosis.tenant == tenant]
        return self._listing(found, DECISION_FIELDS, text, page_size, page_token)

    def executions(
        self, filter_text: str, page_size: int, page_token: str
    ) -> tuple[list[Execution], str]:
        return self._listing(
            self._d.loop.audit.executions.values(),
            EXECUTION_FIELDS,
            filter_text,
            page_size,
            page_token,
        )

    def _listing(
        self, items: Any, fields: dict[str, str], filter_text: str, size: int, token: str
    ) -> tuple[list[Any], str]:
        matcher = _matcher(parse_terms(filter_text, tuple(fields)), fields)
        return newest_first(items, PageRequest.parse(size, token), _number, matcher)

    def decision(self, decision_id: str) -> Decision:
        if not decision_id:
            raise RequestError("id", "id is empty")
        found = self._d.loop.audit.decisions.get(decision_id)
        tenant = tenant_filter(None)  # a tenant's caller sees its own decisions only
        if found is None or (tenant is not None and found.diagnosis.tenant != tenant):
            raise RequestError(
                "id", f"no decision {decision_id!r}; ids look like d-000042", ErrorCode.NOT_FOUND
            )
        return found

    def execution(self, execution_id: str) -> Execution | None:
        return self._d.loop.audit.executions.get(execution_id)

    def recent_decisions(self) -> list[Decision]:
        """Every decision kept, oldest first."""
        return list(self._d.loop.audit.decisions.values())

    def recent_executions(self) -> list[Execution]:
        """Every execution kept, oldest first."""
        return list(self._d.loop.audit.executions.values())

    def pending_approvals(self) -> list[Decision]:
        return [
            d
            for d in self._d.loop.audit.decisions.values()
            if d.status is DecisionStatus.PENDING_APPROVAL
        ]

    def trace(self, trace_id: str) -> Trace:
        if not trace_id:
            raise RequestError("trace_id", "trace_id is empty")
        d = self._d
        decisions, executions = d.loop.audit.by_trace(trace_id)
        if not decisions:
            raise RequestError("trace_id", f"no trace {trace_id!r}", ErrorCode.NOT_FOUND)
        anomalies: list[Anomaly] = []
        for decision in decisions:
            a = d.detection.get(decision.anomaly_id) if decision.anomaly_id else None
            if a is not None and a not in anomalies:
                anomalies.append(a)
        spans = sorted((s for x in decisions for s in x.spans), key=lambda s: s.at)
        return Trace(trace_id, anomalies, decisions, executions, spans)

    def automation_mode(self) -> str:
        loop = self._d.loop
        return loop.policy.mode_override or loop.config.automation

    def action_modes(self) -> dict[str, str]:
        return dict(self._d.loop.policy.action_modes)

    def breakers(self) -> list[BreakerView]:
        runtime = self._d.runtime
        return [self.breaker_view(b.source) for b in runtime.breakers.breakers.values()]

    def breaker_view(self, source: str) -> BreakerView:
        runtime = self._d.runtime
        b = runtime.breaker(source)
        return BreakerView(
            b.source,
            b.state,
            b.forced,
            b.since,
            b.reason,
            b.trips,
            b.ratio,
            b.volume,
            b.source in runtime.failed_over,
        )

    def actions(self) -> list[ActionView]:
        planner = self._d.loop.planner
        running = list(self._d.loop.policy.running.values())
        return [
            ActionView(
                name=name,
                description=e.action.description,
                issue_kinds=tuple(e.action.issue_kinds),
                plugin=e.plugin,
                criteria=e.criteria(),
                configured=e.action.defaults,
                runs=len(e.stats.runs),
                successes=sum(1 for r in e.stats.runs if r[0]),
                mode=planner.mode(name),
                settings=e.settings,
                running=running.count(name),
            )
            for name, e in sorted(planner.entries.items())
        ]

    def catalogue(self, notifications: int = 50) -> Catalogue:
        d = self._d
        planner, runtime = d.loop.planner, d.runtime
        return Catalogue(
            actions=self.actions(),
            automation_mode=self.automation_mode(),
            action_modes=self.action_modes(),
            method=planner.config.method,
            weighting=planner.weights_note,
            weights=dict(planner.weights),
            breakers=self.breakers(),
            notifications=[
                Notification(at, level, text)
                for at, level, text in list(runtime.notifications)[-notifications:]
            ],
            throttles={s: b[0] for s, b in d.pipeline.throttles.items()},
            quarantined_events=len(runtime.quarantined),
        )

    def source_names(self) -> Sequence[str]:
        return list(self._d.config.sources.names)

    def modes(self) -> list[str]:
        return [m.value for m in AutomationMode]


__all__ = [
    "ActionView",
    "BreakerView",
    "Catalogue",
    "DetectorStatus",
    "EventView",
    "Notification",
    "ReadModels",
    "SourceStatus",
    "Stats",
    "Storage",
    "Trace",
]
