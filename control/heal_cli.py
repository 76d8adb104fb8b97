"""`helios` commands of the decide-and-heal loop: actions, decisions, executions,
traces, automation mode, breakers and weights."""

from __future__ import annotations

import argparse
import json
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from helios.control.common import CliError, channel, diagnosis_text, table, tenant_arg, when
from helios.v1 import helios_pb2 as pb
from helios.v1 import helios_pb2_grpc as pb_grpc

# The criteria in matrix column order, as the API declares them.
CRITERIA = tuple(f.name for f in pb.Criteria.DESCRIPTOR.fields)


def _dump(message: Message | list[Message]) -> None:
    def one(m: Message) -> dict[str, Any]:
        return MessageToDict(m, preserving_proto_field_name=True)

    data = [one(m) for m in message] if isinstance(message, list) else one(message)
    print(json.dumps(data, indent=2))


def _query(args: argparse.Namespace) -> pb_grpc.QueryServiceStub:
    stub: pb_grpc.QueryServiceStub = pb_grpc.QueryServiceStub(channel(args.address))
    return stub


def _control(args: argparse.Namespace) -> pb_grpc.ControlServiceStub:
    stub: pb_grpc.ControlServiceStub = pb_grpc.ControlServiceStub(channel(args.address))
    return stub


def _criteria(c: pb.Criteria) -> tuple[str, str, str, str]:
    return (
        f"{c.mttr_seconds:.0f}s",
        f"{c.qos_impact:.3f}",
        f"{c.success_rate:.3f}",
        f"{c.cost:.2f}",
    )


def cmd_actions_list(args: argparse.Namespace) -> int:
    r = _query(args).ListActions(pb.ListActionsRequest(), timeout=10)
    if args.json:
        _dump(r)
        return 0
    weights = "  ".join(f"{k} {r.weights[k]:.3f}" for k in CRITERIA if k in r.weights)
    print(f"automation {r.automation_mode}  method {r.method}  weights ({r.weighting}): {weights}")
    print()
    table(
        [("ACTION", "MODE", "MTTR", "QOS", "SUCCESS", "COST", "RUNS", "COOLDOWN", "BLAST", "FIXES")]
        + [
            (
                a.name + ("" if a.enabled else " (disabled)"),
                a.mode,
                *_criteria(a.criteria),
                f"{a.successes}/{a.runs}",
                f"{a.cooldown_seconds:g}s",
                a.blast_radius,
                ",".join(a.issue_kinds),
            )
            for a in r.actions
        ]
    )
    print()
    table(
        [("SOURCE", "BREAKER", "SINCE", "FAILED", "VOLUME", "TRIPS", "REASON")]
        + [
            (
                b.source + (" (failed over)" if b.failed_over else ""),
                b.state + (" (by hand)" if b.forced else ""),
                when(b.since)[11:19] if b.HasField("since") else "-",
                f"{b.failure_ratio:.1%}",
                b.volume,
                b.trips,
                b.reason[:60],
            )
            for b in r.breakers
        ]
    )
    return 0


