"""The gRPC server's trust parts: TLS credentials re-read when their files change, the
refusal of plaintext on a non-loopback address, and the KeysService (API keys)."""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path
from typing import Any

import grpc
from helios.control.convert import audit_event_pb, key_pb
from helios.control.handlers import Context
from helios.daemon.config import SecurityConfig, is_loopback
from helios.daemon.errors import PlaintextRefused as PlaintextRefused
from helios.daemon.errors import RequestError
from helios.daemon.services import Services
from helios.v1 import helios_pb2 as pb

log = logging.getLogger("helios.grpc")


def _expiry(value: float, field: str) -> float | None:
    if not math.isfinite(value) or value < 0:
        raise RequestError(field, f"{field} must be a finite number >= 0, got {value}")
    return value or None


class KeysServicer:
    """API keys: admin only (handlers.RPC_PERMISSIONS). Key-file I/O runs in a thread."""

    def __init__(self, services: Services) -> None:
        self.keys = services.guard.keys
        self.guard = services.guard
        self.auditlog = services.auditlog

    def _audit(self, action: str, target: str, detail: str, context: Context) -> None:
        self.auditlog.record(action, target, "ok", detail)
        who = self.guard.claimed("", context.peer())
        log.info("%s %s (%s) by %s from %s", action, target, detail, who, context.peer())

    async def CreateKey(
        self, request: pb.CreateKeyRequest, context: Context
    ) -> pb.CreateKeyResponse:
        expires = _expiry(request.expires_in_seconds, "expires_in_seconds")
        key, secret = await asyncio.to_thread(
            self.keys.create, request.name, request.role, expires, request.tenant
        )
        scope = f", tenant {key.tenant}" if key.tenant else ""
        self._audit("key.create", key.id, f"{key.name}, role {key.role}{scope}", context)
        return pb.CreateKeyResponse(key=key_pb(key), secret=secret)

    async def ListKeys(self, request: pb.ListKeysRequest, context: Context) -> pb.ListKeysResponse:
        keys = await asyncio.to_thread(self.keys.list)
        return pb.ListKeysResponse(keys=[key_pb(k) for k in keys])

    async def RevokeKey(
        self, request: pb.RevokeKeyRequest, context: Context
    ) -> pb.RevokeKeyResponse:
        key = await asyncio.to_thread(self.keys.revoke, request.id)
        self._audit("key.revoke", key.id, key.name, context)
        return pb.RevokeKeyResponse(key=key_pb(key))

    async def RotateKey(
        self, request: pb.RotateKeyRequest, context: Context
    ) -> pb.RotateKeyResponse:
        grace = _expiry(request.grace_seconds, "grace_seconds") or 0.0
        key, secret = await asyncio.to_thread(self.keys.rotate, request.id, grace)
        self._audit("key.rotate", request.id, f"to {key.id}, {grace:g} s grace", context)
        return pb.RotateKeyResponse(key=key_pb(key), secret=secret)


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise OSError(f"cannot read {path}: {exc.strerror}") from None


def listen(server: grpc.aio.Server, address: str, security: SecurityConfig) -> int:
    """Bind the gRPC server: TLS when configured; plaintext on loopback, or elsewhere
    only with security.allow_plaintext. Returns the port; OSError when it is taken."""
    try:
        if security.tls_cert:
            return server.add_secure_port(address, tls_credentials(security))
        if not is_loopback(address):
            if not security.allow_plaintext:
                raise PlaintextRefused(
                    f"refusing to serve gRPC in plaintext on {address}: anyone on the "
                    "network could read and forge its traffic and credentials. Set "
                    "security.tls_cert and tls_key, bind to 127.0.0.1, or set "
                    "security.allow_plaintext = true (behind a TLS proxy) "
                    "(docs/security.md)"
                )
            log.warning("gRPC on %s is PLAINTEXT (security.allow_plaintext)", address)
        return server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc's way of saying the address is taken or invalid
        raise OSError(f"cannot listen for gRPC on {address} (daemon.grpc_address): {exc}") from None


def tls_credentials(security: SecurityConfig) -> grpc.ServerCredentials:
    """Server TLS from PEM files, re-read when one changes (checked at each new
    connection): a renewed certificate needs no restart. With tls_client_ca every client
    must present a certificate that CA signed (mutual TLS)."""
    files = [security.tls_cert, security.tls_key, security.tls_client_ca]

    def stamp() -> tuple[float, ...]:
        return tuple(Path(f).stat().st_mtime if f else 0.0 for f in files)

    def load() -> Any:
        ca = _read(security.tls_client_ca) if security.tls_client_ca else None
        pair = (_read(security.tls_key), _read(security.tls_cert))
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=ca)

    seen = {"stamp": stamp()}

    def fetch() -> Any:
        try:
            now = stamp()
            if now == seen["stamp"]:
                return None
            seen["stamp"] = now
            config = load()
        except OSError as exc:
            log.error("TLS files changed but cannot be read (%s): keeping the old ones", exc)
            return None
        log.info("TLS certificate re-read from %s", security.tls_cert)
        return config

    return grpc.dynamic_ssl_server_credentials(
        load(), fetch, require_client_authentication=bool(security.tls_client_ca)
    )


class AuditServicer:
    """The audit log (admin)."""

    def __init__(self, services: Services) -> None:
        self.auditlog = services.auditlog

    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: Context
    ) -> pb.ListAuditEventsResponse:
        size = request.page_size or 100
        if not 0 < size <= 10_000:
            raise RequestError("page_size", f"page_size must be 1 to 10000, got {size}")
        events = self.auditlog.query(size, request.who, request.action)
        return pb.ListAuditEventsResponse(events=[audit_event_pb(e) for e in events])
