"""The simulator: deterministic traffic, scheduled faults, ground truth, the daemon input."""

from __future__ import annotations

import asyncio

import pytest
from helios.daemon.clock import ManualClock
from helios.plugins.sources.simulator import Scenario, Traffic, TrafficOptions, parse_options

from tests.helpers import SOURCES, make_config, make_daemon


def run(options: TrafficOptions, seconds: float) -> Traffic:
    traffic = Traffic(options, SOURCES, window_seconds=10, grace_seconds=2, start=0.0)
    traffic.until(seconds)
    return traffic


def test_the_same_seed_gives_the_same_traffic():
    a = Traffic(TrafficOptions(seed=3, drop_probability=0.1), SOURCES, start=0.0).until(60)
    b = Traffic(TrafficOptions(seed=3, drop_probability=0.1), SOURCES, start=0.0).until(60)
    c = Traffic(TrafficOptions(seed=4, drop_probability=0.1), SOURCES, start=0.0).until(60)
    assert a == b and a != c


def test_a_scenario_drops_one_source_only_while_it_lasts():
    options = TrafficOptions(
        rate_per_second=50,
        seed=1,
        scenarios=[
            Scenario(
                source="aws", kind="drop", probability=0.25, start_minute=2, duration_minutes=1
            )
        ],
    )
    traffic = run(options, 240)
    produced = traffic.truth.events
    dropped = traffic.truth.dropped
    inside = [e for e, t in produced.items() if 120 <= t < 180]
    outside = [e for e, t in produced.items() if not 120 <= t < 180]
    share = sum(1 for e in inside if "aws" in dropped.get(e, ())) / len(inside)
    assert 0.2 < share < 0.3
    assert not any(e in dropped for e in outside)
    assert all(s == {"aws"} for s in dropped.values())
    # Withheld copies are kept so that a replay can deliver them.
    assert all((e, "aws") in traffic.truth.withheld for e in dropped)


def test_late_copies_arrive_after_the_deadline_and_corruption_changes_the_payload():
    traffic = run(
        TrafficOptions(
            rate_per_second=20,
            seed=5,
            delay_probability=0.05,
            corrupt_probability=0.05,
            max_latency_ms=500,
        ),
        120,
    )
    assert traffic.truth.delayed and traffic.truth.corrupted
    arrivals = traffic.until(400)
    assert not traffic.pending() or all(a > 120 for a, _ in arrivals)


def test_bad_simulator_options_name_the_option():
    with pytest.raises(ValueError, match="rate_per_second"):
        parse_options({"rate_per_second": 0})
    with pytest.raises(ValueError, match=r"scenarios\.0\.kind"):
        parse_options({"scenarios": [{"source": "aws", "kind": "explode"}]})
    with pytest.raises(ValueError, match="not one of"):
        Traffic(TrafficOptions(scenarios=[Scenario(source="ibm", kind="drop")]), SOURCES)


async def test_the_simulator_input_feeds_the_daemon_and_holds_a_paused_source():
    clock = ManualClock()
    daemon = make_daemon(
        make_config("""
[sources.inputs.sim]
plugin = "simulator"
rate_per_second = 10.0
tick_seconds = 0.5
"""),
        clock,
    )
    await daemon.start()
    try:
        daemon.runtime.pause_source("gcp")
        await clock.run_for(5, step=0.5)
        await daemon.pipeline.drain()
        assert daemon.reconciler.by_source[1].copies == 0
        assert daemon.reconciler.by_source[0].copies > 20
        daemon.runtime.resume_source("gcp")
        await clock.run_for(1, step=0.5)
        await daemon.pipeline.drain()
        held_and_delivered = daemon.reconciler.by_source[1].copies
        assert held_and_delivered >= daemon.reconciler.by_source[0].copies - 15
        assert daemon.pipeline.outcome_counts()["COMPLETE"] > 20
    finally:
        await daemon.stop()
        await asyncio.sleep(0)
