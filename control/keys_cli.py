"""`helios keys` (API keys) and `helios audit` (the audit log) through a running heliosd,
both admin. The first admin key comes from `heliosd keys create` on the host
(docs/security.md)."""

from __future__ import annotations

import argparse
import math
from typing import Any

from helios.control.common import CliError, channel, table, tenant_arg, when
from helios.v1 import helios_pb2 as pb
from helios.v1 import helios_pb2_grpc as pb_grpc


def _stub(args: argparse.Namespace) -> pb_grpc.KeysServiceStub:
    stub: pb_grpc.KeysServiceStub = pb_grpc.KeysServiceStub(channel(args.address))
    return stub


def _row(k: pb.ApiKey) -> tuple[str, ...]:
    expires = when(k.expires)[:19] if k.HasField("expires") else "never"
    created = when(k.created)[:19]
    return (k.id, k.name, k.role, k.tenant or "-", k.state, created, expires, k.rotated_to or "-")


def _days(value: float | None, flag: str) -> float:
    if value is None:
        return 0.0
    if not math.isfinite(value) or value <= 0:
        raise CliError(f"{flag} must be a number > 0")
    return value * 86400


def cmd_create(args: argparse.Namespace) -> int:
    request = pb.CreateKeyRequest(
        name=args.name,
        role=args.role,
        expires_in_seconds=_days(args.expires_days, "--expires-days"),
        tenant=args.tenant,
    )
    r = _stub(args).CreateKey(request, timeout=10)
    scope = f", tenant {r.key.tenant}" if r.key.tenant else ""
    print(
        f"created API key {r.key.id} for {r.key.name} (role {r.key.role}{scope}); "
        "its secret, shown once:"
    )
    print(r.secret)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    r = _stub(args).ListKeys(pb.ListKeysRequest(), timeout=10)
    table(
        [("ID", "NAME", "ROLE", "TENANT", "STATE", "CREATED", "EXPIRES", "ROTATED TO")]
        + [_row(k) for k in r.keys]
    )
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    r = _stub(args).RevokeKey(pb.RevokeKeyRequest(id=args.id), timeout=10)
    print(f"revoked API key {r.key.id} ({r.key.name})")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    grace = args.grace_seconds
    if not math.isfinite(grace) or grace < 0:
        raise CliError("--grace-seconds must be a number >= 0")
    r = _stub(args).RotateKey(pb.RotateKeyRequest(id=args.id, grace_seconds=grace), timeout=10)
    print(f"API key {args.id} rotated to {r.key.id}; the new secret, shown once:")
    print(r.secret)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    stub = pb_grpc.AuditServiceStub(channel(args.address))
    r = stub.ListAuditEvents(
        pb.ListAuditEventsRequest(page_size=args.limit, who=args.who, action=args.action),
        timeout=10,
    )
    table(
        [("TIME", "WHO", "VIA", "PEER", "ACTION", "TARGET", "RESULT")]
        + [
            (when(e.time)[:19], e.who, e.via, e.peer, e.action, e.target, e.result)
            for e in r.events
        ]
    )
    return 0


def register(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the audit log, newest first (admin)")
    audit.add_argument("--limit", type=int, default=50)
    audit.add_argument("--who", default="", help="only this identity")
    audit.add_argument("--action", default="", help="only actions starting with this")
    audit.set_defaults(func=cmd_audit)
    keys = sub.add_parser("keys", help="API keys (admin)").add_subparsers(dest="sub", required=True)
    create = keys.add_parser("create", help="create a key; its secret is printed once")
    create.add_argument("--name", required=True, help="who holds it (the audit trail's name)")
    create.add_argument("--role", required=True, help="viewer, ingester, operator, admin, ...")
    create.add_argument("--expires-days", type=float, help="default: never")
    create.add_argument(
        "--tenant",
        default="",
        type=tenant_arg,
        help="scope it to one tenant's events (default: deployment-wide)",
    )
    create.set_defaults(func=cmd_create)
    keys.add_parser("list", help="every key, without secrets").set_defaults(func=cmd_list)
    revoke = keys.add_parser("revoke", help="stop a key now")
    revoke.add_argument("id")
    revoke.set_defaults(func=cmd_revoke)
    rotate = keys.add_parser("rotate", help="a new secret for the same name and role")
    rotate.add_argument("id")
    rotate.add_argument(
        "--grace-seconds", type=float, default=0.0, help="the old secret works this long"
    )
    rotate.set_defaults(func=cmd_rotate)
