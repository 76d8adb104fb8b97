"""A request's repeated fields are counted on its bytes and refused past their limit
before the request is parsed: a 64 MB batch of empty events is never built."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from helios.control.wire import Cap, NotProtobuf, check_caps, count_field
from helios.daemon.errors import RequestError
from helios.v1 import helios_pb2 as pb
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import serve

events = st.lists(
    st.builds(
        pb.Event,
        event_id=st.text(max_size=20),
        source=st.sampled_from(["aws", "gcp", ""]),
        payload=st.binary(max_size=300),
        attributes=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    ),
    max_size=40,
)


@given(events, st.integers(min_value=0, max_value=2**64 - 1))
def test_the_count_on_the_wire_is_the_count_the_parser_finds(batch, batch_id):
    raw = pb.PublishStreamRequest(batch_id=batch_id, events=batch).SerializeToString()
    assert count_field(raw, 2, 10_000) == len(pb.PublishStreamRequest.FromString(raw).events)
    assert count_field(raw, 2, 3) == min(3, len(batch))  # stops one past the limit
    assert count_field(raw, 1, 10) == (1 if batch_id else 0)


@pytest.mark.parametrize(
    "raw", [b"\x0a\x05abc", b"\x0a", b"\x0b\x00", b"\x0f", b"\x08" + b"\xff" * 11, b"\x0d\x00"]
)
def test_bytes_that_are_not_a_message_are_named_and_left_to_the_parser(raw):
    with pytest.raises(NotProtobuf):
        count_field(raw, 1, 10)
    check_caps(raw, (Cap("events", 1, 0),))  # passes: the parser refuses it by name


def test_a_cap_names_the_field_and_allows_its_limit():
    with pytest.raises(RequestError, match=r"more than 10 events in one request") as caught:
        check_caps(b"\x0a\x00" * 11, (Cap("events", 1, 10),))
    assert caught.value.violations == [("events", str(caught.value))]
    check_caps(b"\x0a\x00" * 10 + b"\x12\x00" * 50, (Cap("events", 1, 10),))


def details(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    return [v.field for v in bad.field_violations]


async def test_a_million_empty_events_are_refused_unread_on_both_ingest_rpcs():
    async for served in serve("[ingest]\nmax_batch_events = 100\n"):
        million = b"\x0a\x00" * 1_000_000  # PublishRequest.events, 2 MB of empty events
        publish = served.channel.unary_unary("/helios.v1.IngestService/Publish")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await publish(million)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "more than 100 events in one request (refused unread)" in caught.value.details()
        assert details(caught.value) == ["events"]

        stream = served.channel.stream_stream("/helios.v1.IngestService/PublishStream")
        call = stream()
        await call.write(b"\x08\x07" + b"\x12\x00" * 1_000_000)  # batch_id 7, events
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "refused unread" in caught.value.details()

        ids = b"".join(b"\x0a\x01x" for _ in range(1001))  # ReplayDeadLettersRequest.ids
        replay = served.channel.unary_unary("/helios.v1.ControlService/ReplayDeadLetters")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await replay(ids)
        assert "more than 1000 ids" in caught.value.details()

        stats = served.daemon.services.refused
        assert stats["Publish:INVALID_ARGUMENT"] == 1
        assert stats["PublishStream:INVALID_ARGUMENT"] == 1
        assert stats["ReplayDeadLetters:INVALID_ARGUMENT"] == 1
        # a batch at the limit is taken whole
        at_limit = pb.PublishRequest(
            events=[
                pb.Event(event_id=f"e{i}", source="aws", event_type="t", payload=b"{}")
                for i in range(100)
            ]
        )
        response = pb.PublishResponse.FromString(await publish(at_limit.SerializeToString()))
        assert response.accepted == 100 and not response.rejections


def test_an_element_with_too_many_fields_is_refused_by_its_position():
    crowded = pb.Event(event_id="x", attributes={f"k{i}": "" for i in range(2000)})
    fine = pb.Event(event_id="y", payload=b"x" * 50_000)  # large, but few fields
    raw = pb.PublishRequest(events=[fine, crowded]).SerializeToString()
    with pytest.raises(RequestError, match=r"more than 1024 fields in one of events") as caught:
        check_caps(raw, (Cap("events", 1, 10, 1024),))
    assert caught.value.field == "events[1]"
    check_caps(pb.PublishRequest(events=[fine] * 5).SerializeToString(), (Cap("events", 1, 10, 8),))


async def test_one_event_with_a_million_attributes_is_refused_unread():
    async for served in serve():
        # one Event (field 1) whose body is a million empty attributes entries (field 6)
        body = b"\x32\x00" * 1_000_000
        raw = b"\x0a" + _varint(len(body)) + body
        publish = served.channel.unary_unary("/helios.v1.IngestService/Publish")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await publish(raw)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert details(caught.value) == ["events[0]"]
        assert "refused unread" in caught.value.details()


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
