"""The gRPC server: IngestService, QueryService, ControlService, health and reflection."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, replace
from typing import Any, NoReturn

import grpc
from google.protobuf import descriptor as _descriptor
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc.aio import AbortError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from helios.control.convert import (
    add_outcomes,
    anomaly_pb,
    breaker_pb,
    copies_from,
    decision_pb,
    execution_pb,
    record_pb,
    seconds,
    source_stats_pb,
    ts,
)
from helios.daemon.app import Daemon, UnknownSource
from helios.daemon.detection import parse_anomaly_filter
from helios.daemon.query import (
    FilterError,
    decode_token,
    encode_token,
    parse_filter,
    parse_terms,
)
from helios.daemon.safety import MODES
from helios.daemon.types import ActionError, PublishResult, QueueFull, Rejected
from helios.v1 import helios_pb2 as pb

Context = grpc.aio.ServicerContext[Any, Any]
STEP = 128  # copies validated and reconciled at a time within a batch
_PB_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: code_pb2.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION: code_pb2.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND: code_pb2.NOT_FOUND,
}
_ACTION_CODES = {
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "precondition": grpc.StatusCode.FAILED_PRECONDITION,
    "blast_radius": grpc.StatusCode.FAILED_PRECONDITION,
}


async def action_error(context: Context, exc: ActionError) -> NoReturn:
    await bad_request(
        context,
        [(exc.field, str(exc))],
        _ACTION_CODES.get(exc.code, grpc.StatusCode.INVALID_ARGUMENT),
    )


def _page(
    items: list[Any], page_size: int, before: int | None, matches: Callable[[Any], bool]
) -> tuple[list[Any], int | None]:
    """Newest first, ids like d-000123: the page token is the number of the last id."""
    page: list[Any] = []
    for item in reversed(items):
        number = int(item.id.rsplit("-", 1)[1])
        if before is not None and number >= before:
            continue
        if matches(item):
            page.append(item)
            if len(page) == page_size:
                return page, number
    return page, None


def _matcher(values: dict[str, str], fields: dict[str, str]) -> Callable[[Any], bool]:
    wanted = {fields[k]: set(v.split(",")) for k, v in values.items()}

    def matches(item: Any) -> bool:
        return all(str(getattr(item, attr)) in allowed for attr, allowed in wanted.items())

    return matches


async def bad_request(
    context: Context,
    violations: list[tuple[str, str]],
    code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT,
) -> NoReturn:
    """Abort with google.rpc.BadRequest field violations in the status details."""
    detail = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
            for f, d in violations
        ]
    )
    message = "; ".join(f"{f}: {d}" for f, d in violations[:5])
    if len(violations) > 5:
        message += f"; and {len(violations) - 5} more"
    status = status_pb2.Status(code=_PB_CODES[code], message=message)
    status.details.add().Pack(detail)
    abort_with_status: Any = getattr(context, "abort_with_status")  # noqa: B009 - not in stubs
    await abort_with_status(rpc_status.to_status(status))
    raise AssertionError("unreachable")  # abort_with_status raises


def _violations(rejections: list[Rejected]) -> list[tuple[str, str]]:
    return [(f"events[{r.index}].{r.field}", r.reason) for r in rejections]


def _rejections_pb(result: PublishResult) -> list[pb.Rejection]:
    return [
        pb.Rejection(index=r.index, event_id=r.event_id, field=r.field, reason=r.reason)
        for r in result.rejections
    ]


class IngestServicer:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.pipeline = daemon.pipeline
        self.max_batch = daemon.config.ingest.max_batch_events
        self.stream_wait = daemon.config.ingest.stream_wait_seconds

    async def _too_big(self, count: int, context: Context) -> None:
        if count > self.max_batch:
            self.pipeline.rejections["batch_too_large"] += 1
            await bad_request(
                context,
                [("events", f"batch has {count} events; at most {self.max_batch} per batch")],
            )

    async def _ingest(self, events: Sequence[pb.Event], received: float) -> PublishResult:
        """Validate and enqueue a reserved batch in slices, letting the reconciler decide
        each slice before the next is validated: an event's outcome waits for its slice,
        not for the whole batch."""
        pipeline = self.pipeline
        accepted = 0
        rejections: list[Rejected] = []
        try:
            for start in range(0, len(events), STEP):
                good, result = pipeline.check(copies_from(events[start : start + STEP]))
                if result.rejections:
                    rejections += [replace(r, index=r.index + start) for r in result.rejections]
                if good:
                    pipeline.enqueue_reserved(good, received)
                    accepted += len(good)
                    await asyncio.sleep(0)
        finally:
            pipeline.release(len(events) - accepted)
        return PublishResult(accepted, rejections)

    async def Publish(self, request: pb.PublishRequest, context: Context) -> pb.PublishResponse:
        received = time.perf_counter()
        events = request.events
        await self._too_big(len(events), context)
        if not events:
            await bad_request(context, [("events", "batch has no events")])
        try:
            if self.pipeline.throttles:
                self.pipeline.throttle([e.source for e in events])
            self.pipeline.reserve(len(events))
        except QueueFull as exc:
            self.pipeline.rejections["queue_full"] += len(events)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        result = await self._ingest(events, received)
        if not result.accepted:
            if all(r.code == "source_paused" for r in result.rejections):
                await bad_request(
                    context, _violations(result.rejections), grpc.StatusCode.FAILED_PRECONDITION
                )
            await bad_request(context, _violations(result.rejections))
        return pb.PublishResponse(accepted=result.accepted, rejections=_rejections_pb(result))

    # Takes raw bytes: parsing inline saves a generator hop per batch on the hottest path.
    raw_requests = True

    async def PublishStream(
        self, requests: AsyncIterator[bytes], context: Context
    ) -> AsyncIterator[pb.PublishStreamResponse]:
        pipeline = self.pipeline
        parse = pb.PublishStreamRequest.FromString
        async for raw in requests:
            received = time.perf_counter()
            try:
                request = parse(raw)
            except DecodeError as exc:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"request is not a valid helios.v1.PublishStreamRequest: {exc}",
                )
            events = request.events
            await self._too_big(len(events), context)
            try:
                if pipeline.throttles:
                    pipeline.throttle([e.source for e in events])
                await pipeline.reserve_wait(len(events), self.stream_wait)
            except QueueFull as exc:
                pipeline.rejections["queue_full"] += len(events)
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
            result = await self._ingest(events, received)
            yield pb.PublishStreamResponse(
                batch_id=request.batch_id,
                accepted=result.accepted,
                rejections=_rejections_pb(result) if result.rejections else None,
            )


class QueryServicer:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def GetEvent(self, request: pb.GetEventRequest, context: Context) -> pb.GetEventResponse:
        if not request.event_id:
            await bad_request(context, [("event_id", "event_id is empty")])
        record = await self.daemon.get_event(request.event_id)
        if record is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no event {request.event_id!r} in open windows or the index "
                f"(records age out after {self.daemon.config.index.ttl_seconds:g} s)",
            )
        event = record_pb(record, self.daemon.config.sources.names)
        event.quarantine_reason = self.daemon.quarantined.get(request.event_id, "")
        return pb.GetEventResponse(event=event)

    async def ListOutcomes(
        self, request: pb.ListOutcomesRequest, context: Context
    ) -> pb.ListOutcomesResponse:
        if request.page_size < 0:
            await bad_request(context, [("page_size", "page_size must be >= 0")])
        page_size = min(request.page_size or 100, 1000)
        try:
            query = parse_filter(request.filter)
            before = decode_token(request.page_token)
        except FilterError as exc:
            await bad_request(context, [(exc.field, str(exc))])
        outcomes, next_before = await self.daemon.index.list_outcomes(query, page_size, before)
        response = pb.ListOutcomesResponse(
            next_page_token=encode_token(next_before) if next_before is not None else ""
        )
        add_outcomes(response.outcomes, outcomes)
        return response

    async def GetStats(self, request: pb.GetStatsRequest, context: Context) -> pb.GetStatsResponse:
        daemon = self.daemon
        rec = daemon.reconciler
        copies_rate, events_rate = daemon.rates()
        latency = daemon.pipeline.latency_summary()
        return pb.GetStatsResponse(
            copies_received=rec.copies_received,
            events_seen=rec.events_seen,
            outcomes=daemon.pipeline.outcome_counts(),
            rejections=dict(daemon.pipeline.rejections),
            errors=dict(daemon.errors),
            detectors=[
                pb.DetectorStatus(name=name, status=text, anomalies=daemon.detection.counts[name])
                for name, text in daemon.detection.status().items()
            ],
            open_windows=len(rec.open),
            index_records=await daemon.index.count(),
            copies_per_second=copies_rate,
            events_per_second=events_rate,
            sources=[source_stats_pb(s) for s in daemon.source_status()],
            reconcile_latency=pb.LatencySummary(
                p50_ms=latency["p50"],
                p90_ms=latency["p90"],
                p99_ms=latency["p99"],
                max_ms=latency["max"],
                count=int(latency["count"]),
            ),
            ingest_queue_depth=daemon.pipeline.queued,
            ingest_queue_capacity=daemon.pipeline.capacity,
            uptime_seconds=daemon.uptime(),
            version=daemon.version,
            now=ts(daemon.clock.now()),
        )

    async def GetMetrics(
        self, request: pb.GetMetricsRequest, context: Context
    ) -> pb.GetMetricsResponse:
        start = seconds(request.start_time) if request.HasField("start_time") else None
        end = seconds(request.end_time) if request.HasField("end_time") else None
        if start is not None and end is not None and end < start:
            await bad_request(context, [("end_time", "end_time is before start_time")])
        minutes = self.daemon.metrics.query(start, end)
        return pb.GetMetricsResponse(
            minutes=[
                pb.MetricsMinute(
                    minute=ts(m.minute),
                    features=m.features,
                    missing_rate_by_source=m.missing_rate_by_source,
                    duplicate_rate_by_source=m.duplicate_rate_by_source,
                    inconsistent_rate_by_source=m.inconsistent_rate_by_source,
                    events_closed=m.events_closed,
                    copies=m.copies,
                )
                for m in minutes
            ]
        )

    async def ListAnomalies(
        self, request: pb.ListAnomaliesRequest, context: Context
    ) -> pb.ListAnomaliesResponse:
        if request.page_size < 0:
            await bad_request(context, [("page_size", "page_size must be >= 0")])
        try:
            query = parse_anomaly_filter(request.filter)
            before = decode_token(request.page_token)
        except FilterError as exc:
            await bad_request(context, [(exc.field, str(exc))])
        page, more = self.daemon.detection.list(query, min(request.page_size or 100, 1000), before)
        return pb.ListAnomaliesResponse(
            anomalies=[anomaly_pb(a) for a in page],
            next_page_token=encode_token(more) if more is not None else "",
        )

    async def GetAnomaly(
        self, request: pb.GetAnomalyRequest, context: Context
    ) -> pb.GetAnomalyResponse:
        if not request.id:
            await bad_request(context, [("id", "id is empty")])
        anomaly = self.daemon.detection.get(request.id)
        if anomaly is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no anomaly {request.id!r}; ids look like ewma-20261126T0712",
            )
        return pb.GetAnomalyResponse(anomaly=anomaly_pb(anomaly))

    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        return pb.ListJobsResponse(
            jobs=[
                pb.Job(
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
                for job in self.daemon.jobs.jobs.values()
            ]
        )

    async def _listing(
        self,
        request: Any,
        context: Context,
        items: list[Any],
        fields: dict[str, str],
    ) -> tuple[list[Any], str]:
        if request.page_size < 0:
            await bad_request(context, [("page_size", "page_size must be >= 0")])
        try:
            values = parse_terms(request.filter, tuple(fields))
            before = decode_token(request.page_token)
        except FilterError as exc:
            await bad_request(context, [(exc.field, str(exc))])
        page, more = _page(
            items, min(request.page_size or 100, 1000), before, _matcher(values, fields)
        )
        return page, encode_token(more) if more is not None else ""

    async def ListDecisions(
        self, request: pb.ListDecisionsRequest, context: Context
    ) -> pb.ListDecisionsResponse:
        fields = {
            "status": "status",
            "action": "chosen",
            "target": "target",
            "trace": "trace_id",
            "mode": "mode",
        }
        items = list(self.daemon.loop.audit.decisions.values())
        page, token = await self._listing(request, context, items, fields)
        return pb.ListDecisionsResponse(
            decisions=[decision_pb(d) for d in page], next_page_token=token
        )

    async def GetDecision(
        self, request: pb.GetDecisionRequest, context: Context
    ) -> pb.GetDecisionResponse:
        if not request.id:
            await bad_request(context, [("id", "id is empty")])
        found = self.daemon.loop.audit.decisions.get(request.id)
        if found is None:
            await bad_request(
                context,
                [("id", f"no decision {request.id!r}; ids look like d-000042")],
                grpc.StatusCode.NOT_FOUND,
            )
        return pb.GetDecisionResponse(decision=decision_pb(found))

    async def ListExecutions(
        self, request: pb.ListExecutionsRequest, context: Context
    ) -> pb.ListExecutionsResponse:
        fields = {
            "status": "status",
            "action": "action",
            "target": "target",
            "verification": "verification",
            "trace": "trace_id",
        }
        items = list(self.daemon.loop.audit.executions.values())
        page, token = await self._listing(request, context, items, fields)
        return pb.ListExecutionsResponse(
            executions=[execution_pb(x) for x in page], next_page_token=token
        )

    async def GetTrace(self, request: pb.GetTraceRequest, context: Context) -> pb.GetTraceResponse:
        if not request.trace_id:
            await bad_request(context, [("trace_id", "trace_id is empty")])
        loop = self.daemon.loop
        decisions, executions = loop.audit.by_trace(request.trace_id)
        if not decisions:
            await bad_request(
                context, [("trace_id", f"no trace {request.trace_id!r}")], grpc.StatusCode.NOT_FOUND
            )
        anomalies = []
        for d in decisions:
            a = self.daemon.detection.get(d.anomaly_id) if d.anomaly_id else None
            if a is not None and a not in anomalies:
                anomalies.append(a)
        spans = sorted((s for d in decisions for s in d.spans), key=lambda s: s.at)
        return pb.GetTraceResponse(
            trace_id=request.trace_id,
            anomalies=[anomaly_pb(a) for a in anomalies],
            decisions=[decision_pb(d) for d in decisions],
            executions=[execution_pb(x) for x in executions],
            spans=[pb.TraceSpan(at=ts(s.at), stage=s.stage, text=s.text) for s in spans],
        )

    async def ListActions(
        self, request: pb.ListActionsRequest, context: Context
    ) -> pb.ListActionsResponse:
        daemon = self.daemon
        loop = daemon.loop
        actions = []
        for name, e in sorted(loop.entries.items()):
            s = e.settings
            runs = e.stats.runs
            actions.append(
                pb.ActionInfo(
                    name=name,
                    description=e.action.description,
                    issue_kinds=e.action.issue_kinds,
                    plugin=e.plugin,
                    criteria=pb.Criteria(**asdict(e.criteria())),
                    configured=pb.Criteria(**asdict(e.action.defaults)),
                    runs=len(runs),
                    successes=sum(1 for r in runs if r[0]),
                    mode=loop.mode(name),
                    enabled=s.enabled,
                    cooldown_seconds=s.cooldown_seconds,
                    max_concurrent=s.max_concurrent,
                    max_per_hour=s.max_per_hour,
                    blast_radius=s.blast_radius,
                    timeout_seconds=s.timeout_seconds,
                    retries=s.retries,
                    running=sum(1 for a in loop.policy.running.values() if a == name),
                )
            )
        return pb.ListActionsResponse(
            actions=actions,
            automation_mode=loop.policy.mode_override or loop.config.automation,
            method=loop.config.method,
            weighting=loop.weights_note,
            weights=loop.weights,
            breakers=[
                breaker_pb(b, b.source in daemon.failed_over)
                for b in daemon.breakers.breakers.values()
            ],
            notifications=[
                pb.Notification(at=ts(at), level=level, text=text)
                for at, level, text in list(daemon.notifications)[-50:]
            ],
            throttles={s: b[0] for s, b in daemon.pipeline.throttles.items()},
            quarantined_events=len(daemon.quarantined),
        )

    async def WatchOutcomes(
        self, request: pb.WatchOutcomesRequest, context: Context
    ) -> AsyncIterator[pb.WatchOutcomesResponse]:
        try:
            query = parse_filter(request.filter) if request.filter.strip() else None
        except FilterError as exc:
            await bad_request(context, [(exc.field, str(exc))])
        pipeline = self.daemon.pipeline
        watcher = pipeline.watch(query)
        await context.send_initial_metadata(())  # tells the client the watch is live
        try:
            while True:
                chunk = await watcher.queue.get()
                if watcher.overflowed:
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        "this watcher fell more than 2000 batches behind; reconnect",
                    )
                while not watcher.queue.empty() and len(chunk) < 5000:
                    chunk = chunk + watcher.queue.get_nowait()
                response = pb.WatchOutcomesResponse()
                add_outcomes(response.outcomes, chunk)
                yield response
        finally:
            pipeline.unwatch(watcher)


class ControlServicer:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def _source(
        self, source: str, change: Callable[[str], Any], context: Context
    ) -> pb.SourceStats:
        if not source:
            await bad_request(context, [("source", "source is empty")])
        try:
            s = change(source)
        except UnknownSource:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"unknown source {source!r}; known: {', '.join(self.daemon.config.sources.names)}",
            )
        return source_stats_pb(s)

    async def PauseSource(
        self, request: pb.PauseSourceRequest, context: Context
    ) -> pb.PauseSourceResponse:
        stats = await self._source(request.source, self.daemon.pause_source, context)
        return pb.PauseSourceResponse(source=stats)

    async def ResumeSource(
        self, request: pb.ResumeSourceRequest, context: Context
    ) -> pb.ResumeSourceResponse:
        stats = await self._source(request.source, self.daemon.resume_source, context)
        return pb.ResumeSourceResponse(source=stats)

    async def TriggerAction(
        self, request: pb.TriggerActionRequest, context: Context
    ) -> pb.TriggerActionResponse:
        try:
            d, x = await self.daemon.loop.trigger(
                request.action,
                request.target,
                dict(request.params),
                request.dry_run,
                request.requested_by or context.peer(),
            )
        except ActionError as exc:
            await action_error(context, exc)
        return pb.TriggerActionResponse(decision=decision_pb(d), execution=execution_pb(x))

    async def ApproveDecision(
        self, request: pb.ApproveDecisionRequest, context: Context
    ) -> pb.ApproveDecisionResponse:
        try:
            d = await self.daemon.loop.approve(request.id, request.approved_by or context.peer())
        except ActionError as exc:
            await action_error(context, exc)
        return pb.ApproveDecisionResponse(decision=decision_pb(d))

    async def RejectDecision(
        self, request: pb.RejectDecisionRequest, context: Context
    ) -> pb.RejectDecisionResponse:
        try:
            d = self.daemon.loop.reject(
                request.id, request.rejected_by or context.peer(), request.reason
            )
        except ActionError as exc:
            await action_error(context, exc)
        return pb.RejectDecisionResponse(decision=decision_pb(d))

    async def SetAutomationMode(
        self, request: pb.SetAutomationModeRequest, context: Context
    ) -> pb.SetAutomationModeResponse:
        loop = self.daemon.loop
        if not request.action and request.mode not in MODES:
            await bad_request(
                context, [("mode", f"mode must be one of {', '.join(MODES)}, got {request.mode!r}")]
            )
        try:
            loop.set_mode(request.mode, request.action)
        except ActionError as exc:
            await action_error(context, exc)
        return pb.SetAutomationModeResponse(
            automation_mode=loop.policy.mode_override or loop.config.automation,
            action_modes=loop.policy.action_modes,
        )

    async def SetBreaker(
        self, request: pb.SetBreakerRequest, context: Context
    ) -> pb.SetBreakerResponse:
        daemon = self.daemon
        if request.source not in daemon.sources:
            await bad_request(
                context,
                [
                    (
                        "source",
                        f"unknown source {request.source!r}; known: {', '.join(daemon.sources)}",
                    )
                ],
                grpc.StatusCode.NOT_FOUND,
            )
        if request.state not in ("open", "closed", "auto"):
            await bad_request(
                context, [("state", f"state must be open, closed or auto, got {request.state!r}")]
            )
        daemon.set_breaker(
            request.source, request.state, request.reason or f"set by {context.peer()}"
        )
        b = daemon.breakers.breakers[request.source]
        return pb.SetBreakerResponse(breaker=breaker_pb(b, b.source in daemon.failed_over))

    async def SetWeights(
        self, request: pb.SetWeightsRequest, context: Context
    ) -> pb.SetWeightsResponse:
        loop = self.daemon.loop
        try:
            weights = loop.set_weights(dict(request.weights))
        except ActionError as exc:
            await action_error(context, exc)
        return pb.SetWeightsResponse(weighting=loop.weights_note, weights=weights)


def _handlers(
    service: _descriptor.ServiceDescriptor, servicer: object, errors: Counter[str]
) -> dict[str, Any]:
    """Method handlers that parse requests themselves, so that bytes which are not a
    valid request get INVALID_ARGUMENT naming the expected message (not INTERNAL), and
    that count every refused request by method and status code."""
    handlers: dict[str, Any] = {}
    for method in service.methods:
        request_cls = getattr(pb, method.input_type.name)
        response_cls = getattr(pb, method.output_type.name)
        impl = getattr(servicer, method.name)
        parse = _parser(request_cls)
        serialize = response_cls.SerializeToString
        streaming = method.server_streaming
        if getattr(servicer, "raw_requests", False) and method.client_streaming:
            handler, kind = impl, grpc.stream_stream_rpc_method_handler
        elif method.client_streaming and streaming:
            handler, kind = _stream_stream(impl, parse), grpc.stream_stream_rpc_method_handler
        elif streaming:
            handler, kind = _unary_stream(impl, parse), grpc.unary_stream_rpc_method_handler
        else:
            handler, kind = _unary_unary(impl, parse), grpc.unary_unary_rpc_method_handler
        handlers[method.name] = kind(
            _counted(handler, method.name, errors, streaming), response_serializer=serialize
        )
    return handlers


Parser = Callable[[bytes, Context], Awaitable[Any]]


def _counted(impl: Any, name: str, errors: Counter[str], streaming: bool) -> Any:
    def count(context: Context) -> None:
        code = context.code()
        errors[f"{name}:{code.name if isinstance(code, grpc.StatusCode) else code}"] += 1

    if streaming:

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            try:
                async for response in impl(request, context):
                    yield response
            except AbortError:
                count(context)
                raise

        return stream

    async def unary(request: Any, context: Context) -> Any:
        try:
            return await impl(request, context)
        except AbortError:
            count(context)
            raise

    return unary


def _parser(request_cls: Any) -> Parser:
    name = request_cls.DESCRIPTOR.full_name

    async def parse(raw: bytes, context: Context) -> Any:
        try:
            return request_cls.FromString(raw)
        except DecodeError as exc:  # counted by _counted, like every abort
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"request is not a valid {name}: {exc}"
            )

    return parse


def _unary_unary(impl: Any, parse: Parser) -> Any:
    async def handler(raw: bytes, context: Context) -> Any:
        return await impl(await parse(raw, context), context)

    return handler


def _unary_stream(impl: Any, parse: Parser) -> Any:
    async def handler(raw: bytes, context: Context) -> AsyncIterator[Any]:
        async for response in impl(await parse(raw, context), context):
            yield response

    return handler


def _stream_stream(impl: Any, parse: Parser) -> Any:
    async def handler(raw_requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[Any]:
        async def requests() -> AsyncIterator[Any]:
            async for raw in raw_requests:
                yield await parse(raw, context)

        async for response in impl(requests(), context):
            yield response

    return handler


class GrpcServer:
    """The daemon's gRPC endpoint."""

    def __init__(self, daemon: Daemon, address: str) -> None:
        self.daemon = daemon
        limit = daemon.config.ingest.max_message_bytes
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
            ]
        )
        services = pb.DESCRIPTOR.services_by_name
        for name, servicer in (
            ("IngestService", IngestServicer(daemon)),
            ("QueryService", QueryServicer(daemon)),
            ("ControlService", ControlServicer(daemon)),
        ):
            service = services[name]
            register: Any = getattr(self.server, "add_registered_method_handlers")  # noqa: B009
            register(service.full_name, _handlers(service, servicer, daemon.errors))
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [s.full_name for s in services.values()]
        reflection.enable_server_reflection(
            [
                *names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.server,
        )
        try:
            self.port = self.server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc's way of saying the address is taken or invalid
            raise OSError(
                f"cannot listen for gRPC on {address} (daemon.grpc_address): {exc}"
            ) from None
        self.names = names

    async def start(self) -> None:
        await self.server.start()
        for name in ["", *self.names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float = 2.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await asyncio.sleep(0)
