"""Six hours of three-cloud traffic with faults, replayed on a simulated clock: every
outcome matches the simulator's ground truth."""

from __future__ import annotations

import time

import pytest
from helios.daemon.clock import ManualClock
from helios.daemon.model import OutcomeKind, Status
from helios.plugins.sources.simulator import Scenario, Traffic, TrafficOptions

from tests.helpers import SOURCES, make_config, make_daemon

HOURS = 6


@pytest.mark.slow
async def test_six_hours_of_faulty_traffic_replay_in_under_a_minute_with_every_outcome_right():
    clock = ManualClock()
    daemon = make_daemon(make_config(), clock)
    start = clock.now()
    traffic = Traffic(
        TrafficOptions(
            rate_per_second=3.0,
            seed=42,
            drop_probability=0.01,
            duplicate_probability=0.01,
            corrupt_probability=0.005,
            delay_probability=0.005,
            scenarios=[
                Scenario(
                    source="aws", kind="drop", probability=0.25, start_minute=60, duration_minutes=5
                ),
                Scenario(
                    source="gcp", kind="latency", factor=8.0, start_minute=120, duration_minutes=10
                ),
                Scenario(
                    source="azure",
                    kind="duplicate",
                    probability=0.3,
                    start_minute=200,
                    duration_minutes=5,
                ),
            ],
        ),
        SOURCES,
        window_seconds=10.0,
        grace_seconds=2.0,
        start=start,
    )
    began = time.perf_counter()
    pipeline = daemon.pipeline
    for second in range(1, HOURS * 3600 + 120):
        now = start + second
        await pipeline.sweep()
        arrivals = traffic.until(now, produce=second <= HOURS * 3600)
        i = 0
        while i < len(arrivals):  # copies that arrive at the same instant form one batch
            at = arrivals[i][0]
            batch = []
            while i < len(arrivals) and arrivals[i][0] == at:
                batch.append(arrivals[i][1])
                i += 1
            clock.set(at)
            good, result = pipeline.check(batch)
            assert not result.rejections
            await pipeline.process(good)
        clock.set(now)
    await pipeline.sweep()
    elapsed = time.perf_counter() - began

    truth = traffic.truth
    events = list(truth.events)
    assert len(events) > 60_000
    by_kind: dict[OutcomeKind, set[str]] = {k: set() for k in OutcomeKind}
    statuses = {}
    for event_id in events:
        record = await daemon.runtime.get_event(event_id)
        assert record is not None, event_id
        statuses[event_id] = record.status
        for outcome in record.outcomes:
            by_kind[outcome.kind].add(event_id)
    assert by_kind[OutcomeKind.MISSING] == truth.missing()
    assert by_kind[OutcomeKind.LATE] == set(truth.delayed)
    assert by_kind[OutcomeKind.DUPLICATE] == set(truth.duplicated)
    assert by_kind[OutcomeKind.INCONSISTENT] == set(truth.inconsistent)
    never_missing = set(events) - truth.missing()
    healed = set(truth.delayed) - set(truth.dropped)
    for event_id in events:
        # Status precedence: still missing a copy > payloads disagree > complete.
        want = (
            Status.MISSING
            if event_id in truth.dropped
            else Status.INCONSISTENT
            if event_id in truth.inconsistent
            else Status.COMPLETE
        )
        assert statuses[event_id] is want, event_id
    assert healed and never_missing
    # The aws outage shows in the per-minute metrics, and only while it lasts.
    minutes = daemon.metrics.query()
    aws = [m.missing_rate_by_source["aws"] for m in minutes]
    assert max(aws[61:64]) > 0.15 and max(aws[:55]) < 0.1
    assert elapsed < 60, f"replay took {elapsed:.1f} s"
    assert not daemon.reconciler.open