def _params(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--param wants KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def cmd_actions_trigger(args: argparse.Namespace) -> int:
    request = pb.TriggerActionRequest(
        action=args.action,
        target=args.target,
        params=_params(args.param),
        dry_run=args.dry_run,
        requested_by=args.by,
        force=args.force,
    )
    r = _control(args).TriggerAction(request, timeout=30)
    if args.json:
        _dump(r)
        return 0
    x = r.execution
    print(f"{r.decision.id} (trace {r.decision.trace_id}): {x.id} {x.status}: {x.plan}")
    return 0


def _decision_row(d: pb.Decision) -> tuple[Any, ...]:
    return (
        d.id,
        when(d.created_at)[:19],
        diagnosis_text(d.diagnosis),
        f"{d.chosen_action}({d.target})" if d.chosen_action else "-",
        d.mode,
        d.status,
        d.outcome or "-",
        f"{d.mttr_seconds:.1f}s" if d.outcome == "verified" else "-",
        d.reason[:50],
    )


def cmd_decisions_list(args: argparse.Namespace) -> int:
    pairs = (("status", args.status), ("action", args.action), ("tenant", args.tenant))
    terms = [f"{k}={v}" for k, v in pairs if v]
    r = _query(args).ListDecisions(
        pb.ListDecisionsRequest(page_size=args.limit, filter=" ".join(terms)), timeout=10
    )
    if args.json:
        _dump(list(r.decisions))
        return 0
    table(
        [("ID", "CREATED", "DIAGNOSIS", "CHOSEN", "MODE", "STATUS", "OUTCOME", "MTTR", "REASON")]
        + [_decision_row(d) for d in r.decisions]
    )
    return 0


def cmd_decisions_explain(args: argparse.Namespace) -> int:
    d = _query(args).GetDecision(pb.GetDecisionRequest(id=args.id), timeout=10).decision
    if args.json:
        _dump(d)
        return 0
    diag = d.diagnosis
    print(f"decision {d.id}  trace {d.trace_id}  at {when(d.created_at)}  by {d.decided_by}")
    if d.anomaly_id:
        print(f"anomaly {d.anomaly_id}")
    target = f"({diag.target})" if diag.target else ""
    onset = diag.onset or "-"
    print(f"diagnosis {diag.kind}{target}  confidence {diag.confidence:.2f}  onset {onset}")
    for line in diag.evidence:
        print(f"  - {line}")
    weights = "  ".join(f"{k} {d.weights[k]:.3f}" for k in CRITERIA if k in d.weights)
    print(f"\nranked with {d.method}, {d.weighting} weights: {weights}")
    print("criteria: MTTR, QoS impact and cost are costs (lower is better); success is a benefit\n")
    table(
        [("RANK", "ACTION", "TARGET", "MTTR", "QOS", "SUCCESS", "COST", "SCORE", "NOTE")]
        + [
            (
                a.rank or "-",
                a.action,
                a.target,
                *_criteria(a.criteria),
                f"{a.score:.4f}" if a.rank else "-",
                ("chosen" if a.rank == 1 else "")
                if a.eligible
                else f"not eligible: {a.reason}"[:70],
            )
            for a in d.alternatives
        ]
    )
    print(f"\n{d.status}: {d.reason or '-'}")
    if d.outcome:
        mttr = f"  MTTR {d.mttr_seconds:.1f} s" if d.outcome == "verified" else ""
        print(f"outcome {d.outcome}{mttr}")
    print("\ntrace:")
    for s in d.spans:
        print(f"  {when(s.at)[11:23]}  {s.stage:<12} {s.text}")
    return 0


def cmd_decisions_approve(args: argparse.Namespace) -> int:
    d = (
        _control(args)
        .ApproveDecision(pb.ApproveDecisionRequest(id=args.id, approved_by=args.by), timeout=30)
        .decision
    )
    if args.json:
        _dump(d)
        return 0
    print(f"{d.id}: {d.status}: {d.reason}")
    return 0 if d.status == "executed" else 1


def cmd_decisions_reject(args: argparse.Namespace) -> int:
    d = (
        _control(args)
        .RejectDecision(
            pb.RejectDecisionRequest(id=args.id, rejected_by=args.by, reason=args.reason),
            timeout=10,
        )
        .decision
    )
    if args.json:
        _dump(d)
        return 0
    print(f"{d.id}: {d.status}: {d.reason}")
    return 0


def cmd_executions_list(args: argparse.Namespace) -> int:
    terms = [f"{k}={v}" for k, v in (("status", args.status), ("action", args.action)) if v]
    r = _query(args).ListExecutions(
        pb.ListExecutionsRequest(page_size=args.limit, filter=" ".join(terms)), timeout=10
    )
    if args.json:
        _dump(list(r.executions))
        return 0
    table(
        [
            (
                "ID",
                "DECISION",
                "STARTED",
                "ACTION",
                "TARGET",
                "SIZE",
                "STATUS",
                "VERIFIED",
                "MTTR",
            )
        ]
        + [
            (
                x.id,
                x.decision_id,
                when(x.started_at)[:19],
                x.action + (" (dry run)" if x.dry_run else ""),
                x.target,
                x.size,
                x.status,
                x.verification,
                f"{x.mttr_seconds:.1f}s" if x.verification == "verified" else "-",
            )
            for x in r.executions
        ]
    )
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    r = _query(args).GetTrace(pb.GetTraceRequest(trace_id=args.trace_id), timeout=10)
    if args.json:
        _dump(r)
        return 0
    print(
        f"trace {r.trace_id}: {len(r.anomalies)} anomalies, {len(r.decisions)} decisions, "
        f"{len(r.executions)} executions"
    )
    for s in r.spans:
        print(f"  {when(s.at)}  {s.stage:<12} {s.text}")
    return 0


def cmd_automation(args: argparse.Namespace) -> int:
    r = _control(args).SetAutomationMode(
        pb.SetAutomationModeRequest(mode=args.mode, action=args.action), timeout=10
    )
    if args.json:
        _dump(r)
        return 0
    extra = ", ".join(f"{k}: {v}" for k, v in sorted(r.action_modes.items()))
    print(f"automation {r.automation_mode}" + (f" ({extra})" if extra else ""))
    return 0


def cmd_breaker(args: argparse.Namespace) -> int:
    b = (
        _control(args)
        .SetBreaker(
            pb.SetBreakerRequest(source=args.source, state=args.state, reason=args.reason),
            timeout=10,
        )
        .breaker
    )
    if args.json:
        _dump(b)
        return 0
    print(f"{b.source}: {b.state}{' (by hand)' if b.forced else ''}: {b.reason}")
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    weights: dict[str, float] = {}
    for pair in args.weights:
        key, sep, value = pair.partition("=")
        try:
            weights[key] = float(value)
        except ValueError:
            raise CliError(f"weights are CRITERION=NUMBER, got {pair!r}") from None
        if not sep:
            raise CliError(f"weights are CRITERION=NUMBER, got {pair!r}")
    r = _control(args).SetWeights(pb.SetWeightsRequest(weights=weights), timeout=10)
    if args.json:
        _dump(r)
        return 0
    print(f"{r.weighting} weights: " + "  ".join(f"{k} {r.weights[k]:.3f}" for k in CRITERIA))
    return 0


def register(sub: Any) -> None:
    actions = sub.add_parser("actions", help="recovery actions").add_subparsers(
        dest="actions_command", required=True
    )
    actions.add_parser(
        "list", help="the catalogue: estimates, policy, breakers and weights"
    ).set_defaults(func=cmd_actions_list)
    trigger = actions.add_parser("trigger", help="run (or --dry-run) an action now")
    trigger.add_argument("action")
    trigger.add_argument("target", help="a source, a pair a-b, or all")
    trigger.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    trigger.add_argument("--dry-run", action="store_true", help="plan and record only")
    trigger.add_argument(
        "--by", default="", help="a note of who asks (the audit trail records the key's identity)"
    )
    trigger.add_argument(
        "--force", action="store_true", help="run even in observe mode (admin; recorded)"
    )
    trigger.set_defaults(func=cmd_actions_trigger)

    decisions = sub.add_parser("decisions", help="what the loop decided, and why").add_subparsers(
        dest="decisions_command", required=True
    )
    dlist = decisions.add_parser("list", help="newest first")
    dlist.add_argument("--status", help="e.g. pending_approval or executed,not_executed")
    dlist.add_argument("--action")
    dlist.add_argument("--tenant", type=tenant_arg, help="decisions on its own objectives")
    dlist.add_argument("--limit", type=int, default=20)
    dlist.set_defaults(func=cmd_decisions_list)
    explain = decisions.add_parser(
        "explain", help="the ranking table, the policy's verdict, the trace"
    )
    explain.add_argument("id")
    explain.set_defaults(func=cmd_decisions_explain)
    approve = decisions.add_parser("approve", help="approve a pending decision: it executes")
    approve.add_argument("id")
    approve.add_argument("--by", default="")
    approve.set_defaults(func=cmd_decisions_approve)
    reject = decisions.add_parser("reject", help="reject a pending decision")
    reject.add_argument("id")
    reject.add_argument("--by", default="")
    reject.add_argument("--reason", default="")
    reject.set_defaults(func=cmd_decisions_reject)

    executions = sub.add_parser("executions", help="action runs").add_subparsers(
        dest="executions_command", required=True
    )
    xlist = executions.add_parser("list", help="newest first")
    xlist.add_argument("--status")
    xlist.add_argument("--action")
    xlist.add_argument("--limit", type=int, default=20)
    xlist.set_defaults(func=cmd_executions_list)

    trace = sub.add_parser(
        "trace", help="anomaly -> diagnosis -> decision -> execution -> verification"
    )
    trace.add_argument("trace_id")
    trace.set_defaults(func=cmd_trace)

    automation = sub.add_parser("automation", help="set the automation mode")
    automation.add_argument("mode", choices=["observe", "approve", "auto", "default"])
    automation.add_argument("--action", default="", help="only for this action")
    automation.set_defaults(func=lambda a: cmd_automation(_mode(a)))

    breaker = sub.add_parser("breaker", help="set a source's circuit breaker by hand")
    breaker.add_argument("source")
    breaker.add_argument("state", choices=["open", "closed", "auto"])
    breaker.add_argument("--reason", default="")
    breaker.set_defaults(func=cmd_breaker)

    weights = sub.add_parser("weights", help="set criteria weights (none: back to computed)")
    weights.add_argument("weights", nargs="*", metavar="CRITERION=WEIGHT")
    weights.set_defaults(func=cmd_weights)


def _mode(args: argparse.Namespace) -> argparse.Namespace:
    if args.mode == "default":
        if not args.action:
            raise CliError("`default` resets one action's mode: give --action")
        args.mode = ""
    return args
