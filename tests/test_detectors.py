"""Detectors: the create() API, the EWMA detector's behaviour and bars, the daemon's
detection service (persisted state, anomalies over gRPC and the CLI)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys

import pytest
from helios.daemon.clock import ManualClock
from helios.daemon.config import ConfigError
from helios.ml.generate import generate
from helios.plugins.detectors import available, create
from helios.plugins.detectors.ewma import EwmaDetector
from helios.plugins.sources.simulator import Scenario, Traffic, TrafficOptions
from helios.v1 import helios_pb2 as pb
from helios.v1 import helios_pb2_grpc as pb_grpc

from tests.helpers import SOURCES, make_config, make_daemon


def feed(detector, values, metric="value"):
    return [detector.update({metric: v}) for v in values]


def test_create_builds_detectors_by_name_and_names_the_choices():
    assert "ewma" in available()
    detector = create("ewma", threshold=3.0, warmup=5)
    assert isinstance(detector, EwmaDetector) and detector.threshold == 3.0
    with pytest.raises(ValueError, match=r"unknown detector 'nope'; available: .*ewma"):
        create("nope")
    with pytest.raises(ValueError, match="alpha must be between 0 and 1"):
        create("ewma", alpha=2)
    with pytest.raises(TypeError):
        create("ewma", colour="red")


def test_ewma_on_a_single_series_warms_up_then_flags_a_spike():
    detector = create("ewma", warmup=10, threshold=4.0)
    quiet = feed(detector, [10.0, 10.5, 9.5, 10.2, 9.8] * 4)
    assert not any(r.is_anomaly for r in quiet)
    assert "warming up" in quiet[0].explanation
    spike = detector.update({"value": 30.0})
    assert spike.is_anomaly and spike.metrics == ["value"]
    assert spike.severity in ("major", "critical") and spike.score > 8
    assert "value = 30 is" in spike.explanation and "baseline 10 (" in spike.explanation
    assert not detector.update({"value": 10.1}).is_anomaly


def test_a_falling_missing_rate_is_good_news_but_falling_traffic_is_not():
    detector = create("ewma", warmup=5)
    for _ in range(30):
        detector.update({"missing_rate": 0.05, "event_rate_per_minute": 3000.0})
    result = detector.update({"missing_rate": 0.0, "event_rate_per_minute": 3000.0})
    assert not result.is_anomaly
    result = detector.update({"missing_rate": 0.05, "event_rate_per_minute": 900.0})
    assert result.is_anomaly and result.metrics == ["event_rate_per_minute"]


def test_an_outage_is_one_anomaly_and_a_sustained_change_becomes_the_new_normal():
    detector = create("ewma", warmup=10, adopt_after=60)
    feed(detector, [0.001, 0.002] * 20, "missing_rate")
    outage = feed(detector, [0.25] * 59, "missing_rate")
    assert [r.is_anomaly for r in outage] == [True] + [False] * 58  # one per episode
    assert all(r.metrics == ["missing_rate"] for r in outage)  # still named while it lasts
    assert detector.baseline("missing_rate")[0] < 0.01  # learnt slowly, not adopted yet
    assert "out of baseline: missing_rate" in detector.status()
    adopted = detector.update({"missing_rate": 0.25})
    assert (
        not adopted.is_anomaly
        and "level shift of missing_rate since step 40" in adopted.explanation
    )
    assert abs(detector.baseline("missing_rate")[0] - 0.25) < 1e-9
    assert detector.shifts[-1]["onset_step"] == 40
    later = feed(detector, [0.25] * 100, "missing_rate")
    assert not any(r.is_anomaly for r in later)  # it does not alarm forever
    back = feed(detector, [0.001] * 3, "missing_rate")
    assert not any(r.is_anomaly for r in back)  # a rate falling is good news


def test_an_episode_closes_after_quiet_steps_and_a_new_one_is_a_new_anomaly():
    detector = create("ewma", warmup=10, quiet_steps=3)
    feed(detector, [10.0, 10.4, 9.6, 10.2, 9.8] * 6)
    assert detector.update({"value": 30.0}).is_anomaly
    assert not detector.update({"value": 31.0}).is_anomaly  # the same episode
    feed(detector, [10.0, 10.1, 9.9])  # three quiet steps: closed
    assert detector.update({"value": 30.0}).is_anomaly


def test_a_slow_ramp_is_found_by_the_cusum_before_any_step_crosses_the_threshold():
    detector = create("ewma", warmup=10)
    feed(detector, [100.0 + (i % 5) for i in range(200)])
    spread = detector.baseline("value")[1]
    results = feed(detector, [102.0 + 3.5 * spread] * 30)  # under 6 spreads every step
    flagged = [i for i, r in enumerate(results) if r.is_anomaly]
    assert flagged and flagged[0] < 20
    assert "drifted (CUSUM)" in results[flagged[0]].explanation


def test_a_rate_is_judged_with_the_noise_of_its_count():
    # 1% missing: out of 100 events a minute that is one event, noise; out of 100,000
    # it is 1,000 events, far outside a 0.1% baseline.
    for events, expected in ((100.0, False), (100_000.0, True)):
        detector = create("ewma", warmup=5, absolute_floor={"rate": 0.0})
        for _ in range(60):
            detector.update({"missing_rate": 0.001, "event_rate_per_minute": events})
        hit = detector.update({"missing_rate": 0.011, "event_rate_per_minute": events})
        assert hit.is_anomaly is expected, (events, hit)


def _daily(step: int, rng) -> float:
    """A day of 288 five-minute steps: 100 at night, 500 at noon, some noise."""
    import math

    return 300.0 - 200.0 * math.cos(2 * math.pi * (step % 288) / 288) + rng.gauss(0, 8)


def test_a_daily_cycle_is_learnt_and_a_collapse_at_noon_is_not_the_night():
    import random

    rng = random.Random(3)
    with_cycle, without = create("ewma"), create("ewma", seasons=[])
    alarms = {"cycle": 0, "plain": 0}
    for step in range(288 * 4):  # four normal days
        value = _daily(step, rng)
        alarms["cycle"] += with_cycle.update({"traffic": value}).is_anomaly
        alarms["plain"] += without.update({"traffic": value}).is_anomaly
    assert alarms == {"cycle": 0, "plain": 0}
    assert with_cycle.stats["traffic"].active == 288
    step = 288 * 4 + 144  # noon of day five: traffic falls to its night level
    for s in range(288 * 4, step):
        value = _daily(s, rng)
        with_cycle.update({"traffic": value})
        without.update({"traffic": value})
    hit = with_cycle.update({"traffic": 100.0})
    assert hit.is_anomaly and "288-step cycle" in hit.explanation
    assert not without.update({"traffic": 100.0}).is_anomaly  # its spread is the whole cycle
    night = create("ewma")  # the same 100 at midnight is the normal night
    rng = random.Random(3)
    for s in range(288 * 5):
        night.update({"traffic": _daily(s, rng)})
    assert not night.update({"traffic": 100.0}).is_anomaly
    restored = create("ewma")
    restored.load_state(json.loads(json.dumps(with_cycle.state())))
    assert restored.stats["traffic"].active == 288
    assert restored.baseline("traffic") == with_cycle.baseline("traffic")


def test_state_round_trips_through_json():
    a = create("ewma", warmup=5)
    feed(a, [1.0, 1.2, 0.9, 1.1] * 5)
    b = create("ewma", warmup=5)
    b.load_state(json.loads(json.dumps(a.state())))
    for value in (1.05, 3.0, 1.0):
        assert a.update({"value": value}) == b.update({"value": value})
    with pytest.raises(ValueError, match="not 'ewma'"):
        b.load_state({"detector": "lstm"})


def test_a_25_percent_single_source_missing_spike_is_detected_within_2_steps():
    for seed in range(5):
        series = generate(days=1, seed=seed)
        detector = create("ewma")
        for step in series.steps[:600]:
            assert not detector.update(step).is_anomaly
        delays = []
        for i, step in enumerate(series.steps[600:610]):
            spiked = dict(step, missing_rate=step["missing_rate"] + 0.25)
            spiked["missing_rate:aws"] = step["missing_rate:aws"] + 0.25
            if detector.update(spiked).is_anomaly:
                delays.append(i + 1)
        assert delays and delays[0] <= 2, f"seed {seed}: {delays}"


def test_fewer_than_one_false_alarm_per_day_over_7_days_of_normal_traffic():
    series = generate(days=7, seed=11)
    detector = create("ewma")
    alarms = [i for i, step in enumerate(series.steps) if detector.update(step).is_anomaly]
    assert len(alarms) < 7, alarms


def test_bad_detector_config_names_the_key():
    with pytest.raises(ConfigError, match=r"detectors\.enabled: unknown detector 'lstmx'"):
        make_daemon(make_config('[detectors]\nenabled = ["lstmx"]\n'))
    with pytest.raises(ConfigError, match=r"detectors\.options\.ewma: threshold must be > 0"):
        make_daemon(
            make_config(
                '[detectors]\nenabled = ["ewma"]\noptions = { ewma = { threshold = -1.0 } }\n'
            )
        )


DETECTING = """
[detectors]
enabled = ["ewma"]
options = { ewma = { warmup = 10 } }
"""


async def _run_traffic(daemon, clock, minutes: int, outage_from: int | None) -> None:
    scenarios = []
    if outage_from is not None:
        scenarios = [
            Scenario(
                source="aws",
                kind="drop",
                probability=0.3,
                start_minute=outage_from,
                duration_minutes=3,
            )
        ]
    traffic = Traffic(
        TrafficOptions(rate_per_second=2.0, seed=9, scenarios=scenarios),
        SOURCES,
        window_seconds=10,
        grace_seconds=2,
        start=clock.now(),
    )
    start = clock.now()
    for second in range(1, minutes * 60 + 1):
        for at, copy in traffic.until(start + second):
            clock.set(at)
            good, _ = daemon.pipeline.check([copy])
            await daemon.pipeline.process(good)
        clock.set(start + second)
        await daemon.pipeline.sweep()
        if second % 60 == 0:
            daemon.detection.process()
            daemon.detection.save()  # what the detection job does after a new minute


async def test_the_daemon_detects_an_outage_keeps_the_anomaly_and_restores_state():
    clock = ManualClock()
    config = make_config(DETECTING)
    daemon = make_daemon(config, clock)
    await _run_traffic(daemon, clock, minutes=25, outage_from=18)
    anomalies = list(daemon.detection.anomalies)
    assert anomalies, daemon.detection.status()
    first = anomalies[0]
    assert first.detector == "ewma" and "missing_rate" in first.metrics[0]
    # The 3-minute outage is one anomaly, updated while it lasted.
    assert len(anomalies) == 1 and first.until >= first.minute + 2 * 60
    assert 18 * 60 <= first.minute - (clock.now() - 25 * 60) < 22 * 60
    saved = json.loads((daemon.detection.state_dir / "ewma.json").read_text())
    assert saved["steps"] >= 24
    again = make_daemon(config, ManualClock())  # a restart: same data_dir
    again.detection.open()  # what start() reads back
    assert again.detection.detectors["ewma"].steps == saved["steps"]
    assert again.detection.status()["ewma"].startswith("ready")


async def test_a_corrupt_state_file_is_reported_and_learning_starts_afresh():
    config = make_config(DETECTING)
    daemon = make_daemon(config)
    daemon.detection.state_dir.mkdir(parents=True)
    (daemon.detection.state_dir / "ewma.json").write_text("{ not json")
    again = make_daemon(config)
    again.detection.open()
    assert "not restored" in again.detection.status()["ewma"]
    assert again.detection.detectors["ewma"].steps == 0


async def test_anomalies_over_grpc_and_the_cli():
    from tests.conftest import serve

    async for served in serve(DETECTING):
        await _run_traffic(served.daemon, served.clock, minutes=24, outage_from=18)
        query = pb_grpc.QueryServiceStub(served.channel)
        listed = await query.ListAnomalies(pb.ListAnomaliesRequest(filter="detector=ewma"))
        assert listed.anomalies
        newest = listed.anomalies[0]
        got = (await query.GetAnomaly(pb.GetAnomalyRequest(id=newest.id))).anomaly
        assert got.explanation == newest.explanation and got.metrics
        assert got.metrics[0] in got.baseline_means
        stats = await query.GetStats(pb.GetStatsRequest())
        assert stats.detectors[0].name == "ewma" and stats.detectors[0].anomalies >= 1
        import grpc

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await query.GetAnomaly(pb.GetAnomalyRequest(id="ewma-19990101T0000"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await query.ListAnomalies(pb.ListAnomaliesRequest(filter="mood=grumpy"))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        helios = shutil.which("helios", path=os.path.dirname(sys.executable))
        address = f"127.0.0.1:{served.server.port}"
        listing = await asyncio.to_thread(
            subprocess.run,
            [helios, "--address", address, "anomalies", "list"],
            capture_output=True,
            text=True,
        )
        assert listing.returncode == 0 and newest.id in listing.stdout
        shown = await asyncio.to_thread(
            subprocess.run,
            [helios, "--address", address, "anomalies", "get", newest.id],
            capture_output=True,
            text=True,
        )
        assert shown.returncode == 0 and "RESPONSIBLE" in shown.stdout


def test_options_of_a_disabled_detector_are_kept_but_a_typo_is_an_error():
    daemon = make_daemon(
        make_config("[detectors]\nenabled = []\noptions = { ewma = { warmup = 5 } }\n")
    )
    assert daemon.detection.detectors == {}
    with pytest.raises(ConfigError, match=r"detectors\.options: \['ewmaa'\] are not detectors"):
        make_daemon(
            make_config("[detectors]\nenabled = []\noptions = { ewmaa = { warmup = 5 } }\n")
        )


async def test_the_detection_job_saves_state_after_each_new_minute_off_the_loop():
    import json

    clock = ManualClock()
    config = make_config(
        DETECTING + '\n[sources.inputs.simulator]\nplugin = "simulator"\nrate_per_second = 5.0\n'
    )
    daemon = make_daemon(config, clock)
    await daemon.start()
    try:
        path = daemon.detection.state_dir / "ewma.json"
        await daemon.advance(150.0, step=1.0)  # two closed minutes
        for _ in range(50):  # the write runs in a thread
            if path.exists():
                break
            await asyncio.sleep(0.02)
        first = json.loads(path.read_text())["steps"]
        await daemon.advance(60.0, step=1.0)
        for _ in range(50):
            if json.loads(path.read_text())["steps"] > first:
                break
            await asyncio.sleep(0.02)
        assert json.loads(path.read_text())["steps"] > first >= 1
    finally:
        await daemon.stop()
