"""Errors a request can meet in the service layer, each naming the field at fault.

Front-ends translate them once: gRPC to a status with google.rpc.BadRequest field
violations, the console to a message for the operator."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID = "invalid"  # the request is malformed: gRPC INVALID_ARGUMENT
    NOT_FOUND = "not_found"  # an unknown id or name: NOT_FOUND
    PRECONDITION = "precondition"  # a wrong state for this request: FAILED_PRECONDITION
    BLAST_RADIUS = "blast_radius"  # over an action's cap: FAILED_PRECONDITION
    EXHAUSTED = "exhausted"  # no room now, retry later: RESOURCE_EXHAUSTED
    UNAVAILABLE = "unavailable"  # a store failed; nothing was acknowledged: UNAVAILABLE
    PERMISSION = "permission"  # the caller's role may not do this: PERMISSION_DENIED


class RequestError(Exception):
    """A request the daemon refuses; `field` names what was wrong, `violations` holds
    every problem when there are several (a batch of events)."""

    def __init__(
        self,
        field: str,
        message: str,
        code: ErrorCode | str = ErrorCode.INVALID,
        violations: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.field = field
        self.code = ErrorCode(code)
        self.violations = violations or [(field, message)]


class PlaintextRefused(OSError):
    """A non-loopback address without TLS and without security.allow_plaintext: heliosd
    refuses to start (exit 2)."""
