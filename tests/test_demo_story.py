"""The demo's terminal tells each scheduled fault's story: helios.toml run on a manual
clock through its first 56 minutes, its log read as an operator would read the terminal:
for each fault an anomaly line, a decision line and an execution line in its trace."""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

import pytest
from helios.daemon import config as config_mod
from helios.daemon.clock import ManualClock

from tests.helpers import TEST_ROOT, make_daemon

ROOT = Path(__file__).resolve().parent.parent
# helios.toml's scenarios: (minute, diagnosis the anomaly line names)
FAULTS = [
    (20, "missing_events(aws)"),
    (30, "(gcp)"),  # latency: source_degraded(gcp) or high_latency(...gcp...)
    (40, "duplicate_storm(azure)"),
    (50, "inconsistent_payloads(gcp)"),
]


def demo_config(text: str) -> config_mod.Config:
    data = tempfile.mkdtemp(prefix="helios-demo-", dir=TEST_ROOT)
    return config_mod.parse(
        text,
        "helios.toml",
        {
            "HELIOS_DAEMON__DATA_DIR": f'"{data}"',
            "HELIOS_DAEMON__CONSOLE_ADDRESS": '""',
            "HELIOS_DAEMON__GRPC_ADDRESS": '"127.0.0.1:0"',
            "HELIOS_INDEX__BACKEND": '"memory"',
        },
    )


@pytest.mark.slow
async def test_an_hour_and_a_half_of_the_demos_normal_traffic_raises_no_alarm():
    text = (ROOT / "helios.toml").read_text(encoding="utf-8")
    start, end = text.index("scenarios = ["), text.index("]\n", text.index("scenarios = ["))
    config = demo_config(text[:start] + "scenarios = []" + text[end + 1 :])
    assert config.sources.inputs["simulator"].options()["scenarios"] == []
    clock = ManualClock()
    daemon = make_daemon(config, clock)
    await daemon.start()
    try:
        await daemon.advance(90 * 60.0, step=1.0)
        status = daemon.detection.status()
    finally:
        await daemon.stop()
    assert all("ready" in text for text in status.values()), status  # both warm
    assert not list(daemon.detection.anomalies), [a.id for a in daemon.detection.anomalies]


@pytest.mark.slow
async def test_each_scheduled_fault_shows_its_anomaly_decision_and_execution(caplog):
    config = demo_config((ROOT / "helios.toml").read_text(encoding="utf-8"))
    clock = ManualClock()
    start = clock.now()
    daemon = make_daemon(config, clock)
    caplog.set_level(logging.INFO, logger="helios")
    await daemon.start()
    try:
        await daemon.advance(56 * 60.0, step=1.0)
    finally:
        await daemon.stop()
    # both detectors warm, and no false alarm in the 20 minutes of normal traffic before
    # the first fault (minute 19's metrics close at minute 20)
    early = [a.id for a in daemon.detection.anomalies if a.minute < start + 19 * 60.0]
    assert not early, early
    lines = [
        r.getMessage() + f" [trace {getattr(r, 'trace_id', '')}]"
        for r in caplog.records
        if r.name in ("helios.detection", "helios.decisions") and r.levelno == logging.INFO
    ]
    for minute, diagnosis in FAULTS:
        anomalies = [
            line
            for line in lines
            if line.startswith("anomaly ") and diagnosis in line.split("diagnosis")[-1]
        ]
        assert anomalies, f"no anomaly line for the fault at minute {minute} ({diagnosis})"
        decided = [
            line for line in lines if line.startswith("decision ") and diagnosis in line
        ] or [line for line in lines if line.startswith("diagnosis ") and diagnosis in line]
        assert decided, f"no decision line for {diagnosis}"
        trace = re.search(r"\[trace (\w+)\]", decided[0]).group(1)
        executed = [
            line for line in lines if line.startswith("execution ") and f"[trace {trace}]" in line
        ]
        assert executed, f"no execution line in trace {trace} ({diagnosis})"
