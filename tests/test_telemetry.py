"""OpenTelemetry: the Prometheus scrape (parsed by prometheus_client's own parser), OTLP
export over gRPC and HTTP to local receivers that check what arrives, copy traces that
continue a producer's W3C trace context, and decision traces whose id is the audit
trace id."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from helios.v1 import helios_pb2 as pb
from helios.v1 import helios_pb2_grpc as pb_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import serve
from tests.helpers import free_port
from tests.test_grpc import event, publish, settle


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(family: Any, **labels: str) -> float:
    found = [
        s.value
        for s in family.samples
        if all(s.labels.get(k) == v for k, v in labels.items()) and not s.name.endswith("_created")
    ]
    assert found, f"no sample of {family.name} with {labels}: {family.samples}"
    return float(sum(found))


async def test_the_scrape_parses_and_counts_what_happened():
    async for s in serve("[[routes]]\nevent_type = 'order.*'\nsources = ['aws', 'gcp']\n"):
        await publish(s, *(event(f"e{i}", src) for i in range(20) for src in ("aws", "gcp")))
        await publish(s, event("lonely", "aws"), event("bad", "nowhere"))
        await settle(s)
        s.clock.advance(60)
        await s.daemon.pipeline.sweep()
        text = (await s.daemon.services.observe.prometheus()).decode()
        found = families(text)
        assert value(found["helios_copies_received"]) == 41
        assert value(found["helios_outcomes"], kind="COMPLETE", route="order.*", source="*") == 20
        assert value(found["helios_outcomes"], kind="MISSING", route="order.*", source="gcp") == 1
        assert value(found["helios_copies_rejected"], reason="unknown_source") == 1
        assert found["helios_reconcile_duration_seconds"].type == "histogram"
        assert value(found["helios_source_completeness"], source="gcp") == pytest.approx(20 / 21)
        assert found["helios_windows_open"].type == "gauge"
        for name in (
            "helios_index_records",
            "helios_ingest_queue_depth",
            "helios_breaker_state",
            "helios_source_paused",
        ):
            assert name in found, name


async def test_log_levels_change_at_run_time_and_bad_names_are_refused():
    async for s in serve():
        control = pb_grpc.ControlServiceStub(s.channel)
        query = pb_grpc.QueryServiceStub(s.channel)
        r = await control.SetLogLevel(
            pb.SetLogLevelRequest(component="helios.pipeline", level="debug")
        )
        assert r.levels["helios.pipeline"] == "DEBUG"
        listed = await query.ListLogLevels(pb.ListLogLevelsRequest())
        assert listed.levels["helios.pipeline"] == "DEBUG" and listed.format == "text"
        for component, level, field in (
            ("helios.pipeline", "LOUD", "level"),
            ("os.system", "INFO", "component"),
            ("", "INFO", "component"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await control.SetLogLevel(pb.SetLogLevelRequest(component=component, level=level))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field in caught.value.details()
        await control.SetLogLevel(pb.SetLogLevelRequest(component="helios.pipeline", level="INFO"))
        stats = await query.GetStats(pb.GetStatsRequest())
        assert stats.errors["SetLogLevel:INVALID_ARGUMENT"] == 3


async def test_a_sampled_copy_is_traced_and_continues_the_producers_trace():
    async for s in serve("[telemetry]\ntrace_copies_ratio = 0.0\n"):
        spans = InMemorySpanExporter()
        s.daemon.telemetry.add_span_processor(SimpleSpanProcessor(spans))
        await publish(s, *(event("plain", src) for src in ("aws", "gcp", "azure")))
        await settle(s)
        assert not spans.get_finished_spans()  # ratio 0 and no producer context: no trace

        trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        stub = pb_grpc.IngestServiceStub(s.channel)
        await stub.Publish(
            pb.PublishRequest(events=[event("traced", src) for src in ("aws", "gcp", "azure")]),
            metadata=(("traceparent", f"00-{trace_id}-{parent}-01"),),
        )
        await settle(s)
        finished = {sp.name: sp for sp in spans.get_finished_spans()}
        assert set(finished) >= {"helios.copy", "admission", "reconcile", "outcome"}
        root = finished["helios.copy"]
        assert f"{root.context.trace_id:032x}" == trace_id
        assert f"{root.parent.span_id:016x}" == parent
        assert root.attributes["helios.event_id"] == "traced"
        assert finished["outcome"].attributes["helios.outcome"] == "COMPLETE"
        for name in ("admission", "reconcile", "outcome"):
            assert finished[name].parent.span_id == root.context.span_id


async def test_a_decision_trace_has_the_audit_trace_id_and_a_span_per_stage():
    async for s in serve():
        spans = InMemorySpanExporter()
        s.daemon.telemetry.add_span_processor(SimpleSpanProcessor(spans))
        control = pb_grpc.ControlServiceStub(s.channel)
        done = await control.TriggerAction(
            pb.TriggerActionRequest(action="notify", target="aws", force=True)
        )
        trace_id = done.decision.trace_id
        assert len(trace_id) == 32
        got = await pb_grpc.QueryServiceStub(s.channel).GetTrace(
            pb.GetTraceRequest(trace_id=trace_id)
        )
        stages = [sp.stage for d in got.decisions for sp in d.spans]
        finished = [
            sp for sp in spans.get_finished_spans() if f"{sp.context.trace_id:032x}" == trace_id
        ]
        names = [sp.name for sp in finished]
        assert "helios.incident" in names
        assert set(stages) <= set(names), (stages, names)
        assert any(n.startswith("decision ") for n in names)


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self) -> None:
        self.names: set[str] = set()
        self.resource: dict[str, str] = {}

    def Export(self, request: Any, context: Any) -> Any:
        _collect(request, self.names, self.resource)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[Any] = []

    def Export(self, request: Any, context: Any) -> Any:
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                self.spans.extend(ss.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


def _collect(request: Any, names: set[str], resource: dict[str, str]) -> None:
    for rm in request.resource_metrics:
        for attr in rm.resource.attributes:
            resource[attr.key] = attr.value.string_value
        for sm in rm.scope_metrics:
            names.update(m.name for m in sm.metrics)


@pytest.fixture
def grpc_receiver() -> Iterator[tuple[int, _Metrics, _Traces]]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    metrics, traces = _Metrics(), _Traces()
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(metrics, server)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(traces, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, metrics, traces
    server.stop(0)


async def _until(check: Any, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "nothing arrived at the OTLP receiver"
        await asyncio.sleep(0.1)


async def test_otlp_over_grpc_delivers_metrics_and_traces(grpc_receiver):
    port, metrics, traces = grpc_receiver
    config = f"""
