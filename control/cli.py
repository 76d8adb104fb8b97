"""helios: the command-line client of heliosd (talks gRPC).

Exit codes: 0 success; 1 the command ran and found a problem (rejected events, an
unknown id); 2 bad usage or input; 3 the daemon could not be reached or failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
import orjson
from helios.control import heal_cli
from helios.control.common import (
    DEFAULT_ADDRESS,
    OK,
    PROBLEM,
    UNREACHABLE,
    USAGE,
    CliError,
    channel,
    table,
    ts,
)
from helios.control.common import when as _when
from helios.v1 import helios_pb2 as pb
from helios.v1 import helios_pb2_grpc as pb_grpc

__all__ = ["OK", "PROBLEM", "UNREACHABLE", "USAGE", "CliError", "main", "table"]


def _kind(value: int) -> str:
    return pb.OutcomeKind.Name(value).removeprefix("OUTCOME_KIND_")  # type: ignore[arg-type]


def _outcome_dict(o: pb.Outcome) -> dict[str, Any]:
    return {
        "sequence": o.sequence,
        "time": _when(o.time),
        "kind": _kind(o.kind),
        "event_id": o.event_id,
        "event_type": o.event_type,
        "sources": list(o.sources),
        "late_by_seconds": o.late_by_seconds,
    }


def _channel(args: argparse.Namespace) -> grpc.Channel:
    return channel(args.address)


def cmd_status(args: argparse.Namespace) -> int:
    stats = pb_grpc.QueryServiceStub(_channel(args)).GetStats(pb.GetStatsRequest(), timeout=10)
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


def cmd_event_get(args: argparse.Namespace) -> int:
    response = pb_grpc.QueryServiceStub(_channel(args)).GetEvent(
        pb.GetEventRequest(event_id=args.event_id), timeout=10
    )
    e = response.event
    if args.json:
        from google.protobuf.json_format import MessageToDict

        print(json.dumps(MessageToDict(e), indent=2))
        return OK
    status = pb.EventStatus.Name(e.status).removeprefix("EVENT_STATUS_")
    print(f"event {e.event_id}  type {e.event_type}  status {status}")
    print(f"expected {','.join(e.expected_sources)}  missing {','.join(e.missing_sources) or '-'}")
    print(f"first seen {_when(e.first_seen)}  deadline {_when(e.deadline)}")
    print()
    table(
        [("SOURCE", "ARRIVED", "PRODUCED", "PAYLOAD_HASH", "BYTES", "COUNT", "LATE")]
        + [
            (
                c.source,
                _when(c.arrived_at),
                _when(c.produced_at),
                c.payload_hash,
                c.payload_bytes,
                c.count,
                "yes" if c.late else "",
            )
            for c in e.copies
        ]
    )
    if e.latencies:
        print()
        table(
            [("PAIR", "LATENCY_MS")]
            + [(f"{p.source_a}->{p.source_b}", f"{p.latency_ms:.1f}") for p in e.latencies]
        )
    print()
    table(
        [("OUTCOME", "TIME", "SOURCES")]
        + [(_kind(o.kind), _when(o.time), ",".join(o.sources) or "-") for o in e.outcomes]
    )
    return OK


def _filter(args: argparse.Namespace) -> str:
    terms = []
    for key in ("kind", "source", "event_type", "since", "until", "event_id"):
        value = getattr(args, key, None)
        if value:
            terms.append(f"{key}={value}")
    if getattr(args, "filter", None):
        terms.append(args.filter)
    return " AND ".join(terms)


def cmd_outcomes_list(args: argparse.Namespace) -> int:
    stub = pb_grpc.QueryServiceStub(_channel(args))
    token = args.page_token or ""
    collected: list[pb.Outcome] = []
    while True:
        response = stub.ListOutcomes(
            pb.ListOutcomesRequest(
                page_size=min(1000, args.limit - len(collected)),
                page_token=token,
                filter=_filter(args),
            ),
            timeout=30,
        )
        collected.extend(response.outcomes)
        token = response.next_page_token
        if not token or len(collected) >= args.limit:
            break
    if args.json:
        print(
            json.dumps(
                {"outcomes": [_outcome_dict(o) for o in collected], "next_page_token": token},
                indent=2,
            )
        )
        return OK
    table(
        [("SEQ", "TIME", "OUTCOME", "EVENT_ID", "EVENT_TYPE", "SOURCES")]
        + [
            (
                o.sequence,
                _when(o.time),
                _kind(o.kind),
                o.event_id,
                o.event_type,
                ",".join(o.sources) or "-",
            )
            for o in collected
        ]
    )
    if token:
        print(f"(more: --page-token {token})")
    return OK


def _anomaly_dict(a: pb.Anomaly) -> dict[str, Any]:
    return {
        "id": a.id,
        "detector": a.detector,
        "minute": _when(a.minute),
        "score": round(a.score, 3),
        "severity": a.severity,
        "metrics": list(a.metrics),
        "explanation": a.explanation,
        "diagnosis": {
            "kind": a.diagnosis.kind,
            "target": a.diagnosis.target,
            "confidence": a.diagnosis.confidence,
            "onset": a.diagnosis.onset,
            "evidence": list(a.diagnosis.evidence),
        },
        "values": dict(a.values),
        "baselines": {
            m: {"mean": a.baseline_means[m], "spread": a.baseline_spreads[m]}
            for m in a.baseline_means
        },
    }


def cmd_anomalies_list(args: argparse.Namespace) -> int:
    terms = [
        f"{k}={getattr(args, k)}"
        for k in ("detector", "severity", "metric", "since", "until")
        if getattr(args, k)
    ]
    response = pb_grpc.QueryServiceStub(_channel(args)).ListAnomalies(
        pb.ListAnomaliesRequest(page_size=args.limit, filter=" AND ".join(terms)), timeout=10
    )
    if args.json:
        print(json.dumps([_anomaly_dict(a) for a in response.anomalies], indent=2))
        return OK
    table(
        [("ID", "MINUTE", "SEVERITY", "SCORE", "DIAGNOSIS", "CONFIDENCE", "METRICS")]
        + [
            (
                a.id,
                _when(a.minute)[:16],
                a.severity,
                f"{a.score:.1f}",
                _diagnosis(a.diagnosis),
                f"{a.diagnosis.confidence:.2f}",
                ",".join(a.metrics),
            )
            for a in response.anomalies
        ]
    )
    return OK


def _diagnosis(d: pb.Diagnosis) -> str:
    return f"{d.kind}({d.target})" if d.target else d.kind


def cmd_anomalies_get(args: argparse.Namespace) -> int:
    a = (
        pb_grpc.QueryServiceStub(_channel(args))
        .GetAnomaly(pb.GetAnomalyRequest(id=args.id), timeout=10)
        .anomaly
    )
    if args.json:
        print(json.dumps(_anomaly_dict(a), indent=2))
        return OK
    print(f"anomaly {a.id}  detector {a.detector}  minute {_when(a.minute)}")
    print(f"severity {a.severity}  score {a.score:.2f}")
    print(a.explanation)
    d = a.diagnosis
    print(f"diagnosis {_diagnosis(d)}  confidence {d.confidence:.2f}  onset {d.onset}")
    for line in d.evidence:
        print(f"  - {line}")
    print()
    table(
        [("METRIC", "VALUE", "BASELINE", "SPREAD", "RESPONSIBLE")]
        + [
            (
                m,
                f"{v:.4g}",
                f"{a.baseline_means[m]:.4g}" if m in a.baseline_means else "-",
                f"{a.baseline_spreads[m]:.3g}" if m in a.baseline_spreads else "-",
                "yes" if m in a.metrics else "",
            )
            for m, v in sorted(a.values.items())
        ]
    )
    return OK


def cmd_watch(args: argparse.Namespace) -> int:
    stub = pb_grpc.QueryServiceStub(_channel(args))
    shown = 0
    try:
        for response in stub.WatchOutcomes(pb.WatchOutcomesRequest(filter=_filter(args))):
            for o in response.outcomes:
                if args.json:
                    print(json.dumps(_outcome_dict(o)), flush=True)
                else:
                    print(
                        f"{_when(o.time)}  {_kind(o.kind):<12} {o.event_id}  {o.event_type}  "
                        f"{','.join(o.sources) or '-'}",
                        flush=True,
                    )
                shown += 1
                if args.count and shown >= args.count:
                    return OK
    except KeyboardInterrupt:
        return OK
    return OK


def _event_from_json(obj: Any) -> pb.Event:
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    unknown = set(obj) - {
        "event_id",
        "source",
        "event_type",
        "produced_at",
        "payload",
        "attributes",
    }
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}")
    payload = obj.get("payload", {})
    raw = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
    produced = obj.get("produced_at")
    if produced is None:
        when = datetime.now(UTC).timestamp()
    elif isinstance(produced, int | float):
        when = float(produced)
    elif isinstance(produced, str):
        when = datetime.fromisoformat(produced.replace("Z", "+00:00")).timestamp()
    else:
        raise ValueError("produced_at must be an ISO-8601 string or epoch seconds")
    attributes = obj.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise ValueError("attributes must be an object of strings")
    return pb.Event(
        event_id=str(obj.get("event_id", "")),
        source=str(obj.get("source", "")),
        event_type=str(obj.get("event_type", "")),
        produced_at=ts(when),
        payload=raw,
        attributes={str(k): str(v) for k, v in attributes.items()},
    )


def _lines(path: str) -> Iterator[tuple[int, str]]:
    handle = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    try:
        for number, line in enumerate(handle, 1):
            if line.strip():
                yield number, line
    finally:
        if handle is not sys.stdin:
            handle.close()


def cmd_ingest(args: argparse.Namespace) -> int:
    stub = pb_grpc.IngestServiceStub(_channel(args))
    accepted = 0
    problems: list[tuple[int, str]] = []
    batch: list[pb.Event] = []
    numbers: list[int] = []

    def send() -> None:
        nonlocal accepted
        if not batch:
            return
        try:
            response = stub.Publish(pb.PublishRequest(events=batch), timeout=60)
            accepted += response.accepted
            for r in response.rejections:
                problems.append((numbers[r.index], f"{r.field}: {r.reason}"))
        except grpc.RpcError as exc:
            if exc.code() not in (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.FAILED_PRECONDITION,
            ):
                raise
            for field, reason in _violations(exc):
                index = (
                    int(field.split("]")[0].split("[")[1]) if field.startswith("events[") else -1
                )
                line = numbers[index] if 0 <= index < len(numbers) else numbers[0]
                problems.append((line, f"{field.split('.', 1)[-1]}: {reason}"))
        batch.clear()
        numbers.clear()

    try:
        for number, line in _lines(args.file):
            try:
                batch.append(_event_from_json(orjson.loads(line)))
                numbers.append(number)
            except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
                problems.append((number, f"not a valid event: {exc}"))
            if len(batch) >= args.batch_size:
                send()
        send()
    except FileNotFoundError as exc:
        raise CliError(f"no such file: {exc.filename}") from None
    problems.sort()
    if args.json:
        print(
            json.dumps(
                {"accepted": accepted, "rejected": [{"line": n, "reason": r} for n, r in problems]},
                indent=2,
            )
        )
    else:
        for number, reason in problems:
            print(f"line {number}: {reason}", file=sys.stderr)
        print(f"accepted {accepted}, rejected {len(problems)}")
    return PROBLEM if problems else OK


def _violations(exc: grpc.RpcError) -> list[tuple[str, str]]:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    out: list[tuple[str, str]] = []
    if status is not None:
        for detail in status.details:
            request = error_details_pb2.BadRequest()
            if detail.Unpack(request):
                out.extend((v.field, v.description) for v in request.field_violations)
    return out or [("request", exc.details() or str(exc.code()))]


def cmd_jobs(args: argparse.Namespace) -> int:
    jobs = pb_grpc.QueryServiceStub(_channel(args)).ListJobs(pb.ListJobsRequest(), timeout=10).jobs
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
    stub = pb_grpc.ControlServiceStub(_channel(args))
    if args.action == "pause":
        source = stub.PauseSource(pb.PauseSourceRequest(source=args.source), timeout=10).source
    else:
        source = stub.ResumeSource(pb.ResumeSourceRequest(source=args.source), timeout=10).source
    print(f"{source.source}: {'paused' if source.paused else 'running'}")
    return OK


def cmd_metrics(args: argparse.Namespace) -> int:
    stub = pb_grpc.QueryServiceStub(_channel(args))
    minutes = list(stub.GetMetrics(pb.GetMetricsRequest(), timeout=10).minutes)[-args.minutes :]
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "minute": _when(m.minute),
                        **dict(m.features),
                        "missing_rate_by_source": dict(m.missing_rate_by_source),
                    }
                    for m in minutes
                ],
                indent=2,
            )
        )
        return OK
    if not minutes:
        print("no closed minute yet")
        return OK
    names = list(minutes[0].features)
    table(
        [("MINUTE", *names)]
        + [(_when(m.minute)[11:16], *(f"{m.features[n]:.4g}" for n in names)) for m in minutes]
    )
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

    sources = sub.add_parser("sources", help="pause or resume a source")
    sources.add_argument("action", choices=["pause", "resume"])
    sources.add_argument("source")
    sources.set_defaults(func=cmd_sources)

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
            if code_name in ("NOT_FOUND", "INVALID_ARGUMENT", "FAILED_PRECONDITION")
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
