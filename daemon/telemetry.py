"""OpenTelemetry for heliosd: one meter and one tracer per component, /metrics through the
OpenTelemetry Prometheus exporter, OTLP export of metrics and traces (docs/observability.md).

Long because the instruments, the snapshot they read and the traces that mirror the audit
trail share one object, built once by the Daemon; split, each part would need it all.

Metrics cost the hot path almost nothing: the pipeline already counts what it does, and
the instruments are observable ones, read from a snapshot the event loop takes (before a
scrape, and every export interval for OTLP), never from another thread. Outcomes by kind,
source and route are counted per flush in a plain Counter; the reconcile duration is one
histogram point per batch.

Traces: a sampled copy gets a trace (admission -> reconcile -> outcome), continuing a
producer's W3C trace context when the request carried one; each MAPE-K decision gets a
span in the trace whose id IS the audit trace id, with a child span per stage
(diagnosis, decision, policy, execution, verification), so `helios trace ID` and the
tracing backend show the same story."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from helios.daemon import __version__
from helios.daemon.config import TelemetryConfig
from helios.daemon.model import CopyIn, Outcome, OutcomeKind
from helios.daemon.tenants import SEP
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, generate_latest

if TYPE_CHECKING:
    from helios.daemon.app import Daemon
    from helios.daemon.audit import Decision, Execution
    from helios.daemon.views import BreakerView, Stats

log = logging.getLogger("helios.telemetry")
EXPORT_TIMEOUT = 5.0  # seconds an OTLP export may take (at stop too)
TRACED_KEPT = 10_000  # sampled copies waiting for their outcome
TRACES_KEPT = 2_000  # decision traces whose root span is remembered
DUPLICATE, LATE, MISSING = OutcomeKind.DUPLICATE, OutcomeKind.LATE, OutcomeKind.MISSING
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}
PROPAGATOR = TraceContextTextMapPropagator()


@dataclass
class Snapshot:
    """What the observable instruments read, taken on the event loop."""

    stats: Stats | None = None
    breakers: list[BreakerView] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    inputs: list[tuple[str, int, dict[str, int]]] = field(default_factory=list)


class _PresetIds(RandomIdGenerator):
    """Random ids, except the next trace id when one is preset: a decision's root span
    takes the audit trace id so both name the same trace."""

    def __init__(self) -> None:
        self.next_trace: int | None = None

    def generate_trace_id(self) -> int:
        preset, self.next_trace = self.next_trace, None
        return preset if preset else super().generate_trace_id()


def _observe(
    counts: Counter[Any], labels: tuple[str, ...]
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    """An observable counter's callback over a Counter keyed by its label values."""

    def callback(options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(v, dict(zip(labels, k if isinstance(k, tuple) else (k,), strict=True)))
            for k, v in list(counts.items())
        ]

    return callback


def _headers(env_name: str) -> dict[str, str]:
    raw = os.environ.get(env_name, "") if env_name else ""
    pairs = (p.partition("=") for p in raw.split(",") if p.strip())
    return {k.strip(): v.strip() for k, _, v in pairs if k.strip()}


def extract(carrier: dict[str, str]) -> otel_context.Context | None:
    """The W3C trace context a request carried (`traceparent`, `tracestate`), or None."""
    if "traceparent" not in carrier:
        return None
    found = PROPAGATOR.extract(carrier)
    span = trace.get_current_span(found).get_span_context()
    return found if span.is_valid else None


@contextlib.contextmanager
def continued(headers: Iterable[tuple[str, Any]]) -> Iterator[None]:
    """Within the block, the W3C trace context of a request's headers or gRPC metadata
    (`traceparent`, `tracestate`) is current: a copy it admits continues that trace."""
    carrier = {
        k.lower(): v
        for k, v in headers
        if isinstance(v, str) and k.lower() in ("traceparent", "tracestate")
    }
    found = extract(carrier) if carrier else None
    if found is None:
        yield
        return
    token = otel_context.attach(found)
    try:
        yield
    finally:
        otel_context.detach(token)


