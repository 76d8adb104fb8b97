"""helios: the command-line client of heliosd (talks gRPC).

Exit codes: 0 success; 1 the command ran and found a problem (rejected events, an
unknown id); 2 bad usage or input; 3 the daemon could not be reached or failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

import grpc
from helios.control import heal_cli, inputs_cli, keys_cli, observe_cli
from helios.control.common import (
    DEFAULT_ADDRESS,
    OK,
    PROBLEM,
    UNREACHABLE,
    USAGE,
    CliError,
    Credentials,
    channel,
    table,
)
from helios.control.common import when as _when
from helios.control.detection_cli import cmd_anomalies_get, cmd_anomalies_list, cmd_metrics
from helios.control.events_cli import (
    cmd_event_get,
    cmd_ingest,
    cmd_outcomes_list,
    cmd_watch,
)
from helios.v1 import helios_pb2 as pb
from helios.v1 import helios_pb2_grpc as pb_grpc

__all__ = ["OK", "PROBLEM", "UNREACHABLE", "USAGE", "CliError", "main", "table"]


def cmd_status(args: argparse.Namespace) -> int:
    stats = pb_grpc.QueryServiceStub(channel(args.address)).GetStats(
        pb.GetStatsRequest(), timeout=10
    )
    if args.json:
        from google.protobuf.json_format import MessageToDict

        print(json.dumps(MessageToDict(stats), indent=2))
        return OK
    lat = stats.reconcile_latency
    print(f"heliosd {stats.version}  up {stats.uptime_seconds:,.0f} s  now {_when(stats.now)}")
    print(
        f"events seen {stats.events_seen:,}  copies {stats.copies_received:,}  "
        f"open windows {stats.open_windows:,}  index records {stats.index_records:,}"
    )
    print(
        f"rate {stats.events_per_second:,.1f} events/s, {stats.copies_per_second:,.1f} copies/s  "
        f"queue {stats.ingest_queue_depth:,}/{stats.ingest_queue_capacity:,}"
    )
    print(
        f"reconcile latency ms: p50 {lat.p50_ms:.2f}  p90 {lat.p90_ms:.2f}  "
        f"p99 {lat.p99_ms:.2f}  max {lat.max_ms:.2f}  ({lat.count:,} samples)"
    )
    store = stats.storage
    print(
        f"storage {store.backend}: {store.durability}\n"
        f"  open windows {store.open_windows:,} of at most {store.max_open_windows:,}; "
        f"data dir {store.data_dir}{' (locked)' if store.data_dir_locked else ''}"
    )
    for key, value in sorted(store.details.items()):
        print(f"  {key}: {value}")
    if store.HasField("bloom"):
        b = store.bloom
        print(
            f"  bloom: {b.slices} slices of {b.capacity_per_filter:,} ids per source, "
            f"{b.bytes / 1e6:,.1f} MB; current fill {b.fill:.1%}, false positives "
            f"{b.false_positive_rate:.4%} per filter (configured {b.configured_error_rate:.2%} "
            f"at capacity), {b.lookup_false_positive_rate:.4%} per lookup; recognised past "
            f"the TTL: {b.aged_late:,} late, {b.aged_duplicates:,} duplicates; remembers "
            f"events closed since {_when(b.oldest_slice_started)}; {b.slices_set_aside} "
            f"slices set aside (their records may not be stored)"
        )
    print()
    table([("OUTCOME", "COUNT")] + [(k, f"{v:,}") for k, v in sorted(stats.outcomes.items())])
    print()
    table(
        [("SOURCE", "COPIES", "EXPECTED", "DELIVERED", "COMPLETENESS", "DUPLICATES", "PAUSED")]
        + [
            (
                s.source,
                f"{s.copies:,}",
                f"{s.expected:,}",
                f"{s.delivered:,}",
                f"{s.completeness * 100:.3f}%",
                f"{s.duplicates:,}",
                "yes" if s.paused else "",
            )
            for s in stats.sources
        ]
    )
    if stats.detectors:
        print()
        table(
            [("DETECTOR", "ANOMALIES", "STATUS")]
            + [(d.name, f"{d.anomalies:,}", d.status) for d in stats.detectors]
        )
    if stats.rejections:
        print()
        table(
            [("REJECTED", "COUNT")] + [(k, f"{v:,}") for k, v in sorted(stats.rejections.items())]
        )
    return OK


def cmd_jobs(args: argparse.Namespace) -> int:
    jobs = (
        pb_grpc.QueryServiceStub(channel(args.address))
        .ListJobs(pb.ListJobsRequest(), timeout=10)
        .jobs
    )
    if args.json:
        from google.protobuf.json_format import MessageToDict

        print(json.dumps([MessageToDict(j) for j in jobs], indent=2))
        return OK
    table(
        [("JOB", "EVERY", "CLOCK", "LAST RUN", "NEXT IN", "RUNS", "FAILURES", "LAST RESULT")]
        + [
            (
                j.name,
                f"{j.interval_seconds:g}s",
                j.clock,
                _when(j.last_run)[11:19] if j.HasField("last_run") else "-",
                f"{j.due_in_seconds:.1f}s",
                j.runs,
                j.failures,
                (f"ERROR {j.last_error}" if j.last_error else j.last_result)[:70],
            )
            for j in jobs
        ]
    )
    return OK


def cmd_sources(args: argparse.Namespace) -> int:
    if args.action == "list":
        return inputs_cli.cmd_list(args)
    if not args.source:
        raise CliError(f"helios sources {args.action} SOURCE")
    stub = pb_grpc.ControlServiceStub(channel(args.address))
    if args.action == "pause":
        source = stub.PauseSource(pb.PauseSourceRequest(source=args.source), timeout=10).source
    else:
        source = stub.ResumeSource(pb.ResumeSourceRequest(source=args.source), timeout=10).source
    print(f"{source.source}: {'paused' if source.paused else 'running'}")
    return OK


def cmd_bench(args: argparse.Namespace) -> int:
    from helios.control.bench import BenchOptions, print_report, run_bench

    report = run_bench(
        BenchOptions(
            address=args.address,
            events=args.events,
            rate=args.rate,
            batch_size=args.batch_size,
            drop=args.drop,
            duplicate=args.duplicate,
            corrupt=args.corrupt,
            sources=args.sources.split(","),
            event_type=args.event_type,
            settle_seconds=args.settle,
            seed=args.seed,
            end_to_end=args.end_to_end,
        )
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return OK if report["correct"] else PROBLEM


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="helios", description="Talk to a running heliosd.")
    parser.add_argument(
        "--address",
        default=os.environ.get("HELIOS_ADDRESS", DEFAULT_ADDRESS),
        help="heliosd gRPC address (default $HELIOS_ADDRESS or %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    env = os.environ.get
    parser.add_argument(
        "--api-key", default=env("HELIOS_API_KEY", ""), help="API key (default $HELIOS_API_KEY)"
    )
    parser.add_argument(
        "--tls-ca",
        default=env("HELIOS_TLS_CA", ""),
        help="connect over TLS, trusting this CA (PEM; default $HELIOS_TLS_CA)",
    )
    parser.add_argument(
        "--tls-cert", default=env("HELIOS_TLS_CERT", ""), help="client certificate (mutual TLS)"
    )
    parser.add_argument("--tls-key", default=env("HELIOS_TLS_KEY", ""), help="its private key")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("status", help="counters, rates, completeness per source").set_defaults(
        func=cmd_status
    )

    events = sub.add_parser("events", help="look up events").add_subparsers(
        dest="sub", required=True
    )
    get = events.add_parser("get", help="every copy of one event, its outcome and latencies")
    get.add_argument("event_id")
    get.set_defaults(func=cmd_event_get)

    outcomes = sub.add_parser("outcomes", help="list outcomes").add_subparsers(
        dest="sub", required=True
    )
    lst = outcomes.add_parser("list", help="newest first")
    watch = sub.add_parser("watch", help="stream outcomes as they are decided")
    for p in (lst, watch):
        p.add_argument(
            "--kind", help="COMPLETE, MISSING, INCONSISTENT, DUPLICATE, LATE (comma list)"
        )
        p.add_argument("--source")
        p.add_argument("--event-type", dest="event_type", help="a glob, e.g. 'order.*'")
        p.add_argument("--filter", help="a raw filter expression")
    lst.add_argument("--since", help="ISO-8601 time or epoch seconds")
    lst.add_argument("--until")
    lst.add_argument("--event-id", dest="event_id")
    lst.add_argument("--limit", type=int, default=50)
    lst.add_argument("--page-token", dest="page_token")
    lst.set_defaults(func=cmd_outcomes_list)
    watch.add_argument("--count", type=int, default=0, help="stop after this many outcomes")
    watch.set_defaults(func=cmd_watch)

    anomalies = sub.add_parser("anomalies", help="what the detectors found").add_subparsers(
        dest="sub", required=True
    )
    alist = anomalies.add_parser("list", help="newest first")
    alist.add_argument("--detector")
    alist.add_argument("--severity", help="minor, major, critical (comma list)")
    alist.add_argument("--metric")
    alist.add_argument("--since")
    alist.add_argument("--until")
    alist.add_argument("--limit", type=int, default=50)
    alist.set_defaults(func=cmd_anomalies_list)
    aget = anomalies.add_parser("get", help="one anomaly with every metric and its baseline")
    aget.add_argument("id")
    aget.set_defaults(func=cmd_anomalies_get)

    ingest = sub.add_parser("ingest", help="publish JSON-lines events from FILE or - (stdin)")
    ingest.add_argument("file")
    ingest.add_argument("--batch-size", type=int, default=1000)
    ingest.set_defaults(func=cmd_ingest)

    sub.add_parser("jobs", help="scheduled jobs: last run, result, next run").set_defaults(
        func=cmd_jobs
    )

    sources = sub.add_parser("sources", help="list the inputs, or pause or resume a source")
    sources.add_argument("action", choices=["list", "pause", "resume"])
    sources.add_argument("source", nargs="?", default="")
    sources.set_defaults(func=cmd_sources)
    inputs_cli.register(sub, sources)

    metrics = sub.add_parser("metrics", help="per-minute reconciliation metrics")
    metrics.add_argument("--minutes", type=int, default=15)
    metrics.set_defaults(func=cmd_metrics)

    bench = sub.add_parser("bench", help="load-test a running daemon and score its outcomes")
    bench.add_argument(
        "--events", type=int, default=200_000, help="events to send (x sources copies)"
    )
    bench.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="target copies/s (0 = as fast as the daemon acknowledges)",
    )
    bench.add_argument("--batch-size", dest="batch_size", type=int, default=1000)
    bench.add_argument("--drop", type=float, default=0.01, help="probability a copy is withheld")
    bench.add_argument("--duplicate", type=float, default=0.01)
    bench.add_argument("--corrupt", type=float, default=0.005)
    bench.add_argument("--sources", default="aws,gcp,azure")
    bench.add_argument(
        "--event-type",
        dest="event_type",
        default="bench.order",
        help="must match a route with a short window (the demo has bench.*)",
    )
    bench.add_argument(
        "--settle",
        type=float,
        default=40.0,
        help="seconds to wait for MISSING after the last copy (window + grace)",
    )
    bench.add_argument("--seed", type=int, default=1)
    bench.add_argument(
        "--end-to-end",
        dest="end_to_end",
        action="store_true",
        help="stream every outcome (COMPLETE too) to time COMPLETE end to end; by default "
        "only the scored kinds are watched and decisions are checked on a sample",
    )
    bench.set_defaults(func=cmd_bench)
    heal_cli.register(sub)
    keys_cli.register(sub)
    observe_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    Credentials.api_key, Credentials.tls_ca = args.api_key, args.tls_ca
    Credentials.tls_cert, Credentials.tls_key = args.tls_cert, args.tls_key
    try:
        code: int = args.func(args)
        return code
    except CliError as exc:
        print(f"helios: {exc}", file=sys.stderr)
        return exc.code
    except grpc.RpcError as exc:
        code_name = exc.code().name
        details = exc.details()
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            print(f"helios: cannot reach heliosd at {args.address}: {details}", file=sys.stderr)
            return UNAVAILABLE_CODE
        print(f"helios: {code_name}: {details}", file=sys.stderr)
        return (
            PROBLEM
            if code_name
            in (
                "NOT_FOUND",
                "INVALID_ARGUMENT",
                "FAILED_PRECONDITION",
                "UNAUTHENTICATED",
                "PERMISSION_DENIED",
            )
            else UNREACHABLE
        )
    except BrokenPipeError:  # output piped into e.g. `head`; before ConnectionError, its base
        sys.stderr.close()
        return OK
    except ConnectionError as exc:
        print(f"helios: {exc}", file=sys.stderr)
        return UNREACHABLE


UNAVAILABLE_CODE = UNREACHABLE

if __name__ == "__main__":
    sys.exit(main())
