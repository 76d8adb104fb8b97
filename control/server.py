"""The gRPC server: IngestService, QueryService, ControlService, health and reflection.

The servicers translate protobuf to and from the daemon's domain objects and call the
service layer (helios.daemon.services); helios.control.handlers turns a service's
RequestError into one status, with google.rpc.BadRequest field violations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from helios.control.common import seconds
from helios.control.convert import (
    add_outcomes,
    anomaly_pb,
    breaker_pb,
    catalogue_pb,
    copies_from,
    decision_pb,
    execution_pb,
    job_pb,
    metrics_minute_pb,
    record_pb,
    source_stats_pb,
    stats_pb,
    trace_pb,
)
from helios.control.deliveries import DeadLetterControl, InputQueries
from helios.control.handlers import Context, bad_request, handlers
from helios.control.observe import ObserveControl, ObserveQueries
from helios.control.trust import AuditServicer, KeysServicer, listen
from helios.control.wire import check_caps, request_caps
from helios.daemon.config import IngestConfig, SecurityConfig
from helios.daemon.domain import AutomationMode
from helios.daemon.errors import RequestError
from helios.daemon.readmodels import Batch
from helios.daemon.services import Services
from helios.daemon.tenants import SEP, unscoped
from helios.daemon.types import PublishResult
from helios.v1 import helios_pb2 as pb


def _events(result: PublishResult) -> list[tuple[str, str]]:
    return [(f"events[{r.index}].{r.field}", r.reason) for r in result.rejections]


def _rejections_pb(result: PublishResult) -> list[pb.Rejection]:
    return [
        pb.Rejection(index=r.index, event_id=_raw(r.event_id), field=r.field, reason=r.reason)
        for r in result.rejections
    ]


def _raw(key: str) -> str:
    """The id a client sent, from the key copies_from made of it."""
    return key[1:] if key.startswith(SEP) else unscoped(key)[1]


log = logging.getLogger("helios.grpc")
STREAM_IN_FLIGHT = 64  # batches of one stream admitted but not yet acknowledged


class IngestServicer:
    def __init__(self, services: Services) -> None:
        self.admission = services.admission
        self.guard = services.guard

    async def Publish(self, request: pb.PublishRequest, context: Context) -> pb.PublishResponse:
        received = time.perf_counter()
        if not request.events:
            raise RequestError("events", "batch has no events")
        self.guard.slow_down("copies", len(request.events))
        result = await self.admission.admit(copies_from(request.events), received, scoped=True)
        if not result.accepted:  # nothing taken: the whole request failed
            paused = all(r.code == "source_paused" for r in result.rejections)
            code = (
                grpc.StatusCode.FAILED_PRECONDITION if paused else grpc.StatusCode.INVALID_ARGUMENT
            )
            await bad_request(context, _events(result), code)
        return pb.PublishResponse(accepted=result.accepted, rejections=_rejections_pb(result))

    # Takes raw bytes: parsing inline saves a generator hop per batch on the hottest path.
    raw_requests = True

    async def PublishStream(
        self, requests: AsyncIterator[bytes], context: Context
    ) -> AsyncIterator[pb.PublishStreamResponse]:
        """Reads and admits batches while earlier ones are being stored, and sends the
        acknowledgements in order, each once its batch is stored."""
        submit = self.admission.submit
        guard = self.guard
        parse = pb.PublishStreamRequest.FromString
        caps = request_caps(self.admission.max_batch)["PublishStreamRequest"]
        acks: asyncio.Queue[tuple[int, PublishResult, Awaitable[None]] | None] = asyncio.Queue(
            STREAM_IN_FLIGHT
        )

        async def read() -> None:
            try:
                async for raw in requests:
                    received = time.perf_counter()
                    check_caps(raw, caps)
                    try:
                        request = parse(raw)
                    except DecodeError as exc:
                        raise RequestError(
                            "request", f"not a valid helios.v1.PublishStreamRequest: {exc}"
                        ) from None
                    guard.slow_down("copies", len(request.events))
                    copies = copies_from(request.events)
                    result, stored = await submit(copies, received, True, scoped=True)
                    await acks.put((request.batch_id, result, stored))
            finally:
                await acks.put(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await acks.get()) is not None:
                batch_id, result, stored = item
                await stored
                yield pb.PublishStreamResponse(
                    batch_id=batch_id,
                    accepted=result.accepted,
                    rejections=_rejections_pb(result) if result.rejections else None,
                )
            await reader  # a refused batch ends the stream, after the earlier acks
        finally:
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader


class QueryServicer(InputQueries, ObserveQueries):
    def __init__(self, services: Services) -> None:
        super().__init__(services)
        self.reads = services.reads

    async def GetEvent(self, request: pb.GetEventRequest, context: Context) -> pb.GetEventResponse:
        view = await self.reads.event(request.event_id, request.tenant)
        event = record_pb(view.record, self.reads.source_names())
        event.quarantine_reason = view.quarantine_reason
        return pb.GetEventResponse(event=event)

    async def ListOutcomes(
        self, request: pb.ListOutcomesRequest, context: Context
    ) -> pb.ListOutcomesResponse:
        outcomes, token = await self.reads.outcomes(
            request.filter, request.page_size, request.page_token
        )
        response = pb.ListOutcomesResponse(next_page_token=token)
        add_outcomes(response.outcomes, outcomes)
        return response

    async def GetStats(self, request: pb.GetStatsRequest, context: Context) -> pb.GetStatsResponse:
        return stats_pb(await self.reads.stats())

    async def GetMetrics(
        self, request: pb.GetMetricsRequest, context: Context
    ) -> pb.GetMetricsResponse:
        start = seconds(request.start_time) if request.HasField("start_time") else None
        end = seconds(request.end_time) if request.HasField("end_time") else None
        minutes = self.reads.metrics(start, end)
        return pb.GetMetricsResponse(minutes=[metrics_minute_pb(m) for m in minutes])

    async def ListAnomalies(
        self, request: pb.ListAnomaliesRequest, context: Context
    ) -> pb.ListAnomaliesResponse:
        page, token = self.reads.anomalies(request.filter, request.page_size, request.page_token)
        return pb.ListAnomaliesResponse(
            anomalies=[anomaly_pb(a) for a in page], next_page_token=token
        )

    async def GetAnomaly(
        self, request: pb.GetAnomalyRequest, context: Context
    ) -> pb.GetAnomalyResponse:
        return pb.GetAnomalyResponse(anomaly=anomaly_pb(self.reads.anomaly(request.id)))

    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        return pb.ListJobsResponse(jobs=[job_pb(job) for job in self.reads.jobs()])

    async def ListDecisions(
        self, request: pb.ListDecisionsRequest, context: Context
    ) -> pb.ListDecisionsResponse:
        page, token = self.reads.decisions(request.filter, request.page_size, request.page_token)
        return pb.ListDecisionsResponse(
            decisions=[decision_pb(d) for d in page], next_page_token=token
        )

    async def GetDecision(
        self, request: pb.GetDecisionRequest, context: Context
    ) -> pb.GetDecisionResponse:
        return pb.GetDecisionResponse(decision=decision_pb(self.reads.decision(request.id)))

    async def ListExecutions(
        self, request: pb.ListExecutionsRequest, context: Context
    ) -> pb.ListExecutionsResponse:
        page, token = self.reads.executions(request.filter, request.page_size, request.page_token)
        return pb.ListExecutionsResponse(
            executions=[execution_pb(x) for x in page], next_page_token=token
        )

    async def GetTrace(self, request: pb.GetTraceRequest, context: Context) -> pb.GetTraceResponse:
        return trace_pb(self.reads.trace(request.trace_id))

    async def ListActions(
        self, request: pb.ListActionsRequest, context: Context
    ) -> pb.ListActionsResponse:
        return catalogue_pb(self.reads.catalogue())

    async def WatchOutcomes(
        self, request: pb.WatchOutcomesRequest, context: Context
    ) -> AsyncIterator[bytes]:
        watcher = self.reads.watch(request.filter)
        await context.send_initial_metadata(())  # tells the client the watch is live
        try:
            queue = watcher.queue
            while True:
                batches = [await queue.get()]
                if watcher.overflowed:
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        "this watcher fell more than 2000 batches behind; reconnect",
                    )
                count = len(batches[0].outcomes)
                while not queue.empty() and count < 5000:
                    batches.append(queue.get_nowait())
                    count += len(batches[-1].outcomes)
                # Encoded once per batch, shared by every watcher of the same filter;
                # responses concatenate (a repeated field), so bytes are joined.
                yield b"".join(_encoded(b) for b in batches)
        finally:
            self.reads.unwatch(watcher)


def _encoded(batch: Batch) -> bytes:
    encoded = batch.encoded
    if encoded is None:
        response = pb.WatchOutcomesResponse()
        add_outcomes(response.outcomes, batch.outcomes)
        encoded = batch.encoded = bytes(response.SerializeToString())
    return encoded


class ControlServicer(DeadLetterControl, ObserveControl):
    def __init__(self, services: Services) -> None:
        super().__init__(services)
        self.operator = services.operator
        self.guard = services.guard

    async def PauseSource(
        self, request: pb.PauseSourceRequest, context: Context
    ) -> pb.PauseSourceResponse:
        return pb.PauseSourceResponse(
            source=source_stats_pb(self.operator.pause_source(request.source))
        )

    async def ResumeSource(
        self, request: pb.ResumeSourceRequest, context: Context
    ) -> pb.ResumeSourceResponse:
        return pb.ResumeSourceResponse(
            source=source_stats_pb(self.operator.resume_source(request.source))
        )

    async def TriggerAction(
        self, request: pb.TriggerActionRequest, context: Context
    ) -> pb.TriggerActionResponse:
        d, x = await self.operator.trigger(
            request.action,
            request.target,
            dict(request.params),
            request.dry_run,
            self.guard.claimed(request.requested_by, context.peer()),
            force=request.force,
        )
        return pb.TriggerActionResponse(decision=decision_pb(d), execution=execution_pb(x))

    async def ApproveDecision(
        self, request: pb.ApproveDecisionRequest, context: Context
    ) -> pb.ApproveDecisionResponse:
        d = await self.operator.approve(
            request.id, self.guard.claimed(request.approved_by, context.peer())
        )
        return pb.ApproveDecisionResponse(decision=decision_pb(d))

    async def RejectDecision(
        self, request: pb.RejectDecisionRequest, context: Context
    ) -> pb.RejectDecisionResponse:
        d = self.operator.reject(
            request.id, self.guard.claimed(request.rejected_by, context.peer()), request.reason
        )
        return pb.RejectDecisionResponse(decision=decision_pb(d))

    async def SetAutomationMode(
        self, request: pb.SetAutomationModeRequest, context: Context
    ) -> pb.SetAutomationModeResponse:
        mode = request.mode
        if request.automation_mode:
            values = {v.number: v.name for v in pb.AutomationMode.DESCRIPTOR.values}
            name = values.get(request.automation_mode)
            if name is None:
                raise RequestError(
                    "automation_mode",
                    f"automation_mode {request.automation_mode} is not a helios.v1.AutomationMode; "
                    f"use one of {', '.join(n for n in values.values() if 'UNSPECIFIED' not in n)}",
                )
            mode = AutomationMode[name.removeprefix("AUTOMATION_MODE_")].value
        default, per_action = self.operator.set_mode(mode, request.action)
        return pb.SetAutomationModeResponse(automation_mode=default, action_modes=per_action)

    async def SetBreaker(
        self, request: pb.SetBreakerRequest, context: Context
    ) -> pb.SetBreakerResponse:
        who = self.guard.claimed("", context.peer())
        reason = f"{request.reason} (set by {who})" if request.reason else f"set by {who}"
        view = self.operator.set_breaker(request.source, request.state, reason)
        return pb.SetBreakerResponse(breaker=breaker_pb(view))

    async def SetWeights(
        self, request: pb.SetWeightsRequest, context: Context
    ) -> pb.SetWeightsResponse:
        weighting, weights = self.operator.set_weights(dict(request.weights))
        return pb.SetWeightsResponse(weighting=weighting, weights=weights)


class GrpcServer:
    """The daemon's gRPC endpoint."""

    def __init__(
        self,
        services: Services,
        address: str,
        ingest: IngestConfig,
        security: SecurityConfig | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.services = services
        security = security or SecurityConfig()
        limit = ingest.max_message_bytes
        self.server = grpc.aio.server(
            maximum_concurrent_rpcs=ingest.max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                # grpc shares a port with any other process by default (SO_REUSEPORT): a
                # second heliosd would take half the first one's clients without a word.
                ("grpc.so_reuseport", 1 if reuse_port else 0),
            ],
        )
        descriptors = pb.DESCRIPTOR.services_by_name
        audit, caps = services.auditlog, request_caps(services.admission.max_batch)
        for name, servicer in (
            ("IngestService", IngestServicer(services)),
            ("QueryService", QueryServicer(services)),
            ("ControlService", ControlServicer(services)),
            ("KeysService", KeysServicer(services)),
            ("AuditService", AuditServicer(services)),
        ):
            service = descriptors[name]
            register: Any = getattr(self.server, "add_registered_method_handlers")  # noqa: B009
            register(
                service.full_name,
                handlers(service, servicer, services.refused, services.guard, audit, caps),
            )
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [s.full_name for s in descriptors.values()]
        reflection.enable_server_reflection(
            [
                *names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.server,
        )
        self.tls = bool(security.tls_cert)
        self.port = listen(self.server, address, security)
        self.names = names

    async def start(self) -> None:
        await self.server.start()
        for name in ["", *self.names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float = 2.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await asyncio.sleep(0)
