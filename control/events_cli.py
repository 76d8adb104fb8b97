"""`helios events`, `outcomes`, `watch` and `ingest`: the reconciliation side of the
thin client."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
import orjson
from helios.control.common import OK, PROBLEM, CliError, channel, table, ts
from helios.control.common import when as _when
from helios.v1 import helios_pb2 as pb
from helios.v1 import helios_pb2_grpc as pb_grpc


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


def cmd_event_get(args: argparse.Namespace) -> int:
    response = pb_grpc.QueryServiceStub(channel(args.address)).GetEvent(
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
    stub = pb_grpc.QueryServiceStub(channel(args.address))
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


def cmd_watch(args: argparse.Namespace) -> int:
    stub = pb_grpc.QueryServiceStub(channel(args.address))
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
    elif isinstance(produced, int | float) and not isinstance(produced, bool):
        when = float(produced)
        if not -62_135_596_800 <= when <= 253_402_300_799:
            raise ValueError("produced_at must be epoch seconds within years 1 to 9999")
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


def _lines(path: str) -> Iterator[tuple[int, bytes]]:
    """Non-empty lines as bytes: a line that is not UTF-8 is then one bad event (the JSON
    parser names it), not a traceback."""
    handle = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    try:
        for number, line in enumerate(handle, 1):
            if line.strip():
                yield number, line
    finally:
        if handle is not sys.stdin.buffer:
            handle.close()


def cmd_ingest(args: argparse.Namespace) -> int:
    stub = pb_grpc.IngestServiceStub(channel(args.address))
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
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror}") from None
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
