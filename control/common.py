"""What the daemon's servicers and the thin `helios` client share: timestamps, and the
client's table printing and errors. It imports only protobuf and grpc, so that the
client never loads the daemon (pydantic, numpy, the reconciler)."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from helios.v1 import helios_pb2 as pb

DEFAULT_ADDRESS = "127.0.0.1:50051"
OK, PROBLEM, USAGE, UNREACHABLE = 0, 1, 2, 3  # the client's exit codes


class CliError(Exception):
    def __init__(self, message: str, code: int = USAGE) -> None:
        super().__init__(message)
        self.code = code


def ts(seconds: float) -> Timestamp:
    whole = int(seconds // 1)
    return Timestamp(seconds=whole, nanos=int((seconds - whole) * 1e9))


def seconds(stamp: Timestamp) -> float:
    return stamp.seconds + stamp.nanos * 1e-9


def when(stamp: Any) -> str:
    """A Timestamp for people (UTC, milliseconds), or "-" when unset."""
    if not stamp.seconds and not stamp.nanos:
        return "-"
    return datetime.fromtimestamp(seconds(stamp), UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def table(rows: Sequence[Sequence[Any]], out: TextIO | None = None) -> None:
    """Print rows (the first is the header) as aligned columns."""
    out = out or sys.stdout
    text = [[str(c) for c in row] for row in rows]
    if not text:
        return
    widths = [max(len(r[i]) for r in text) for i in range(len(text[0]))]
    for row in text:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


class Credentials:
    """How the client proves who it is: an API key (sent as `authorization: Bearer`),
    and TLS (the CA that signed heliosd's certificate; a client certificate and key for
    mutual TLS). Set from the command line or HELIOS_API_KEY, HELIOS_TLS_CA,
    HELIOS_TLS_CERT, HELIOS_TLS_KEY."""

    api_key = ""
    tls_ca = ""
    tls_cert = ""
    tls_key = ""


class _KeyInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    def __init__(self, key: str) -> None:
        self.metadata = ("authorization", f"Bearer {key}")

    def _with_key(self, details: Any) -> Any:
        metadata = [*(details.metadata or ()), self.metadata]
        return _Details(details.method, details.timeout, metadata, details.credentials)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_key(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_key(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._with_key(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._with_key(details), requests)


class _Details(grpc.ClientCallDetails):
    def __init__(self, method: str, timeout: Any, metadata: Any, credentials: Any) -> None:
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials


def pem(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise CliError(f"cannot read the {what} {path}: {exc.strerror}") from None


def channel(address: str) -> grpc.Channel:
    """A channel to heliosd's gRPC address, with the client's credentials."""
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    c = Credentials
    if c.tls_ca or c.tls_cert:
        if bool(c.tls_cert) != bool(c.tls_key):
            raise CliError("--tls-cert and --tls-key go together")
        creds = grpc.ssl_channel_credentials(
            root_certificates=pem(c.tls_ca, "CA certificate") if c.tls_ca else None,
            private_key=pem(c.tls_key, "client key") if c.tls_key else None,
            certificate_chain=pem(c.tls_cert, "client certificate") if c.tls_cert else None,
        )
        base = grpc.secure_channel(address, creds, options=options)
    else:
        base = grpc.insecure_channel(address, options=options)
    if c.api_key:
        return grpc.intercept_channel(base, _KeyInterceptor(c.api_key))
    return base


def diagnosis_text(d: pb.Diagnosis) -> str:
    """`missing_events(aws)`, `... in tenant blue`, as the daemon writes a Diagnosis."""
    text = f"{d.kind}({d.target})" if d.target else d.kind
    return f"{text} in tenant {d.tenant}" if d.tenant else text


# helios.daemon.config's (the thin client does not load the daemon); a test keeps them equal.
TENANT_PATTERN = r"[a-z0-9][a-z0-9_.-]{0,63}"


def tenant_arg(value: str) -> str:
    """argparse type of a tenant's name: a bad one is bad usage (exit 2), not a call."""
    if value and not re.fullmatch(TENANT_PATTERN, value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a tenant: 1-64 of a-z, 0-9, -, _, . (a letter or digit first)"
        )
    return value
