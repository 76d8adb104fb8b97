"""Method handlers for heliosd's services: each parses its request itself (bytes that
are not a valid request get INVALID_ARGUMENT naming the expected message, not INTERNAL),
turns a service's RequestError into the status its code names, with
google.rpc.BadRequest field violations, and counts every refused request."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from google.protobuf import descriptor as _descriptor
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc.aio import AbortError
from grpc_status import rpc_status
from helios.daemon.errors import ErrorCode, RequestError
from helios.v1 import helios_pb2 as pb

Context = grpc.aio.ServicerContext[Any, Any]
_PB_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: code_pb2.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION: code_pb2.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND: code_pb2.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED: code_pb2.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE: code_pb2.UNAVAILABLE,
}
STATUS = {
    ErrorCode.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.BLAST_RADIUS: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
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
    service: _descriptor.ServiceDescriptor, servicer: object, errors: Counter[str]
) -> dict[str, Any]:
    """Method handlers that parse requests themselves, so that bytes which are not a
    valid request get INVALID_ARGUMENT naming the expected message (not INTERNAL), and
    that count every refused request by method and status code."""
    handlers: dict[str, Any] = {}
    for method in service.methods:
        request_cls = getattr(pb, method.input_type.name)
        response_cls = getattr(pb, method.output_type.name)
        impl = getattr(servicer, method.name)
        parse = _parser(request_cls)
        serialize = response_cls.SerializeToString
        streaming = method.server_streaming
        if getattr(servicer, "raw_requests", False) and method.client_streaming:
            handler, kind = impl, grpc.stream_stream_rpc_method_handler
        elif method.client_streaming and streaming:
            handler, kind = _stream_stream(impl, parse), grpc.stream_stream_rpc_method_handler
        elif streaming:
            handler, kind = _unary_stream(impl, parse), grpc.unary_stream_rpc_method_handler
        else:
            handler, kind = _unary_unary(impl, parse), grpc.unary_unary_rpc_method_handler
        handlers[method.name] = kind(
            _counted(handler, method.name, errors, streaming), response_serializer=serialize
        )
    return handlers


Parser = Callable[[bytes, Context], Awaitable[Any]]


def _counted(impl: Any, name: str, errors: Counter[str], streaming: bool) -> Any:
    def count(context: Context) -> None:
        code = context.code()
        errors[f"{name}:{code.name if isinstance(code, grpc.StatusCode) else code}"] += 1

    if streaming:

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            try:
                try:
                    async for response in impl(request, context):
                        yield response
                except RequestError as exc:
                    await refuse(context, exc)
            except AbortError:
                count(context)
                raise

        return stream

    async def unary(request: Any, context: Context) -> Any:
        try:
            try:
                return await impl(request, context)
            except RequestError as exc:
                await refuse(context, exc)
        except AbortError:
            count(context)
            raise

    return unary


def _parser(request_cls: Any) -> Parser:
    name = request_cls.DESCRIPTOR.full_name

    async def parse(raw: bytes, context: Context) -> Any:
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
