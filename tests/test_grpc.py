"""The gRPC API: ingest, queries, control, health and reflection, and bad input."""

from __future__ import annotations

import asyncio

import grpc
import orjson
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from helios.control.convert import ts
from helios.v1 import helios_pb2 as pb
from helios.v1 import helios_pb2_grpc as pb_grpc

from tests.conftest import Served, serve


def event(
    event_id: str, source: str, payload: bytes | dict = b'{"a": 1}', event_type="order.created"
):
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return pb.Event(
        event_id=event_id, source=source, event_type=event_type, produced_at=ts(1.5), payload=raw
    )


def violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status in the trailers"
    found = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        assert detail.Unpack(bad)
        found += [(v.field, v.description) for v in bad.field_violations]
    return found


async def publish(served: Served, *events: pb.Event) -> pb.PublishResponse:
    return await pb_grpc.IngestServiceStub(served.channel).Publish(pb.PublishRequest(events=events))


async def settle(served: Served) -> None:
    for _ in range(50):
        if not served.daemon.pipeline.queued:
            break
        await asyncio.sleep(0.01)
    await served.daemon.pipeline.drain()


async def test_published_copies_reconcile_and_get_event_shows_every_copy(served):
    response = await publish(served, *(event("e1", s) for s in ("aws", "gcp", "azure")))
    assert response.accepted == 3 and not response.rejections
    await settle(served)
    got = await pb_grpc.QueryServiceStub(served.channel).GetEvent(pb.GetEventRequest(event_id="e1"))
    e = got.event
    assert e.status == pb.EVENT_STATUS_COMPLETE
    assert [c.source for c in e.copies] == ["aws", "gcp", "azure"]
    assert len({c.payload_hash for c in e.copies}) == 1 and all(c.count == 1 for c in e.copies)
    assert [(p.source_a, p.source_b) for p in e.latencies] == [
        ("aws", "gcp"),
        ("aws", "azure"),
        ("gcp", "azure"),
    ]
    assert [o.kind for o in e.outcomes] == [pb.OUTCOME_KIND_COMPLETE]


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        (event("", "aws"), "events[0].event_id", "empty"),
        (event("e1", "oracle"), "events[0].source", "unknown source 'oracle'"),
        (event("e1", "aws", b"{not json"), "events[0].payload", "not JSON"),
        (
            event("e1", "aws", b'{"x": "' + b"y" * 1_048_600 + b'"}'),
            "events[0].payload",
            "limit is 1048576",
        ),
        (event("e1", "aws", event_type=""), "events[0].event_type", "empty"),
    ],
)
async def test_bad_events_get_invalid_argument_with_field_violations(served, bad, field, words):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await publish(served, bad)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (found,) = violations(caught.value)
    assert found[0] == field and words in found[1]
    assert served.daemon.reconciler.copies_received == 0
    assert sum(served.daemon.pipeline.rejections.values()) == 1


async def test_a_mixed_batch_accepts_the_good_and_names_each_bad_one_by_index(served):
    response = await publish(
        served,
        event("e1", "aws"),
        event("e2", "nope"),
        event("e1", "gcp"),
        event("e3", "aws", b"["),
    )
    assert response.accepted == 2
    assert [(r.index, r.field) for r in response.rejections] == [(1, "source"), (3, "payload")]
    await settle(served)
    assert served.daemon.reconciler.copies_received == 2
    assert served.daemon.pipeline.rejections == {"unknown_source": 1, "payload_not_json": 1}


async def test_garbage_bytes_get_invalid_argument_and_cost_nothing(served):
    raw = served.channel.unary_unary("/helios.v1.IngestService/Publish")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw(b"\xff\xff\xff\xff garbage \x00\x01")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "helios.v1.PublishRequest" in caught.value.details()
    stream = served.channel.stream_stream("/helios.v1.IngestService/PublishStream")
    call = stream()
    await call.write(b"\x0a\xff\xff")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The daemon still works.
    assert (await publish(served, event("ok", "aws"))).accepted == 1


