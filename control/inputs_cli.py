"""`helios sources list` (every input: kind, bound source, rate, last delivery, errors by
reason, verification, breaker) and `helios dlq list|show|replay` (refused deliveries)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from helios.control.common import CliError, channel, table, when
from helios.v1 import helios_pb2 as pb
from helios.v1 import helios_pb2_grpc as pb_grpc


def _query(args: argparse.Namespace) -> pb_grpc.QueryServiceStub:
    stub: pb_grpc.QueryServiceStub = pb_grpc.QueryServiceStub(channel(args.address))
    return stub


def _errors(errors: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(errors.items(), key=lambda kv: -kv[1])) or "-"


def cmd_list(args: argparse.Namespace) -> int:
    r = _query(args).ListInputs(pb.ListInputsRequest(), timeout=10)
    rows: list[tuple[str, ...]] = [
        (
            "INPUT",
            "KIND",
            "SOURCES",
            "PATH",
            "VERIFY",
            "RATE/S",
            "DELIVERIES",
            "LAST",
            "BREAKER",
            "ERRORS",
        )
    ]
    for i in r.inputs:
        breakers = ",".join(sorted(set(i.breakers.values()))) or "-"
        paused = f" paused:{','.join(i.paused)}" if i.paused else ""
        rows.append(
            (
                i.name,
                i.kind,
                ",".join(i.sources) + paused,
                i.path or "-",
                i.verify or "-",
                f"{i.rate_per_second:.1f}",
                str(i.deliveries),
                when(i.last_delivery)[11:19] if i.HasField("last_delivery") else "never",
                breakers,
                _errors(i.errors),
            )
        )
    table(rows)
    if r.unrouted_errors:
        print(f"\nrefused on paths no input serves: {_errors(r.unrouted_errors)}")
    for i in r.inputs:
        if i.details and args.verbose:
            print(f"\n{i.name}: " + "  ".join(f"{k}={v}" for k, v in sorted(i.details.items())))
    return 0


def cmd_dlq_list(args: argparse.Namespace) -> int:
    r = _query(args).ListDeadLetters(
        pb.ListDeadLettersRequest(input=args.input, reason=args.reason, limit=args.limit),
        timeout=10,
    )
    rows: list[tuple[str, ...]] = [("ID", "AT", "INPUT", "STATUS", "REASON", "BYTES", "DETAIL")]
    for d in r.dead_letters:
        rows.append(
            (
                str(d.id),
                when(d.at)[:19],
                d.input or "-",
                str(d.status or "-"),
                d.reason,
                str(d.body_bytes),
                d.detail[:70],
            )
        )
    table(rows)
    print(f"\n{r.total} kept" + (f", {r.dropped} pushed out by the bounds" if r.dropped else ""))
    return 0


def cmd_dlq_show(args: argparse.Namespace) -> int:
    d = _query(args).GetDeadLetter(pb.GetDeadLetterRequest(id=args.id), timeout=10).dead_letter
    print(f"dead letter {d.id}  {when(d.at)[:23]}  input {d.input or '-'}")
    print(f"refused {d.status} {d.reason}: {d.detail}")
    print(f"{d.method} {d.path}{'?' + d.query if d.query else ''}  verified: {d.verified}")
    for name, value in sorted(d.headers.items()):
        print(f"  {name}: {value}")
    if d.replays:
        print("replays: " + "; ".join(d.replays))
    print()
    if args.raw:
        sys.stdout.buffer.write(d.body)
    else:
        print(d.body.decode("utf-8", "replace")[:20_000])
    return 0


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    stub = pb_grpc.ControlServiceStub(channel(args.address))
    try:
        ids = [int(x) for x in args.ids]
    except ValueError:
        raise CliError("dead letter ids are numbers (helios dlq list)") from None
    r = stub.ReplayDeadLetters(pb.ReplayDeadLettersRequest(ids=ids), timeout=60)
    failed = 0
    for x in r.results:
        if x.accepted:
            print(f"{x.id}: accepted, {x.copies} copies")
        else:
            failed += 1
            print(f"{x.id}: refused again: {x.status} {x.error}: {x.detail}")
    return 1 if failed else 0


def register(sub: Any, sources: Any) -> None:
    """`sources list` joins the existing `helios sources` parser; `dlq` is new."""
    sources.add_argument("--verbose", "-v", action="store_true", help="list: plugin details")
    dlq = sub.add_parser("dlq", help="refused webhook deliveries (dead letters)")
    dlq_sub = dlq.add_subparsers(dest="sub", required=True)
    listing = dlq_sub.add_parser("list", help="newest first, without bodies")
    listing.add_argument("--input", default="")
    listing.add_argument("--reason", default="")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(func=cmd_dlq_list)
    show = dlq_sub.add_parser("show", help="one dead letter with headers and body (operate)")
    show.add_argument("id", type=int)
    show.add_argument("--raw", action="store_true", help="the body's bytes as they came")
    show.set_defaults(func=cmd_dlq_show)
    replay = dlq_sub.add_parser("replay", help="send dead letters through their input again")
    replay.add_argument("ids", nargs="+")
    replay.set_defaults(func=cmd_dlq_replay)
