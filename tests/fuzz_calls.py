"""Fuzzing every RPC of a running heliosd: random bytes and random well-formed requests
(every field of the request message, with extreme values: huge and negative numbers,
inf and nan, odd Unicode, long strings), with no credentials, garbage ones, or a real
key of any role. Shared by tests/test_fuzz.py (a bounded run) and benchmarks/fuzz.py
(60 s)."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor as _d
from helios.v1 import helios_pb2 as pb
from hypothesis import strategies as st

METHODS = [
    (service, method)
    for service in pb.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]
BAD = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
FD = _d.FieldDescriptor
TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "aws", "all", "x; id > /tmp/p; echo", "$(id)", "../../etc/passwd"]),
    st.text(min_size=600, max_size=2000),
)
SCALARS: dict[int, Any] = {
    FD.TYPE_STRING: TEXT,
    FD.TYPE_BYTES: st.one_of(st.binary(max_size=200), st.just(b"[" * 400 + b"]" * 400)),
    FD.TYPE_BOOL: st.booleans(),
    FD.TYPE_DOUBLE: st.floats(allow_nan=True, allow_infinity=True),
    FD.TYPE_FLOAT: st.floats(allow_nan=True, allow_infinity=True, width=32),
    FD.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    FD.TYPE_INT64: st.integers(-(2**63), 2**63 - 1),
    FD.TYPE_UINT32: st.integers(0, 2**32 - 1),
    FD.TYPE_UINT64: st.integers(0, 2**64 - 1),
    FD.TYPE_ENUM: st.integers(-5, 20),
}


@st.composite
def message(draw: Any, descriptor: Any, depth: int = 0) -> Any:
    cls = getattr(pb, descriptor.name, None)
    if cls is None:  # google.protobuf.Timestamp and the like
        from google.protobuf import symbol_database

        cls = symbol_database.Default().GetSymbol(descriptor.full_name)
    out = cls()
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        repeated = field.is_repeated
        if field.type == FD.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                key = field.message_type.fields_by_name["key"]
                value = field.message_type.fields_by_name["value"]
                if value.type == FD.TYPE_MESSAGE:
                    continue
                entries = draw(st.dictionaries(SCALARS[key.type], SCALARS[value.type], max_size=4))
                getattr(out, field.name).update(entries)
                continue
            if depth >= 2:
                continue
            count = draw(st.integers(0, 3)) if repeated else 1
            for _ in range(count):
                sub = draw(message(field.message_type, depth + 1))
                if repeated:
                    getattr(out, field.name).append(sub)
                else:
                    getattr(out, field.name).CopyFrom(sub)
            continue
        strategy = SCALARS.get(field.type)
        if strategy is None:
            continue
        if repeated:
            getattr(out, field.name).extend(draw(st.lists(strategy, max_size=4)))
        else:
            setattr(out, field.name, draw(strategy))
    assert out.DESCRIPTOR.full_name == descriptor.full_name
    return out


@st.composite
def call(draw: Any, keys: list[str]) -> tuple[Any, Any, bytes, list[tuple[str, str]]]:
    service, method = draw(st.sampled_from(METHODS))
    if draw(st.integers(0, 4)) == 0:
        body = draw(st.binary(max_size=300))
    else:
        body = draw(message(method.input_type)).SerializeToString()
    auth = draw(
        st.one_of(
            st.just([]),
            st.sampled_from(keys).map(lambda k: [("authorization", f"Bearer {k}")]),
            st.sampled_from(keys).map(lambda k: [("authorization", f"Bearer {k}")]),
            st.sampled_from(keys).map(lambda k: [("authorization", f"bearer {k}")]),
            st.sampled_from(keys).map(lambda k: [("x-api-key", k)]),
            TEXT.map(lambda t: [("authorization", t.encode("ascii", "replace").decode())]),
            st.just([("authorization", "Bearer helios_00000000_forged")]),
        )
    )
    assert service.full_name.startswith("helios.v1.") and isinstance(body, bytes)
    return service, method, body, auth


def invoke(channel: grpc.Channel, service: Any, method: Any, body: bytes, auth: Any) -> Any:
    """Call one RPC with raw request bytes; the status code it ends with."""
    path = f"/{service.full_name}/{method.name}"
    metadata = [(k, v) for k, v in auth if v.isprintable() and "\n" not in v]
    try:
        if method.server_streaming:
            requests = iter([body])
            if method.client_streaming:
                stream = channel.stream_stream(path)(requests, metadata=metadata, timeout=3)
            else:
                stream = channel.unary_stream(path)(body, metadata=metadata, timeout=3)
            for _ in stream:
                break
            stream.cancel()
            return grpc.StatusCode.OK
        channel.unary_unary(path)(body, metadata=metadata, timeout=5)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK
