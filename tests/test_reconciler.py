"""The reconciliation semantics of ARCHITECTURE.md, one behaviour per test."""

from __future__ import annotations

import pytest
from helios.daemon.clock import ManualClock
from helios.daemon.model import Status

from tests.helpers import copy, feed, kinds, make_config, make_daemon


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def test_complete_is_emitted_when_the_last_copy_arrives_not_at_window_close(clock):
    daemon = make_daemon(clock=clock)
    await feed(daemon, copy("e1", "aws"))
    clock.advance(0.5)
    await feed(daemon, copy("e1", "gcp"))
    assert kinds(daemon, "e1") == []
    clock.advance(0.25)
    await feed(daemon, copy("e1", "azure"))
    assert kinds(daemon, "e1") == ["COMPLETE"]
    assert "e1" not in daemon.reconciler.open  # the closed window left memory


async def test_missing_is_declared_only_after_window_plus_grace(clock):
    daemon = make_daemon(clock=clock)
    await feed(daemon, copy("e1", "aws"), copy("e1", "gcp"))
    clock.advance(11.9)  # window 10 + grace 2 = 12
    await daemon.pipeline.sweep()
    assert kinds(daemon, "e1") == []
    clock.advance(0.1)
    await daemon.pipeline.sweep()
    assert kinds(daemon, "e1") == ["MISSING"]
    record = await daemon.runtime.get_event("e1")
    assert record is not None and record.status is Status.MISSING
    assert daemon.reconciler.names(record.missing) == ("azure",)


async def test_payloads_are_compared_after_canonicalisation(clock):
    daemon = make_daemon(clock=clock)
    await feed(
        daemon,
        copy("e1", "aws", b'{"a": 1, "b": [1, 2]}'),
        copy("e1", "gcp", b'{"b":[1,2],"a":1}'),
        copy("e1", "azure", b'{\n  "b": [1, 2],\n  "a": 1\n}'),
    )
    assert kinds(daemon, "e1") == ["COMPLETE"]


async def test_disagreeing_payload_is_inconsistent_and_names_the_minority_source(clock):
    daemon = make_daemon(clock=clock)
    await feed(
        daemon,
        copy("e1", "aws", {"amount": 10}),
        copy("e1", "gcp", {"amount": 11}),
        copy("e1", "azure", {"amount": 10}),
    )
    record = await daemon.runtime.get_event("e1")
    assert record is not None and record.status is Status.INCONSISTENT
    (outcome,) = record.outcomes
    assert outcome.kind.name == "INCONSISTENT" and outcome.sources == ("gcp",)


async def test_a_duplicate_is_counted_never_a_new_copy(clock):
    daemon = make_daemon(clock=clock)
    await feed(daemon, copy("e1", "aws"), copy("e1", "aws"), copy("e1", "gcp"))
    record = await daemon.runtime.get_event("e1")
    assert record is not None
    assert record.count(0) == 2 and kinds(daemon, "e1") == ["DUPLICATE"]
    await feed(daemon, copy("e1", "azure"))
    assert kinds(daemon, "e1") == ["DUPLICATE", "COMPLETE"]
    await feed(daemon, copy("e1", "gcp"))  # after COMPLETE: still a duplicate
    assert kinds(daemon, "e1") == ["DUPLICATE", "COMPLETE", "DUPLICATE"]
    assert daemon.reconciler.by_source[1].duplicates == 1


async def test_a_late_copy_heals_a_missing_record_and_keeps_the_lateness(clock):
    daemon = make_daemon(clock=clock)
    await feed(daemon, copy("e1", "aws"), copy("e1", "gcp"))
    clock.advance(12)
    await daemon.pipeline.sweep()
    clock.advance(3)
    await feed(daemon, copy("e1", "azure"))
    record = await daemon.runtime.get_event("e1")
    assert record is not None
    assert [o.kind.name for o in record.outcomes] == ["MISSING", "LATE", "COMPLETE"]
    assert record.status is Status.COMPLETE and record.missing == 0
    late = record.outcomes[1]
    assert late.sources == ("azure",) and late.late_by == pytest.approx(3.0)
    assert record.is_late(2)
    assert daemon.services.reads.sources()[2].completeness == 1.0


async def test_routes_choose_the_expected_sources_and_window(clock):
    daemon = make_daemon(
        make_config(
            """
[[routes]]
event_type = "payment.*"
sources = ["aws", "gcp"]
window_seconds = 1.0
grace_seconds = 0.0
"""
        ),
        clock,
    )
    await feed(daemon, copy("p1", "aws", event_type="payment.captured"))
    await feed(daemon, copy("p1", "gcp", event_type="payment.captured"))
    assert kinds(daemon, "p1") == ["COMPLETE"]
    await feed(daemon, copy("p2", "aws", event_type="payment.captured"))
    clock.advance(1.0)
    await daemon.pipeline.sweep()
    assert kinds(daemon, "p2") == ["MISSING"]
    await feed(daemon, copy("o1", "aws"))  # order.* falls to the default: all sources
    clock.advance(1.0)
    await daemon.pipeline.sweep()
    assert kinds(daemon, "o1") == []


async def test_per_pair_latency_and_minute_metrics(clock):
    daemon = make_daemon(clock=clock)
    start = clock.now()
    await feed(daemon, copy("e1", "aws"))
    clock.advance(0.040)
    await feed(daemon, copy("e1", "gcp"))
    clock.advance(0.060)
    await feed(daemon, copy("e1", "azure"))
    await feed(daemon, copy("e2", "aws"), copy("e2", "gcp"))
    clock.set(start + 60)
    await daemon.pipeline.sweep()
    clock.set(start + 120)  # e2 goes MISSING in minute 2
    await daemon.pipeline.sweep()
    first, second = daemon.metrics.query()[:2]
    assert list(first.features) == [
        "missing_rate",
        "duplicate_rate",
        "inconsistent_rate",
        "latency_aws_gcp_ms",
        "latency_aws_azure_ms",
        "latency_gcp_azure_ms",
        "event_rate_per_minute",
        "payload_size_variance",
    ]
    assert first.features["latency_aws_gcp_ms"] == pytest.approx(40.0)
    assert first.features["latency_aws_azure_ms"] == pytest.approx(100.0)
    assert first.features["latency_gcp_azure_ms"] == pytest.approx(60.0)
    assert first.features["event_rate_per_minute"] == 2.0
    assert first.features["missing_rate"] == 0.0
    assert second.features["missing_rate"] == 1.0
    assert second.missing_rate_by_source == {"aws": 0.0, "gcp": 0.0, "azure": 1.0}


async def test_records_age_out_of_the_index_after_the_ttl(clock):
    daemon = make_daemon(make_config(INDEX__TTL_SECONDS="100.0"), clock)
    await feed(daemon, copy("e1", "aws"), copy("e1", "gcp"), copy("e1", "azure"))
    assert await daemon.runtime.get_event("e1") is not None
    clock.advance(101)
    assert await daemon.index.expire(clock.now()) == 1
    assert await daemon.runtime.get_event("e1") is None


async def test_the_index_keeps_at_most_max_records(clock):
    daemon = make_daemon(make_config(INDEX__MAX_RECORDS="5"), clock)
    for i in range(8):
        await feed(daemon, *(copy(f"e{i}", s) for s in ("aws", "gcp", "azure")))
    assert await daemon.index.count() == 5
    assert (
        await daemon.runtime.get_event("e0") is None
        and await daemon.runtime.get_event("e7") is not None
    )
