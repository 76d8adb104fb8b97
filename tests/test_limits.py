"""Bounded memory: over-long ids and types are rejected by index, open windows have a
bound past which whole batches are refused (never dropped), and the route cache stops
growing."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from helios.daemon.model import OutcomeKind
from helios.daemon.types import QueueFull

from tests.helpers import copy, make_config, make_daemon


async def test_over_long_event_ids_and_types_are_rejected_by_index_and_counted():
    daemon = make_daemon(make_config(INGEST__MAX_EVENT_TYPE_LENGTH="16"))
    result = await daemon.admission.admit(
        [
            copy("ok", "aws"),
            copy("x" * 513, "aws"),
            copy("t", "aws", event_type="order." + "x" * 20),
        ]
    )
    assert result.accepted == 1
    assert [(r.index, r.field, r.code) for r in result.rejections] == [
        (1, "event_id", "event_id_too_long"),
        (2, "event_type", "event_type_too_long"),
    ]
    assert "at most 16" in result.rejections[1].reason
    rejections = daemon.services.reads.counters().rejections
    assert rejections["event_id_too_long"] == rejections["event_type_too_long"] == 1


async def test_at_max_open_windows_a_batch_is_refused_whole_and_nothing_is_dropped():
    daemon = make_daemon(make_config(RECONCILE__MAX_OPEN_WINDOWS="10"))
    await daemon.admission.admit([copy(f"e{i}", "aws") for i in range(10)])
    await daemon.pipeline.drain()
    assert len(daemon.reconciler.open) == 10
    with pytest.raises(QueueFull, match=r"10 windows are open and this batch would open 1"):
        await daemon.admission.admit([copy("e10", "aws"), copy("e0", "gcp")])
    assert daemon.services.reads.counters().rejections["open_windows_full"] == 2
    assert "e10" not in daemon.reconciler.open  # refused whole: not half taken
    # copies of open windows still come in (they close windows, they open none)
    await daemon.admission.admit([copy(f"e{i}", s) for i in range(10) for s in ("gcp", "azure")])
    await daemon.pipeline.drain()
    assert not daemon.reconciler.open
    assert (await daemon.admission.admit([copy("e10", "aws")])).accepted == 1


async def test_the_route_cache_stops_growing_at_its_bound():
    daemon = make_daemon(make_config(RECONCILE__MAX_ROUTES_CACHED="5"))
    await daemon.admission.admit([copy(f"e{i}", "aws", event_type=f"type.{i}") for i in range(50)])
    await daemon.pipeline.drain()
    assert len(daemon.reconciler._route_cache) == 5
    assert len(daemon.reconciler.open) == 50  # every event still found its route


async def test_a_sweep_of_many_windows_decides_them_all_in_chunks_that_let_the_loop_run():
    from helios.daemon import pipeline as pipeline_mod

    daemon = make_daemon()
    n = pipeline_mod.SWEEP_CHUNK * 2 + 7
    await daemon.admission.admit([copy(f"e{i}", "aws") for i in range(n)])
    await daemon.pipeline.drain()
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    counter = asyncio.create_task(count_turns())
    daemon.clock.advance(60.0)
    assert await daemon.pipeline.sweep() == n
    counter.cancel()
    assert not daemon.reconciler.open
    assert daemon.reconciler.outcome_counts[OutcomeKind.MISSING] == n
    assert turns >= 1  # the loop ran between the chunks (0 when swept in one piece)


async def test_the_sweep_sizes_its_chunks_by_what_the_last_one_took():
    """A chunk is sized to take about SWEEP_SLICE_SECONDS: on a machine where a window
    costs 20 us to decide the chunks shrink to 400 (8 ms), where it costs 1 us they grow,
    within their bounds. The time is a fake clock advanced per window decided."""
    from helios.daemon import pipeline as pipeline_mod

    for cost, settled in ((20e-6, 400), (1e-6, 8000)):
        daemon = make_daemon()
        n = 40_000
        for start in range(0, n, 10_000):
            ids = range(start, start + 10_000)
            await daemon.admission.admit([copy(f"e{i}", "aws") for i in ids])
        await daemon.pipeline.drain()
        now = [0.0]
        chunks: list[int] = []

        def timed(
            at: float, limit: int, sweep=daemon.reconciler.sweep, now=now, chunks=chunks, cost=cost
        ) -> int:
            chunks.append(limit)
            declared = sweep(at, limit)
            now[0] += declared * cost
            return declared

        daemon.reconciler.sweep = timed  # type: ignore[method-assign]
        daemon.pipeline.timer = lambda now=now: now[0]
        daemon.clock.advance(60.0)
        assert await daemon.pipeline.sweep() == n
        assert daemon.reconciler.outcome_counts[OutcomeKind.MISSING] == n
        assert chunks[0] == pipeline_mod.SWEEP_CHUNK
        # each chunk at most halves or doubles, then stays where it takes 8 ms
        assert all(b <= a * 2 and b >= a // 2 for a, b in itertools.pairwise(chunks))
        assert chunks[-2] == settled, chunks
        assert daemon.pipeline.sweep_chunk == settled  # the next sweep starts there


async def test_deep_json_and_impossible_timestamps_are_named_rejections_not_errors():
    """A 300-deep payload parses but cannot be written back, and produced_at = 2^63-1
    cannot be a Timestamp: each is refused by index with a reason, counted, and the rest
    of the batch (before and after it) is taken; nothing raises."""
    import grpc
    from helios.control.server import GrpcServer
    from helios.v1 import helios_pb2 as pb
    from helios.v1 import helios_pb2_grpc as pb_grpc

    daemon = make_daemon(make_config())
    server = GrpcServer(daemon.services, "127.0.0.1:0", daemon.config.ingest)
    await daemon.start()
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            ingest = pb_grpc.IngestServiceStub(channel)
            events = [
                pb.Event(event_id=f"ok-{i}", source="aws", event_type="t", payload=b"{}")
                for i in range(300)
            ]
            events[130].payload = b"[" * 300 + b"]" * 300
            events[131].produced_at.seconds = 2**63 - 1
            reply = await ingest.Publish(pb.PublishRequest(events=events))
            assert reply.accepted == 298
            reasons = {r.index: (r.field, r.reason) for r in reply.rejections}
            assert reasons[130] == ("payload", "payload nests deeper than 254 levels")
            assert reasons[131][0] == "produced_at" and "9999" in reasons[131][1]
            query = pb_grpc.QueryServiceStub(channel)
            got = await query.GetEvent(pb.GetEventRequest(event_id="ok-299"))
            assert got.event.event_id == "ok-299"
        rejections = daemon.pipeline.rejections
        assert rejections["payload_too_deep"] == 1 and rejections["produced_at_out_of_range"] == 1
    finally:
        await server.stop()
        await daemon.stop()


async def test_non_finite_numbers_are_refused_by_name():
    from helios.daemon.types import ActionError

    daemon = make_daemon(make_config())
    operator = daemon.services.operator
    for weights in ({"cost": float("inf")}, {"cost": float("nan")}, {"cost": 1e308}):
        with pytest.raises(ActionError) as caught:
            operator.set_weights(weights)
        assert "finite" in str(caught.value)
    for params in ({"per_second": "nan"}, {"per_second": "inf"}):
        with pytest.raises(ActionError) as caught:
            await operator.trigger("throttle_ingest", "aws", params, True, "me")
        assert caught.value.field == "params.per_second"


async def test_watchers_of_one_filter_share_one_batch_and_are_capped():
    from helios.daemon.errors import RequestError

    daemon = make_daemon(make_config("[ingest]\nmax_watchers = 3\n"))
    reads = daemon.services.reads
    a, b = reads.watch("kind=MISSING,COMPLETE"), reads.watch("kind=MISSING,COMPLETE ")
    c = reads.watch("")
    with pytest.raises(RequestError) as caught:
        reads.watch("")
    assert "ingest.max_watchers" in str(caught.value)
    assert daemon.pipeline.rejections["watchers_full"] == 1
    good, _ = daemon.pipeline.check([copy("w1", s) for s in ("aws", "gcp", "azure")])
    await daemon.pipeline.process(good)
    first, second, everything = a.queue.get_nowait(), b.queue.get_nowait(), c.queue.get_nowait()
    assert first is second  # one filter: one batch, encoded once by the front-end
    assert [o.event_id for o in everything.outcomes] == ["w1"]
    reads.unwatch(a)
    reads.watch("")  # room again