class Telemetry:
    def __init__(self, config: TelemetryConfig, route_of: Callable[[str], str]) -> None:
        self.config = config
        self.route_of = route_of
        self.tenanted = False  # routes differ by tenant: outcomes are grouped by it too
        self.tenanted_route_of: Callable[[str, str], str] = lambda t, e: route_of(t)
        self.snapshot = Snapshot()
        self.refresh: Callable[[], Any] | None = None  # async: takes a new snapshot
        self.outcomes: Counter[tuple[OutcomeKind, str, str]] = Counter()
        self.route_closed: Counter[tuple[str, bool]] = Counter()  # (route, every copy came)
        # A tenant's events closed (tenant, every copy came) and missed (tenant, source):
        # its own completeness objectives (helios.daemon.observe).
        self.tenant_closed: Counter[tuple[str, bool]] = Counter()
        self.tenant_missed: Counter[tuple[str, str]] = Counter()
        self.timely = self.slow = 0  # COMPLETE outcomes within / past slo.timeliness_ms
        self.timely_seconds = 1.0
        self.replayed: Counter[str] = Counter()  # copies replayed, by target source
        self.executed: Counter[str] = Counter()  # executions finished, by action
        self.decisions: Counter[str] = Counter()
        self.executions: Counter[tuple[str, str]] = Counter()
        self.verifications: Counter[tuple[str, str]] = Counter()
        self._settled: dict[str, str] = {}  # decision id -> status counted
        self._exec_seen: dict[str, tuple[str, str]] = {}  # execution id -> (status, verdict)
        resource = Resource.create(
            {"service.name": config.service_name, "service.version": __version__}
        )
        self.registry = CollectorRegistry()
        readers: list[MetricReader] = []
        if config.metrics:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader

            readers.append(PrometheusMetricReader(registry=self.registry, scope_info_enabled=False))
            if config.otlp_endpoint:
                readers.append(
                    PeriodicExportingMetricReader(
                        self._metric_exporter(),
                        export_interval_millis=config.otlp_interval_seconds * 1000,
                    )
                )
        self.meters = MeterProvider(
            resource=resource, metric_readers=readers, shutdown_on_exit=False
        )
        self._ids = _PresetIds()
        self.tracers = TracerProvider(
            resource=resource, id_generator=self._ids, shutdown_on_exit=False
        )
        self.tracing = False
        if config.traces and config.otlp_endpoint:
            self.add_span_processor(BatchSpanProcessor(self._span_exporter()))
        self.copy_tracer = self.tracers.get_tracer("helios.ingest", __version__)
        self.decision_tracer = self.tracers.get_tracer("helios.decisions", __version__)
        self.duration: Any = None
        if config.metrics:
            self._instruments()
        self._traced: OrderedDict[str, tuple[trace.Span, str]] = OrderedDict()
        self._roots: OrderedDict[str, trace.SpanContext] = OrderedDict()
        self._decision_spans: dict[str, tuple[trace.SpanContext, int]] = {}
        self.clock_speed = 1.0
        self.clock_now: Callable[[], float] = time.time

    @classmethod
    def attach(cls, d: Daemon) -> Telemetry:
        """Built by the Daemon and handed to what it watches: the pipeline (outcomes,
        batch durations), admission (copy traces) and the audit trail (decisions)."""
        made = cls(d.config.telemetry, lambda event_type: d.reconciler.route(event_type).pattern)
        made.tenanted_route_of = lambda event_type, event_id: (
            d.reconciler.route(event_type, event_id).pattern
        )
        made.tenanted = d.reconciler.tenanted
        made.clock_now, made.clock_speed = d.clock.now, d.clock.speed
        made.timely_seconds = d.config.slo.timeliness_ms / 1000.0

        async def refresh() -> None:  # on the event loop: read the daemon, then swap
            reads = d.services.reads
            last = d.detection.history[-1] if d.detection.history else None
            made.snapshot = Snapshot(
                await reads.stats(),
                reads.breakers(),
                {k: r.score for k, r in last.results.items()} if last else {},
                [(v.name, v.deliveries, dict(v.errors)) for v in reads.inputs()],
            )

        made.refresh = refresh
        if made.config.metrics or made.config.traces or d.config.slo.enabled:  # else: all off
            d.pipeline.telemetry = d.admission.telemetry = made
            d.loop.audit.observer = made
        return made

    # ---- exporters ------------------------------------------------------------------
    def _metric_exporter(self) -> Any:
        c = self.config
        headers = _headers(c.otlp_headers_env)
        if c.otlp_protocol == "http":
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter as HttpMetrics,
            )

            return HttpMetrics(
                endpoint=c.otlp_endpoint.rstrip("/") + "/v1/metrics", headers=headers
            )
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(
            endpoint=c.otlp_endpoint,
            insecure=c.otlp_endpoint.startswith("http://"),
            headers=headers,
            timeout=EXPORT_TIMEOUT,
        )

    def _span_exporter(self) -> Any:
        c = self.config
        headers = _headers(c.otlp_headers_env)
        if c.otlp_protocol == "http":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpSpans,
            )

            url = c.otlp_endpoint.rstrip("/") + "/v1/traces"
            return HttpSpans(endpoint=url, headers=headers, timeout=EXPORT_TIMEOUT)
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(
            endpoint=c.otlp_endpoint,
            insecure=c.otlp_endpoint.startswith("http://"),
            headers=headers,
            timeout=EXPORT_TIMEOUT,
        )

    def add_span_processor(self, processor: SpanProcessor) -> None:
        """Where spans go (OTLP from the config; tests add an in-memory one)."""
        self.tracers.add_span_processor(processor)
        self.tracing = self.config.traces

    # ---- metrics ----------------------------------------------------------------------
    def _instruments(self) -> None:
        meter = self.meters.get_meter
        ingest = meter("helios.ingest", __version__)
        stats = self._stats_callback

        ingest.create_observable_counter(
            "helios.copies.received",
            [stats(lambda s: [Observation(s.copies_received)])],
            unit="{copy}",
            description="Copies accepted into reconciliation.",
        )
        ingest.create_observable_counter(
            "helios.events.seen",
            [stats(lambda s: [Observation(s.events_seen)])],
            unit="{event}",
            description="Distinct events seen.",
        )
        ingest.create_observable_counter(
            "helios.copies.rejected",
            [stats(lambda s: [Observation(v, {"reason": k}) for k, v in s.rejections.items()])],
            unit="{copy}",
            description="Copies refused, by reason.",
        )
        ingest.create_observable_counter(
            "helios.requests.refused",
            [
                stats(
                    lambda s: [
                        Observation(v, {"method": k.split(":")[0], "code": k.split(":")[-1]})
                        for k, v in s.refused_requests.items()
                    ]
                )
            ],
            unit="{request}",
            description="API requests refused, by method and code.",
        )
        ingest.create_observable_gauge(
            "helios.ingest.queue.depth",
            [stats(lambda s: [Observation(s.queue_depth)])],
            unit="{copy}",
            description="Copies waiting for the reconciler.",
        )
        ingest.create_observable_gauge(
            "helios.ingest.queue.capacity",
            [stats(lambda s: [Observation(s.queue_capacity)])],
            unit="{copy}",
            description="Capacity of the ingest queue.",
        )
        inputs = meter("helios.inputs", __version__)
        inputs.create_observable_counter(
            "helios.input.deliveries",
            [self._inputs_callback(lambda name, n, errors: [Observation(n, {"input": name})])],
            unit="{delivery}",
            description="Deliveries an input took (webhook requests, Kafka and SQS batches).",
        )
        inputs.create_observable_counter(
            "helios.input.errors",
            [
                self._inputs_callback(
                    lambda name, n, errors: [
                        Observation(v, {"input": name, "reason": k}) for k, v in errors.items()
                    ]
                )
            ],
            unit="{delivery}",
            description="Deliveries an input refused, by reason.",
        )
        rec = meter("helios.reconcile", __version__)
        rec.create_observable_counter(
            "helios.outcomes",
            [self._outcomes_callback],
            unit="{outcome}",
            description="Outcomes decided, by kind, source (* for the whole event) and route.",
        )
        self.duration = rec.create_histogram(
            "helios.reconcile.duration",
            unit="s",
            description="Receipt of a batch of copies to its COMPLETE outcomes.",
            explicit_bucket_boundaries_advisory=BUCKETS,
        )
        rec.create_observable_gauge(
            "helios.windows.open",
            [stats(lambda s: [Observation(s.open_windows)])],
            unit="{event}",
            description="Events whose reconciliation window is open.",
        )
        rec.create_observable_gauge(
            "helios.index.records",
            [stats(lambda s: [Observation(s.index_records)])],
            unit="{record}",
            description="Records the index holds.",
        )
        for name, unit, pick, text in (
            ("helios.source.copies", "{copy}", "copies", "Copies received per source."),
            ("helios.source.expected", "{event}", "expected", "Closed events that expected it."),
            ("helios.source.delivered", "{event}", "delivered", "Closed events it delivered."),
        ):
            rec.create_observable_counter(
                name,
                [self._per_source(pick)],
                unit=unit,
                description=text,
            )
        rec.create_observable_gauge(
            "helios.source.completeness",
            [self._per_source("completeness")],
            unit="1",
            description="Delivered / expected per source, since start.",
        )
        rec.create_observable_gauge(
            "helios.source.paused",
            [
                stats(
                    lambda s: [Observation(int(x.paused), {"source": x.source}) for x in s.sources]
                )
            ],
            unit="1",
            description="1 when the source is paused.",
        )
        det = meter("helios.detection", __version__)
        det.create_observable_gauge(
            "helios.detector.score",
            [
                lambda options: [
                    Observation(v, {"detector": k}) for k, v in self.snapshot.scores.items()
                ]
            ],
            unit="1",
            description="Each detector's score of the latest metrics minute.",
        )
        det.create_observable_counter(
            "helios.anomalies",
            [
                stats(
                    lambda s: [Observation(d.anomalies, {"detector": d.name}) for d in s.detectors]
                )
            ],
            unit="{anomaly}",
            description="Anomaly episodes raised, by detector.",
        )
        loop = meter("helios.decisions", __version__)
        for name, counts, labels, unit, text in (
            ("helios.decisions", self.decisions, ("status",), "{decision}",
             "Decisions settled, by status."),
            ("helios.executions", self.executions, ("action", "status"), "{execution}",
             "Recovery actions finished, by action and status."),
            ("helios.verifications", self.verifications, ("action", "outcome"), "{execution}",
             "Executions verified by observation, by action and outcome."),
        ):  # fmt: skip
            loop.create_observable_counter(
                name, [_observe(counts, labels)], unit=unit, description=text
            )
        loop.create_observable_gauge(
            "helios.breaker.state",
            [
                lambda o: [
                    Observation(BREAKER_VALUES.get(str(b.state), 2), {"source": b.source})
                    for b in self.snapshot.breakers
                ]
            ],
            unit="1",
            description="Each source's circuit breaker: 0 closed, 1 half-open, 2 open.",
        )

    def _stats_callback(
        self, pick: Callable[[Stats], Iterable[Observation]]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            stats = self.snapshot.stats
            return list(pick(stats)) if stats is not None else []

        return callback

    def _inputs_callback(
        self, pick: Callable[[str, int, dict[str, int]], Iterable[Observation]]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [o for name, n, errors in self.snapshot.inputs for o in pick(name, n, errors)]

        return callback

    def _per_source(self, attr: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            stats = self.snapshot.stats
            if stats is None:
                return []
            return [Observation(getattr(s, attr), {"source": s.source}) for s in stats.sources]

        return callback

    def _outcomes_callback(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(v, {"kind": kind.name, "source": source, "route": route})
            for (kind, route, source), v in list(self.outcomes.items())
        ]

    async def scrape(self) -> bytes:
        """The Prometheus text exposition, from a fresh snapshot."""
        if self.refresh is not None:
            await self.refresh()
        return generate_latest(self.registry)

    # ---- the hot path -----------------------------------------------------------------
    def count(self, outcomes: Sequence[Outcome]) -> None:
        """Outcomes of one flush, by kind, route and source; ends the traces of sampled
        copies whose event they decide. Grouped first: a flush holds a few event types
        and kinds, so the route is looked up once per group, not once per outcome."""
        counts = self.outcomes
        # Grouped by tenant too (read from each event's key): its own objectives, and
        # its routes when routes are per tenant.
        grouped = Counter(
            [(o.kind, o.event_type, o.sources, o.event_id.rpartition(SEP)[0]) for o in outcomes]
        )
        if self.tenanted:
            route_of = self.tenanted_route_of
        else:
            route_of = lambda event_type, tenant: self.route_of(event_type)  # noqa: E731
        closed = self.route_closed
        for (kind, event_type, sources, tenant), n in grouped.items():
            route = route_of(event_type, f"{tenant}{SEP}" if tenant else "")
            if kind is not DUPLICATE and kind is not LATE:
                closed[(route, kind is not MISSING)] += n
                if tenant:
                    self.tenant_closed[(tenant, kind is not MISSING)] += n
                    if kind is MISSING:
                        for source in sources:
                            self.tenant_missed[(tenant, source)] += n
            if sources:
                for source in sources:
                    counts[(kind, route, source)] += n
            else:
                counts[(kind, route, "*")] += n
        if self._traced:
            self._end_copies(outcomes)

    def reconciled(self, first_event: str, received: float, completes: int) -> None:
        """After a batch is reconciled: its duration (receipt, a perf_counter time, to
        now) when it completed events, and the reconcile span of a traced copy."""
        seconds = time.perf_counter() - received
        if completes:
            if seconds <= self.timely_seconds:
                self.timely += completes
            else:
                self.slow += completes
            if self.duration is not None:
                self.duration.record(seconds)
        found = self._traced.get(first_event) if self._traced else None
        if found is not None:
            ctx = trace.set_span_in_context(found[0])
            began = time.time_ns() - int(seconds * 1e9)
            span = self.copy_tracer.start_span("reconcile", context=ctx, start_time=began)
            span.set_attribute("helios.completes", completes)
            span.end()

    def start_copy(self, copies: Sequence[CopyIn], received: float) -> tuple[Any, Any] | None:
        """Perhaps trace one copy of this batch: always when the caller's W3C context is
        sampled, else with probability trace_copies_ratio for each copy. Returns the
        admission span and its context, or None."""
        if not self.tracing or not copies:
            return None
        parent = trace.get_current_span().get_span_context()
        sampled = parent.is_valid and parent.trace_flags.sampled
        if not sampled and random.random() >= self.config.trace_copies_ratio * len(copies):
            return None
        event_id, source, event_type = copies[0][0], copies[0][1], copies[0][2]
        root = self.copy_tracer.start_span(
            "helios.copy",
            kind=SpanKind.SERVER if parent.is_valid else SpanKind.INTERNAL,
            attributes={
                "helios.event_id": event_id,
                "helios.source": source,
                "helios.event_type": event_type[:200],
                "helios.batch.copies": len(copies),
            },
        )
        ctx = trace.set_span_in_context(root)
        admission = self.copy_tracer.start_span("admission", context=ctx)
        self._traced[event_id] = (root, source)
        while len(self._traced) > TRACED_KEPT:
            old, _ = self._traced.popitem(last=False)[1]
            old.set_status(Status(StatusCode.UNSET, "no outcome while traced"))
            old.end()
        return admission, ctx

    def admitted(self, started: tuple[Any, Any] | None, accepted: int, error: str = "") -> None:
        if started is None:
            return
        admission, _ = started
        admission.set_attribute("helios.accepted", accepted)
        if error:
            admission.set_status(Status(StatusCode.ERROR, error))
        admission.end()

    def _end_copies(self, outcomes: Sequence[Outcome]) -> None:
        traced = self._traced
        for o in outcomes:
            found = traced.pop(o.event_id, None)
            if found is None:
                continue
            root, _source = found
            ctx = trace.set_span_in_context(root)
            span = self.copy_tracer.start_span(
                "outcome",
                context=ctx,
                attributes={"helios.outcome": o.kind.name, "helios.sources": list(o.sources)},
            )
            span.end()
            root.set_attribute("helios.outcome", o.kind.name)
            root.end()

    # ---- decisions ------------------------------------------------------------------
    def _wall_ns(self, at: float) -> int:
        """A daemon-clock time as wall time in ns (a simulated clock runs `speed` x)."""
        ago = (self.clock_now() - at) / self.clock_speed
        return int((time.time() - ago) * 1e9)

    def decision(self, d: Decision) -> None:
        """Count a decision as it settles and mirror its new audit spans as OTel spans in
        the trace whose id is its audit trace id."""
        status = d.status.value
        if status and self._settled.get(d.id) != status:
            self._settled[d.id] = status
            self.decisions[status] += 1
            if len(self._settled) > TRACES_KEPT * 5:
                self._settled.pop(next(iter(self._settled)))
        if not self.tracing:
            return
        parent, done = self._decision_spans.get(d.id, (None, 0))
        if parent is None:
            root = self._root(d)
            span = self.decision_tracer.start_span(
                f"decision {d.chosen or d.diagnosis}",
                context=trace.set_span_in_context(trace.NonRecordingSpan(root)),
                start_time=self._wall_ns(d.created_at),
                attributes={
                    "helios.decision_id": d.id,
                    "helios.diagnosis": str(d.diagnosis),
                    "helios.action": d.chosen,
                    "helios.target": d.target,
                    "helios.follow_up_of": d.follow_up_of,
                },
                links=[Link(root)] if d.follow_up_of else None,
            )
            span.end(self._wall_ns(d.created_at))
            parent = span.get_span_context()
        ctx = trace.set_span_in_context(trace.NonRecordingSpan(parent))
        for s in d.spans[done:]:
            at = self._wall_ns(s.at)
            child = self.decision_tracer.start_span(
                s.stage, context=ctx, start_time=at, attributes={"helios.text": s.text[:500]}
            )
            child.end(at)
        self._decision_spans[d.id] = (parent, len(d.spans))
        while len(self._decision_spans) > TRACES_KEPT:
            self._decision_spans.pop(next(iter(self._decision_spans)))

    def _root(self, d: Decision) -> trace.SpanContext:
        """The trace's root span ("helios.incident"), made once per audit trace id."""
        found = self._roots.get(d.trace_id)
        if found is not None:
            return found
        try:
            self._ids.next_trace = int(d.trace_id, 16) or None
        except ValueError:
            self._ids.next_trace = None
        start = self._wall_ns(d.detected_at or d.created_at)
        root = self.decision_tracer.start_span(
            "helios.incident",
            context=otel_context.Context(),
            start_time=start,
            attributes={"helios.trace_id": d.trace_id, "helios.diagnosis": str(d.diagnosis)},
        )
        root.end(start)
        self._ids.next_trace = None
        context = root.get_span_context()
        self._roots[d.trace_id] = context
        while len(self._roots) > TRACES_KEPT:
            self._roots.popitem(last=False)
        return context

    def execution(self, x: Execution) -> None:
        state = (x.status.value, x.verification.value)
        before = self._exec_seen.get(x.id)
        if before == state:
            return
        self._exec_seen[x.id] = state
        if len(self._exec_seen) > TRACES_KEPT * 5:
            self._exec_seen.pop(next(iter(self._exec_seen)))
        if x.status.value != "running" and (before is None or before[0] != x.status.value):
            self.executions[(x.action, x.status.value)] += 1
            if x.status.value == "succeeded":
                self.executed[x.action] += 1
                if x.action == "replay_missing":
                    self.replayed[x.target] += x.size
        if x.verification.value in ("verified", "failed") and (
            before is None or before[1] != x.verification.value
        ):
            self.verifications[(x.action, x.verification.value)] += 1

    def shutdown(self) -> None:
        """Flush what is pending (an unreachable receiver costs at most a few seconds)."""
        for provider in (self.meters, self.tracers):
            try:
                if isinstance(provider, MeterProvider):
                    provider.shutdown(timeout_millis=EXPORT_TIMEOUT * 1000)
                else:
                    provider.shutdown()
            except Exception as exc:  # an exporter that cannot flush must not stop heliosd
                log.warning("telemetry shutdown: %s", exc)
