"""The gRPC server's trust parts: TLS credentials re-read when their files change, the
refusal of plaintext on a non-loopback address, and the KeysService (API keys)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from pathlib import Path
from typing import Any

import grpc
from helios.control.common import ts
from helios.control.handlers import Context
from helios.daemon.config import SecurityConfig
from helios.daemon.errors import RequestError
from helios.daemon.identity import ApiKey
from helios.daemon.services import Services
from helios.v1 import helios_pb2 as pb

log = logging.getLogger("helios.grpc")


def _key_pb(key: ApiKey) -> pb.ApiKey:
    out = pb.ApiKey(
        id=key.id,
        name=key.name,
        role=key.role,
        created=ts(key.created),
        state=key.state(time.time()),
        rotated_to=key.rotated_to,
    )
    if key.expires is not None:
        out.expires.CopyFrom(ts(key.expires))
    if key.revoked is not None:
        out.revoked.CopyFrom(ts(key.revoked))
    return out


def _expiry(value: float, field: str) -> float | None:
    if not math.isfinite(value) or value < 0:
        raise RequestError(field, f"{field} must be a finite number >= 0, got {value}")
    return value or None


class KeysServicer:
    """API keys: admin only (handlers.RPC_PERMISSIONS). Key-file I/O runs in a thread."""

    def __init__(self, services: Services) -> None:
        self.keys = services.guard.keys
        self.guard = services.guard

    def _audit(self, what: str, context: Context) -> None:
        log.info("%s by %s from %s", what, self.guard.claimed("", context.peer()), context.peer())

    async def CreateKey(
        self, request: pb.CreateKeyRequest, context: Context
    ) -> pb.CreateKeyResponse:
        expires = _expiry(request.expires_in_seconds, "expires_in_seconds")
        key, secret = await asyncio.to_thread(self.keys.create, request.name, request.role, expires)
        self._audit(f"API key {key.id} ({key.name}, {key.role}) created", context)
        return pb.CreateKeyResponse(key=_key_pb(key), secret=secret)

    async def ListKeys(self, request: pb.ListKeysRequest, context: Context) -> pb.ListKeysResponse:
        keys = await asyncio.to_thread(self.keys.list)
        return pb.ListKeysResponse(keys=[_key_pb(k) for k in keys])

    async def RevokeKey(
        self, request: pb.RevokeKeyRequest, context: Context
    ) -> pb.RevokeKeyResponse:
        key = await asyncio.to_thread(self.keys.revoke, request.id)
        self._audit(f"API key {key.id} ({key.name}) revoked", context)
        return pb.RevokeKeyResponse(key=_key_pb(key))

    async def RotateKey(
        self, request: pb.RotateKeyRequest, context: Context
    ) -> pb.RotateKeyResponse:
        grace = _expiry(request.grace_seconds, "grace_seconds") or 0.0
        key, secret = await asyncio.to_thread(self.keys.rotate, request.id, grace)
        self._audit(f"API key {request.id} rotated to {key.id} ({grace:g} s grace)", context)
        return pb.RotateKeyResponse(key=_key_pb(key), secret=secret)


class PlaintextRefused(OSError):
    """A non-loopback address without TLS and without security.allow_plaintext."""


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise OSError(f"cannot read {path}: {exc.strerror}") from None


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
