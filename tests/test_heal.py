"""The decide-and-heal bar, end to end on a real daemon with the simulator and a
simulated clock: aws drops 25% of its copies for 5 minutes; HELIOS detects it,
diagnoses missing_events(aws), chooses and runs replay_missing, and verifies that every
withheld copy arrived (none twice). The same scenario in observe and approve modes."""

from __future__ import annotations

from helios.daemon.app import Daemon
from helios.daemon.clock import ManualClock
from helios.plugins.sources.simulator import SimulatorSource

from tests.helpers import make_config, make_daemon

FAULT_FROM, FAULT_MINUTES = 12, 5


def scenario(mode: str, extra: str = "") -> str:
    return f"""
[sources.inputs.simulator]
plugin = "simulator"
rate_per_second = 10.0
seed = 11
tick_seconds = 0.5
scenarios = [
  {{ source = "aws", kind = "drop", probability = 0.25, start_minute = {FAULT_FROM}.0, \
duration_minutes = {FAULT_MINUTES}.0 }},
]

[detectors]
enabled = ["ewma"]
options = {{ ewma = {{ warmup = 8 }} }}

[decision]
automation = "{mode}"
cycle_seconds = 20.0
approval_ttl_seconds = 120.0
{extra}
"""


async def run(daemon: Daemon, clock: ManualClock, seconds: float, step: float = 0.5) -> None:
    assert daemon.clock is clock
    await daemon.advance(seconds, step)


def simulator(daemon: Daemon) -> SimulatorSource:
    source = daemon.inputs["simulator"]
    assert isinstance(source, SimulatorSource)
    return source


async def start(mode: str, extra: str = "") -> tuple[Daemon, ManualClock]:
    clock = ManualClock()
    daemon = make_daemon(make_config(scenario(mode, extra)), clock)
    await daemon.start()
    return daemon, clock


async def test_auto_mode_detects_diagnoses_replays_and_verifies_an_aws_drop():
    daemon, clock = await start("auto")
    try:
        t0 = clock.now()
        await run(daemon, clock, (FAULT_FROM + FAULT_MINUTES + 3) * 60)
        truth = simulator(daemon).traffic.truth
        dropped = {(e, s) for e, sources in truth.dropped.items() for s in sources}
        assert len(dropped) > 300 and all(s == "aws" for _, s in dropped)

        anomalies = [a for a in daemon.detection.anomalies if a.minute >= t0 + FAULT_FROM * 60]
        first = anomalies[0]
        # Detected within 2 metric steps of the fault's first minute.
        assert first.minute <= t0 + (FAULT_FROM + 1) * 60
        assert (first.diagnosis.kind, first.diagnosis.target) == ("missing_events", "aws")

        decisions = list(daemon.loop.audit.decisions.values())
        executed = [d for d in decisions if d.status == "executed"]
        assert executed and all(d.chosen == "replay_missing" for d in executed)
        d0 = executed[0]
        assert d0.anomaly_id == first.id and d0.target == "aws"
        ranked = [a for a in d0.alternatives if a.rank]
        assert ranked[0].action == "replay_missing" and len(ranked) >= 3
        assert {"anomaly", "diagnosis", "decision", "execution", "verification"} <= {
            s.stage for s in d0.spans
        }

        # Every withheld copy replayed, none twice, and the reconciler healed them all.
        assert set(truth.replayed) == dropped
        assert max(truth.replayed.values()) == 1
        for event_id, _ in dropped:
            record = await daemon.runtime.get_event(event_id)
            assert record is not None and not record.missing, event_id
        aws = next(s for s in daemon.services.reads.sources() if s.source == "aws")
        assert aws.completeness == 1.0

        # Verified by observation, with MTTR under a minute of simulated time.
        runs = [daemon.loop.audit.executions[x] for d in executed for x in d.execution_ids]
        assert all(x.verification == "verified" for x in runs), [
            (x.id, x.verification, x.verification_detail) for x in runs
        ]
        assert 0 < runs[0].mttr_seconds < 60, runs[0].mttr_seconds
        assert sum(x.expected_copies for x in runs) == len(dropped)
        # Learning: the replay's record now holds these runs.
        assert len(daemon.loop.planner.entries["replay_missing"].stats.runs) == len(runs)
    finally:
        await daemon.stop()


async def test_observe_mode_decides_and_records_why_but_changes_nothing():
    daemon, clock = await start("observe")
    try:
        await run(daemon, clock, (FAULT_FROM + 3) * 60)
        decisions = list(daemon.loop.audit.decisions.values())
        assert decisions
        assert all(d.status == "not_executed" for d in decisions)
        assert decisions[0].chosen == "replay_missing"
        assert "observe mode" in decisions[0].reason
        assert not daemon.loop.audit.executions
        assert not simulator(daemon).traffic.truth.replayed
    finally:
        await daemon.stop()


async def test_approve_mode_waits_then_expires_or_runs_when_approved():
    daemon, clock = await start("approve")
    audit = daemon.loop.audit
    try:
        await run(daemon, clock, (FAULT_FROM + 2) * 60 + 10)
        decisions = list(audit.decisions.values())
        pending = [d for d in decisions if d.status == "pending_approval"]
        assert len(pending) == 1 and not audit.executions
        first = pending[0]
        assert first.chosen == "replay_missing" and first.expires_at == first.created_at + 120.0
        # Later minutes of the same issue do not pile up requests for people.
        waiting = [d for d in decisions if "pending already" in d.reason]
        assert waiting and all(first.id in d.reason for d in waiting)

        await run(daemon, clock, 130)  # past its time-to-live
        expired = audit.decisions[first.id]
        assert expired.status == "expired" and "approval expired" in expired.reason
        assert not expired.execution_ids and not audit.executions

        await run(daemon, clock, 60)  # the fault goes on: a new request
        fresh = [d for d in audit.decisions.values() if d.status == "pending_approval"]
        assert len(fresh) == 1 and fresh[0].id != first.id
        approved = await daemon.services.operator.approve(fresh[0].id, "alice")
        assert approved.status == "executed" and approved.decided_by == "alice"
        await run(daemon, clock, 5)
        replayed = simulator(daemon).traffic.truth.replayed
        assert replayed and max(replayed.values()) == 1
        x = audit.executions[approved.execution_ids[0]]
        assert x.verification == "verified"
    finally:
        await daemon.stop()