async def test_an_empty_batch_and_an_oversize_batch_are_refused(served):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await publish(served)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await publish(served, *(event(f"e{i}", "aws") for i in range(10_001)))
    assert violations(caught.value)[0][0] == "events"


async def test_a_full_ingest_queue_answers_resource_exhausted_and_drops_nothing():
    async for served in serve("[ingest]\nqueue_capacity_events = 4\nstream_wait_seconds = 0.2\n"):
        pipeline = served.daemon.pipeline
        await pipeline.stop()  # the reconciler stops taking work: the queue fills
        first = await publish(served, *(event(f"e{i}", "aws") for i in range(4)))
        assert first.accepted == 4
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await publish(served, event("e9", "aws"))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "queue full" in caught.value.details()
        call = pb_grpc.IngestServiceStub(served.channel).PublishStream()
        await call.write(pb.PublishStreamRequest(batch_id=7, events=[event("e8", "aws")]))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        await pipeline.drain()
        assert served.daemon.reconciler.copies_received == 4  # what was accepted, not lost
        assert pipeline.rejections["queue_full"] == 2


async def test_publish_stream_acknowledges_each_batch_with_rejections(served):
    call = pb_grpc.IngestServiceStub(served.channel).PublishStream()
    await call.write(
        pb.PublishStreamRequest(batch_id=1, events=[event("s1", "aws"), event("s1", "gcp")])
    )
    await call.write(
        pb.PublishStreamRequest(batch_id=2, events=[event("s1", "azure"), event("", "aws")])
    )
    await call.done_writing()
    acks = [ack async for ack in call]
    assert [(a.batch_id, a.accepted) for a in acks] == [(1, 2), (2, 1)]
    assert [(r.index, r.field) for r in acks[1].rejections] == [(1, "event_id")]
    await settle(served)
    record = await served.daemon.runtime.get_event("s1")
    assert record is not None and record.status.name == "COMPLETE"


