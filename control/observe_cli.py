"""`helios log levels|set` (heliosd's log levels at run time), `helios slo` (error
budgets and burn rates) and `helios cost` (what reconciliation and recovery cost)."""

from __future__ import annotations

import argparse
from typing import Any

from helios.control.common import channel, table
from helios.v1 import helios_pb2 as pb
from helios.v1 import helios_pb2_grpc as pb_grpc


def cmd_log_levels(args: argparse.Namespace) -> int:
    stub = pb_grpc.QueryServiceStub(channel(args.address))
    r = stub.ListLogLevels(pb.ListLogLevelsRequest(), timeout=10)
    rows: list[tuple[str, ...]] = [("COMPONENT", "LEVEL")]
    rows += [(name, level) for name, level in sorted(r.levels.items())]
    table(rows)
    print(f"\nformat {r.format} (log.format)")
    return 0


def cmd_log_set(args: argparse.Namespace) -> int:
    stub = pb_grpc.ControlServiceStub(channel(args.address))
    r = stub.SetLogLevel(
        pb.SetLogLevelRequest(component=args.component, level=args.level), timeout=10
    )
    print(f"{args.component}: {r.previous} -> {r.levels.get(args.component, args.level.upper())}")
    return 0


def _pct(x: float) -> str:
    return f"{100 * x:.3f}%"


def cmd_slo(args: argparse.Namespace) -> int:
    stub = pb_grpc.QueryServiceStub(channel(args.address))
    r = stub.ListSlos(pb.ListSlosRequest(), timeout=10)
    rows: list[tuple[str, ...]] = [
        (
            "OBJECTIVE",
            "SCOPE",
            "TARGET",
            "PERIOD",
            "LAST 5M",
            "LAST 1H",
            "BUDGET LEFT",
            "BURN 1H",
            "FIRING",
        )
    ]
    for s in r.slos:
        rows.append(
            (
                s.objective,
                s.scope,
                _pct(s.target),
                _pct(s.ratio) if s.total else "-",
                _pct(s.recent["5m"]) if "5m" in s.recent else "-",
                _pct(s.recent["1h"]) if "1h" in s.recent else "-",
                f"{100 * s.budget_remaining:.1f}%",
                f"{s.burn['1h']:.1f}x" if "1h" in s.burn else "-",
                ",".join(s.firing) or "-",
            )
        )
    table(rows)
    if r.simulated_clock:
        print(f"\nwindows are in SIMULATED time ({r.clock_speed:g}x the wall clock)")
    return 1 if any(s.firing for s in r.slos) and args.check else 0


def cmd_cost(args: argparse.Namespace) -> int:
    stub = pb_grpc.QueryServiceStub(channel(args.address))
    r = stub.GetCost(pb.GetCostRequest(), timeout=10)
    rows: list[tuple[str, ...]] = [("KIND", "NAME", "UNITS", "REPLAYED", r.currency)]
    for x in r.lines:
        rows.append((x.kind, x.name, f"{x.units:,.0f}", f"{x.replayed:,.0f}", f"{x.money:,.4f}"))
    table(rows)
    print(f"\ntotal {r.total:,.4f} {r.currency} (sources + actions; routes re-cut the copies)")
    prices = ", ".join(f"{k}={v:g}" for k, v in sorted(r.prices.items()))
    print(f"prices: {prices} ([cost] in helios.toml)")
    return 0


def register(sub: Any) -> None:
    log = sub.add_parser("log", help="heliosd's log levels, per component, at run time")
    log_sub = log.add_subparsers(dest="sub", required=True)
    log_sub.add_parser("levels", help="each component's level and the format").set_defaults(
        func=cmd_log_levels
    )
    set_ = log_sub.add_parser("set", help="change one component's level now (operate)")
    set_.add_argument("component", help="root, heliosd, helios, helios.pipeline, ...")
    set_.add_argument("level", help="DEBUG, INFO, WARNING or ERROR")
    set_.set_defaults(func=cmd_log_set)
    slo = sub.add_parser("slo", help="SLOs: error budgets, recent ratios, burn-rate alerts")
    slo.add_argument("--check", action="store_true", help="exit 1 when a burn alert fires")
    slo.set_defaults(func=cmd_slo)
    sub.add_parser("cost", help="what reconciliation and recovery cost").set_defaults(func=cmd_cost)
