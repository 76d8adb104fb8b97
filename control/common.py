"""What the daemon's servicers and the thin `helios` client share: timestamps, and the
client's table printing and errors. It imports only protobuf and grpc, so that the
client never loads the daemon (pydantic, numpy, the reconciler)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

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


def channel(address: str) -> grpc.Channel:
    """A channel to heliosd's gRPC address."""
    return grpc.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    )