async def test_unknown_event_is_not_found_and_empty_id_is_invalid(served):
    query = pb_grpc.QueryServiceStub(served.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await query.GetEvent(pb.GetEventRequest(event_id="nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND and "nope" in caught.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await query.GetEvent(pb.GetEventRequest())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_outcomes_filters_and_pages_newest_first(served):
    for i in range(25):
        await publish(served, *(event(f"c{i:02d}", s) for s in ("aws", "gcp", "azure")))
    await publish(served, event("m1", "aws"), event("m1", "aws"))
    await settle(served)
    served.clock.advance(12.5)
    await served.daemon.pipeline.sweep()
    query = pb_grpc.QueryServiceStub(served.channel)
    seen, token = [], ""
    while True:
        page = await query.ListOutcomes(
            pb.ListOutcomesRequest(page_size=10, page_token=token, filter="kind=COMPLETE")
        )
        seen += [o.event_id for o in page.outcomes]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"c{i:02d}" for i in reversed(range(25))]
    missing = await query.ListOutcomes(pb.ListOutcomesRequest(filter="kind=MISSING AND source=gcp"))
    assert [(o.event_id, list(o.sources)) for o in missing.outcomes] == [("m1", ["gcp", "azure"])]
    dup = await query.ListOutcomes(
        pb.ListOutcomesRequest(filter="kind=DUPLICATE event_type=order.*")
    )
    assert [o.event_id for o in dup.outcomes] == ["m1"]
    for bad_filter, field in (("colour=red", "filter"), ("kind=PURPLE", "filter")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await query.ListOutcomes(pb.ListOutcomesRequest(filter=bad_filter))
        assert violations(caught.value)[0][0] == field
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await query.ListOutcomes(pb.ListOutcomesRequest(page_token="bogus!"))
    assert violations(caught.value)[0][0] == "page_token"


async def test_watch_outcomes_streams_what_the_filter_selects(served):
    query = pb_grpc.QueryServiceStub(served.channel)
    watch = query.WatchOutcomes(pb.WatchOutcomesRequest(filter="kind=DUPLICATE"))
    await watch.initial_metadata()
    await publish(served, event("w1", "aws"), event("w1", "aws"), event("w2", "gcp"))
    response = await asyncio.wait_for(watch.read(), 5)
    assert [(o.kind, o.event_id, list(o.sources)) for o in response.outcomes] == [
        (pb.OUTCOME_KIND_DUPLICATE, "w1", ["aws"])
    ]
    watch.cancel()


async def test_get_stats_and_get_metrics(served):
    await publish(served, *(event("g1", s) for s in ("aws", "gcp", "azure")), event("g2", "nope"))
    await settle(served)
    served.clock.advance(61)
    await served.daemon.pipeline.sweep()
    query = pb_grpc.QueryServiceStub(served.channel)
    stats = await query.GetStats(pb.GetStatsRequest())
    assert stats.copies_received == 3 and stats.events_seen == 1
    assert stats.outcomes["COMPLETE"] == 1 and stats.rejections["unknown_source"] == 1
    assert [(s.source, s.completeness) for s in stats.sources] == [
        ("aws", 1.0),
        ("gcp", 1.0),
        ("azure", 1.0),
    ]
    assert stats.reconcile_latency.count == 1
    bloom = stats.storage.bloom  # g1 closed: its three sources are in the filters
    assert bloom.slices == 1 and bloom.configured_error_rate == 0.001
    assert 0 < bloom.fill < 1e-5 and bloom.bytes > 0
    assert bloom.slices_set_aside == 0  # no write was refused
    metrics = await query.GetMetrics(pb.GetMetricsRequest())
    assert len(metrics.minutes) >= 1
    assert metrics.minutes[0].features["event_rate_per_minute"] == 1.0
    assert len(metrics.minutes[0].features) == 8


async def test_pause_refuses_a_sources_copies_until_resume(served):
    control = pb_grpc.ControlServiceStub(served.channel)
    paused = await control.PauseSource(pb.PauseSourceRequest(source="gcp"))
    assert paused.source.paused
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await publish(served, event("p1", "gcp"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    mixed = await publish(served, event("p1", "aws"), event("p1", "gcp"))
    assert mixed.accepted == 1 and mixed.rejections[0].reason == "source 'gcp' is paused"
    await control.ResumeSource(pb.ResumeSourceRequest(source="gcp"))
    assert (await publish(served, event("p1", "gcp"))).accepted == 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await control.PauseSource(pb.PauseSourceRequest(source="oracle"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_is_serving_and_reflection_lists_the_services(served):
    health = health_pb2_grpc.HealthStub(served.channel)
    for service in ("", "helios.v1.IngestService", "helios.v1.QueryService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(served.channel)

    async def ask():
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for reply in stub.ServerReflectionInfo(ask()):
        names = {s.name for s in reply.list_services_response.service}
        break
    assert {
        "helios.v1.IngestService",
        "helios.v1.QueryService",
        "helios.v1.ControlService",
        "grpc.health.v1.Health",
    } <= names


async def test_every_refused_request_is_counted_by_method_and_code(served):
    query = pb_grpc.QueryServiceStub(served.channel)
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError):
            await query.GetEvent(pb.GetEventRequest(event_id="nope"))
    with pytest.raises(grpc.aio.AioRpcError):
        await served.channel.unary_unary("/helios.v1.IngestService/Publish")(b"\xff\xff")
    with pytest.raises(grpc.aio.AioRpcError):
        await query.ListOutcomes(pb.ListOutcomesRequest(filter="colour=red"))
    stats = await query.GetStats(pb.GetStatsRequest())
    assert dict(stats.errors) == {
        "GetEvent:NOT_FOUND": 2,
        "Publish:INVALID_ARGUMENT": 1,
        "ListOutcomes:INVALID_ARGUMENT": 1,
    }


async def test_a_message_over_the_size_limit_is_refused_and_the_daemon_goes_on():
    async for served in serve("[ingest]\nmax_message_bytes = 100000\n"):
        huge = event("big", "aws", b'{"x": "' + b"y" * 200_000 + b'"}')
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await publish(served, huge)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await publish(served, event("small", "aws"))).accepted == 1
