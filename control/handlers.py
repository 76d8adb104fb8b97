"""Method handlers for heliosd's services: each checks who is calling and whether their
role may call it (UNAUTHENTICATED, PERMISSION_DENIED), parses its request itself (bytes
that are not a valid request get INVALID_ARGUMENT naming the expected message, not
INTERNAL), turns a service's RequestError into the status its code names, with
google.rpc.BadRequest field violations, turns anything unexpected into INTERNAL with an
id the log explains (never a Python message), and counts every refused request."""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from google.protobuf import descriptor as _descriptor
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc.aio import AbortError
from grpc_status import rpc_status
from helios.control.wire import Cap, check_caps
from helios.daemon.auditlog import AuditLog, from_peer
from helios.daemon.errors import ErrorCode, RequestError
from helios.daemon.identity import Guard, Identity, acting_as
from helios.daemon.telemetry import continued
from helios.daemon.tenants import TENANT_RPCS
from helios.v1 import helios_pb2 as pb

log = logging.getLogger("helios.grpc")
# The permission each RPC needs (helios.daemon.identity.PERMISSIONS). Deny by default: a
# method missing here is refused to everyone, and a test fails for it.
RPC_PERMISSIONS: dict[str, str] = {
    "IngestService/Publish": "ingest",
    "IngestService/PublishStream": "ingest",
    **{
        f"QueryService/{m}": "read"
        for m in (
            "GetEvent",
            "ListOutcomes",
            "GetStats",
            "GetMetrics",
            "WatchOutcomes",
            "ListAnomalies",
            "GetAnomaly",
            "ListJobs",
            "ListDecisions",
            "GetDecision",
            "ListExecutions",
            "GetTrace",
            "ListActions",
            "ListInputs",
            "ListDeadLetters",
            "ListLogLevels",
            "ListSlos",
            "GetCost",
        )
    },
    "QueryService/GetDeadLetter": "operate",  # its body carries business data
    **{
        f"ControlService/{m}": "operate"
        for m in (
            "PauseSource",
            "ResumeSource",
            "TriggerAction",
            "ApproveDecision",
            "RejectDecision",
            "SetAutomationMode",
            "SetBreaker",
            "SetWeights",
            "ReplayDeadLetters",
            "SetLogLevel",
        )
    },
    **{f"KeysService/{m}": "admin" for m in ("CreateKey", "ListKeys", "RevokeKey", "RotateKey")},
    "AuditService/ListAuditEvents": "admin",
}
Context = grpc.aio.ServicerContext[Any, Any]
_PB_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: code_pb2.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION: code_pb2.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND: code_pb2.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED: code_pb2.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE: code_pb2.UNAVAILABLE,
    grpc.StatusCode.PERMISSION_DENIED: code_pb2.PERMISSION_DENIED,
}
STATUS = {
    ErrorCode.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.BLAST_RADIUS: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.PERMISSION: grpc.StatusCode.PERMISSION_DENIED,
}


async def bad_request(
    context: Context,
    violations: list[tuple[str, str]],
    code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT,
) -> NoReturn:
    """Abort with google.rpc.BadRequest field violations in the status details."""
    detail = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
            for f, d in violations
        ]
    )
    message = "; ".join(f"{f}: {d}" for f, d in violations[:5])
    if len(violations) > 5:
        message += f"; and {len(violations) - 5} more"
    status = status_pb2.Status(code=_PB_CODES[code], message=message)
    status.details.add().Pack(detail)
    abort_with_status: Any = getattr(context, "abort_with_status")  # noqa: B009 - not in stubs
    await abort_with_status(rpc_status.to_status(status))
    raise AssertionError("unreachable")  # abort_with_status raises


async def refuse(context: Context, exc: RequestError) -> NoReturn:
    """A service's RequestError as the gRPC status its code names."""
    if exc.code is ErrorCode.EXHAUSTED:  # backpressure: a plain message, retry later
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
    await bad_request(context, exc.violations, STATUS[exc.code])


def handlers(
    service: _descriptor.ServiceDescriptor,
    servicer: object,
    errors: Counter[str],
    guard: Guard,
    auditlog: AuditLog | None = None,
    caps: dict[str, tuple[Cap, ...]] | None = None,
) -> dict[str, Any]:
    """Method handlers that parse requests themselves, so that bytes which are not a
    valid request get INVALID_ARGUMENT naming the expected message (not INTERNAL), and
    that count every refused request by method and status code. `caps` limits a request
    message's repeated fields, checked on its bytes before it is parsed."""
    handlers: dict[str, Any] = {}
    for method in service.methods:
        request_cls = getattr(pb, method.input_type.name)
        response_cls = getattr(pb, method.output_type.name)
        impl = getattr(servicer, method.name)
        parse = _parser(request_cls, (caps or {}).get(method.input_type.name, ()))
        serialize = _serializer(response_cls)
        streaming = method.server_streaming
        if getattr(servicer, "raw_requests", False) and method.client_streaming:
            handler, kind = impl, grpc.stream_stream_rpc_method_handler
        elif method.client_streaming and streaming:
            handler, kind = _stream_stream(impl, parse), grpc.stream_stream_rpc_method_handler
        elif streaming:
            handler, kind = _unary_stream(impl, parse), grpc.unary_stream_rpc_method_handler
        else:
            handler, kind = _unary_unary(impl, parse), grpc.unary_unary_rpc_method_handler
        permission = RPC_PERMISSIONS.get(f"{service.name}/{method.name}", "")
        check = _checker(guard, f"{service.name}/{method.name}", permission, auditlog)
        handlers[method.name] = kind(
            _counted(handler, method.name, errors, streaming, check),
            response_serializer=serialize,
        )
    return handlers


Parser = Callable[[bytes, Context], Awaitable[Any]]


def _serializer(response_cls: Any) -> Callable[[Any], bytes]:
    """A response, or bytes a servicer encoded already (shared by many streams)."""
    to_bytes = response_cls.SerializeToString

    def serialize(response: Any) -> bytes:
        return response if type(response) is bytes else to_bytes(response)

    return serialize


Checker = Callable[[Context], Awaitable[Identity]]


def _checker(guard: Guard, rpc: str, permission: str, auditlog: AuditLog | None) -> Checker:
    # Refused control and key calls go to the audit log too (reads are only counted).
    audited = auditlog is not None and permission in ("operate", "admin")

    async def check(context: Context) -> Identity:
        api_key = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                scheme, _, token = value.partition(" ")
                api_key = token if scheme.lower() == "bearer" else value
            elif key == "x-api-key" and isinstance(value, str):
                api_key = value
        cn = None
        auth_context = context.auth_context()
        names = list(auth_context.get("x509_common_name") or ()) if auth_context else []
        if names:
            cn = names[0].decode(errors="replace")
        found = guard.identify(api_key, cn)
        if isinstance(found, str):
            log.warning("%s refused (UNAUTHENTICATED) to %s: %s", rpc, context.peer(), found)
            if audited and auditlog is not None:
                with from_peer(context.peer()):
                    auditlog.record("denied", rpc, f"refused: {found}", who="(unauthenticated)")
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, found)
        assert isinstance(found, Identity)
        if not permission or not found.may(permission):
            need = permission or "a permission no role has (the method is not mapped)"
            log.warning("%s refused (PERMISSION_DENIED) to %s (%s)", rpc, found.name, found.role)
            if audited and auditlog is not None:
                with acting_as(found), from_peer(context.peer()):
                    auditlog.record("denied", rpc, f"refused: needs {need}")
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{rpc} needs {need}; {found.name} has role {found.role} "
                f"({', '.join(sorted(found.permissions)) or 'no permissions'})",
            )
        if found.tenant and rpc not in TENANT_RPCS:
            log.warning(
                "%s refused (PERMISSION_DENIED) to %s of tenant %s", rpc, found.name, found.tenant
            )
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{rpc} shows or changes the whole deployment; {found.name} is scoped to tenant "
                f"{found.tenant!r} (it may publish and read that tenant's events)",
            )
        wait = guard.limits.take(found, "requests")
        if wait is not None:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{found.name} is over its requests per second (security.rate_limits): "
                f"retry in {wait:.2f} s",
                trailing_metadata=(("retry-after", f"{max(1, round(wait))}"),),
            )
        return found

    return check


async def _internal(context: Context, name: str, exc: BaseException) -> NoReturn:
    """Anything unexpected: INTERNAL with an id the log explains; no Python text out."""
    incident = secrets.token_hex(4)
    log.error("%s failed (incident %s)", name, incident, exc_info=exc)
    await context.abort(
        grpc.StatusCode.INTERNAL,
        f"internal error {incident}: heliosd's log explains it (search for the id)",
    )
    raise AssertionError("unreachable")


def _counted(impl: Any, name: str, errors: Counter[str], streaming: bool, check: Checker) -> Any:
    def count(context: Context) -> None:
        code = context.code()
        errors[f"{name}:{code.name if isinstance(code, grpc.StatusCode) else code}"] += 1

    if streaming:

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            try:
                identity = await check(context)
                with (
                    acting_as(identity),
                    from_peer(context.peer()),
                    continued(context.invocation_metadata() or ()),
                ):
                    try:
                        async for response in impl(request, context):
                            yield response
                    except RequestError as exc:
                        await refuse(context, exc)
                    except (AbortError, GeneratorExit):
                        raise
                    except Exception as exc:
                        await _internal(context, name, exc)
            except AbortError:
                count(context)
                raise

        return stream

    async def unary(request: Any, context: Context) -> Any:
        try:
            identity = await check(context)
            with (
                acting_as(identity),
                from_peer(context.peer()),
                continued(context.invocation_metadata() or ()),
            ):
                try:
                    return await impl(request, context)
                except RequestError as exc:
                    await refuse(context, exc)
                except AbortError:
                    raise
                except Exception as exc:
                    await _internal(context, name, exc)
        except AbortError:
            count(context)
            raise

    return unary


def _parser(request_cls: Any, caps: tuple[Cap, ...] = ()) -> Parser:
    name = request_cls.DESCRIPTOR.full_name

    async def parse(raw: bytes, context: Context) -> Any:
        if caps:
            check_caps(raw, caps)  # a RequestError, refused by _counted like the service's
        try:
            return request_cls.FromString(raw)
        except DecodeError as exc:  # counted by _counted, like every abort
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"request is not a valid {name}: {exc}"
            )

    return parse


def _unary_unary(impl: Any, parse: Parser) -> Any:
    async def handler(raw: bytes, context: Context) -> Any:
        return await impl(await parse(raw, context), context)

    return handler


def _unary_stream(impl: Any, parse: Parser) -> Any:
    async def handler(raw: bytes, context: Context) -> AsyncIterator[Any]:
        async for response in impl(await parse(raw, context), context):
            yield response

    return handler


def _stream_stream(impl: Any, parse: Parser) -> Any:
    async def handler(raw_requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[Any]:
        async def requests() -> AsyncIterator[Any]:
            async for raw in raw_requests:
                yield await parse(raw, context)

        async for response in impl(requests(), context):
            yield response

    return handler
