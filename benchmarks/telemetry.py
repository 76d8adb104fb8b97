"""The cost of observability on ingest, side by side in one run: two heliosd with the
same minimal config (memory index, console on, no simulator); one with observability off
(`telemetry.metrics = false`, `traces = false`, `slo.enabled = false`), one at the
defaults (metrics, SLOs, and traces of 1 copy in 10,000) exporting both over OTLP/gRPC
(every 10 s, the default) to a receiver in this process, and scraped on /metrics every
5 s meanwhile (Prometheus's default is every 60 s, 15 s is common). `helios bench
--events EVENTS` at full speed against each, ROUNDS times, which goes first alternating.

    .venv/bin/python benchmarks/telemetry.py [EVENTS] [ROUNDS]     (default 300000, 3)
"""

from __future__ import annotations

import sys
import tempfile
import threading
import urllib.request
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from opentelemetry.proto.collector.metrics.v1 import (  # noqa: E402
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import (  # noqa: E402
    trace_service_pb2,
    trace_service_pb2_grpc,
)

from benchmarks.bench_run import MINIMAL, bench  # noqa: E402
from tests.conftest import start_daemon_process, stop_daemon_process  # noqa: E402


class Receiver(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self) -> None:
        self.metric_exports = 0
        self.spans = 0

    def Export(self, request: Any, context: Any) -> Any:
        self.metric_exports += 1
        return metrics_service_pb2.ExportMetricsServiceResponse()


class Spans(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        self.receiver.spans += sum(
            len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans
        )
        return trace_service_pb2.ExportTraceServiceResponse()


def scrape(port: int, stop: threading.Event, counts: list[int]) -> None:
    while not stop.wait(5.0):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            r.read()
        counts[0] += 1


def main() -> None:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(receiver, server)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Spans(receiver), server)
    otlp_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    work = Path(tempfile.mkdtemp(prefix="helios-telemetry-"))
    (work / "off").mkdir()
    (work / "on").mkdir()
    off = start_daemon_process(
        work / "off",
        MINIMAL + "[telemetry]\nmetrics = false\ntraces = false\n[slo]\nenabled = false\n",
        console=True,
    )
    on = start_daemon_process(
        work / "on",
        MINIMAL
        + f"""
[telemetry]
otlp_endpoint = "http://127.0.0.1:{otlp_port}"
""",
        console=True,
    )
    try:
        rates: dict[str, list[float]] = {"telemetry off": [], "telemetry on": []}
        scrapes = [0]
        for n in range(rounds):
            # alternate which goes first: a later run of a round is not the loser by order
            for name in ("telemetry off", "telemetry on")[:: 1 if n % 2 == 0 else -1]:
                if name == "telemetry off":
                    rates[name].append(bench(off.address, events))
                    continue
                stop = threading.Event()
                scraper = threading.Thread(target=scrape, args=(on.console_port, stop, scrapes))
                scraper.start()
                try:
                    rates[name].append(bench(on.address, events))
                finally:
                    stop.set()
                    scraper.join()
        for name, values in rates.items():
            print(f"{name:<14} " + ", ".join(f"{v:,.0f}" for v in values) + " copies/s")
        pairs = zip(rates["telemetry on"], rates["telemetry off"], strict=True)
        ratios = [a / b for a, b in pairs]
        print("on / off: " + ", ".join(f"{r:.2f}" for r in ratios))
        mean_on = sum(rates["telemetry on"]) / rounds
        mean_off = sum(rates["telemetry off"]) / rounds
        print(f"mean on / off: {mean_on / mean_off:.3f} (cost {1 - mean_on / mean_off:+.1%})")
        print(
            f"meanwhile: {scrapes[0]} scrapes of /metrics, {receiver.metric_exports} OTLP metric "
            f"exports, {receiver.spans} spans received"
        )
    finally:
        stop_daemon_process(off)
        stop_daemon_process(on)
        server.stop(0)


if __name__ == "__main__":
    main()