[telemetry]
otlp_endpoint = "http://127.0.0.1:{port}"
otlp_protocol = "grpc"
otlp_interval_seconds = 0.5
trace_copies_ratio = 1.0
service_name = "heliosd-test"
"""
    async for s in serve(config):
        await publish(s, *(event("x", src) for src in ("aws", "gcp", "azure")))
        await settle(s)
        await s.daemon.telemetry.refresh()
        await _until(lambda: "helios.copies.received" in metrics.names)
        assert {"helios.outcomes", "helios.reconcile.duration"} <= metrics.names
        assert metrics.resource["service.name"] == "heliosd-test"
    # the batch processor flushes at shutdown (Daemon.stop)
    await _until(lambda: any(sp.name == "helios.copy" for sp in traces.spans))


class _HttpReceiver(BaseHTTPRequestHandler):
    names: set[str] = set()
    resource: dict[str, str] = {}
    paths: list[str] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).paths.append(self.path)
        if self.path == "/v1/metrics":
            request = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
            _collect(request, type(self).names, type(self).resource)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(b"")

    def log_message(self, *args: Any) -> None:
        pass


async def test_otlp_over_http_delivers_metrics_with_configured_headers(monkeypatch):
    monkeypatch.setenv("OTLP_TEST_HEADERS", "x-tenant=blue")
    seen: list[str] = []

    class Receiver(_HttpReceiver):
        names: set[str] = set()
        resource: dict[str, str] = {}
        paths: list[str] = []

        def do_POST(self) -> None:
            seen.append(self.headers.get("x-tenant", ""))
            super().do_POST()

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        config = f"""
[telemetry]
otlp_endpoint = "http://127.0.0.1:{port}"
otlp_protocol = "http"
otlp_interval_seconds = 0.5
otlp_headers_env = "OTLP_TEST_HEADERS"
"""
        async for s in serve(config):
            await publish(s, *(event("y", src) for src in ("aws", "gcp", "azure")))
            await settle(s)
            await s.daemon.telemetry.refresh()
            await _until(lambda: "helios.copies.received" in Receiver.names)
        assert "/v1/metrics" in Receiver.paths and seen and set(seen) == {"blue"}
    finally:
        server.shutdown()


def test_an_otlp_endpoint_that_is_not_a_url_is_a_config_error():
    from helios.daemon.config import ConfigError, parse

    with pytest.raises((ConfigError, ValueError)) as caught:
        parse('[telemetry]\notlp_endpoint = "127.0.0.1:4317"\n')
    assert "otlp_endpoint" in str(caught.value)
    with pytest.raises((ConfigError, ValueError)) as caught:
        parse('[log]\nlevels = { "os" = "DEBUG" }\n')
    assert "log.levels" in str(caught.value) or "levels" in str(caught.value)


async def test_an_unreachable_otlp_receiver_loses_no_copy_and_does_not_hold_the_stop():
    port = free_port()  # nothing listens there
    config = f"""
[telemetry]
otlp_endpoint = "http://127.0.0.1:{port}"
otlp_interval_seconds = 0.2
trace_copies_ratio = 1.0
"""
    started = time.monotonic()
    async for s in serve(config):
        await publish(s, *(event("z", src) for src in ("aws", "gcp", "azure")))
        await settle(s)
        await s.daemon.telemetry.refresh()
        await asyncio.sleep(1.0)  # exports fail meanwhile, in the exporter's thread
        got = await pb_grpc.QueryServiceStub(s.channel).GetEvent(pb.GetEventRequest(event_id="z"))
        assert got.event.status == pb.EVENT_STATUS_COMPLETE
    assert time.monotonic() - started < 25
