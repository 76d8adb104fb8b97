"""Decide and heal over gRPC and the CLI: TriggerAction and its refusals (nothing runs),
dry runs, approvals, modes, breakers, weights, decisions, executions and traces."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from helios.control import cli
from helios.control.server import GrpcServer
from helios.daemon.app import Daemon
from helios.daemon.clock import ManualClock
from helios.daemon.types import ActionError
from helios.plugins.sources.simulator import SimulatorSource
from helios.v1 import helios_pb2 as pb
from helios.v1 import helios_pb2_grpc as pb_grpc

from tests.helpers import make_config, make_daemon
from tests.test_heal import run

DROPPING = """
[sources.inputs.simulator]
plugin = "simulator"
rate_per_second = 10.0
seed = 5
tick_seconds = 0.5
scenarios = [ { source = "aws", kind = "drop", probability = 0.3, duration_minutes = 60.0 } ]

[actions.options]
replay_missing = { blast_radius = BLAST }
"""


class Healing:
    def __init__(self, daemon: Daemon, channel: grpc.aio.Channel, address: str) -> None:
        self.daemon = daemon
        self.clock = daemon.clock
        assert isinstance(self.clock, ManualClock)
        self.query = pb_grpc.QueryServiceStub(channel)
        self.control = pb_grpc.ControlServiceStub(channel)
        self.address = address

    @property
    def simulator(self) -> SimulatorSource:
        source = self.daemon.inputs["simulator"]
        assert isinstance(source, SimulatorSource)
        return source

    async def cli(self, *argv: str) -> tuple[int, str]:
        out = io.StringIO()

        def call() -> int:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                return cli.main(["--address", self.address, *argv])

        code = await asyncio.to_thread(call)
        return code, out.getvalue()


async def healing(blast_radius: int = 1000, config: str = DROPPING) -> AsyncIterator[Healing]:
    clock = ManualClock()
    daemon = make_daemon(make_config(config.replace("BLAST", str(blast_radius))), clock)
    server = GrpcServer(daemon.services, "127.0.0.1:0", daemon.config.ingest)
    await daemon.start()
    await server.start()
    address = f"127.0.0.1:{server.port}"
    channel = grpc.aio.insecure_channel(address)
    h = Healing(daemon, channel, address)
    await run(daemon, clock, 60)  # aws has MISSING events now (window 10 s + grace 2 s)
    try:
        yield h
    finally:
        await channel.close()
        await server.stop(0)
        await daemon.stop()


@pytest.fixture
async def h() -> AsyncIterator[Healing]:
    async for value in healing():
        yield value


def violations(exc: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None, exc
    out = {}
    for detail in status.details:
        request = error_details_pb2.BadRequest()
        assert detail.Unpack(request)
        out.update({v.field: v.description for v in request.field_violations})
    return out


async def refused(call, code: grpc.StatusCode) -> dict[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    return violations(info.value)


async def test_trigger_refusals_name_the_field_and_execute_nothing(h: Healing):
    bad = await refused(
        h.control.TriggerAction(
            pb.TriggerActionRequest(action="reboot_the_cloud", target="aws", force=True)
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert (
        "unknown action 'reboot_the_cloud'" in bad["action"] and "replay_missing" in bad["action"]
    )
    bad = await refused(
        h.control.TriggerAction(
            pb.TriggerActionRequest(action="replay_missing", target="ibm", force=True)
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert "'ibm' is not a source" in bad["target"]
    await refused(
        h.control.TriggerAction(pb.TriggerActionRequest(action="replay_missing", force=True)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    bad = await refused(
        h.control.TriggerAction(
            pb.TriggerActionRequest(
                action="throttle_ingest", target="aws", params={"per_second": "x"}, force=True
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "per_second must be a number" in bad["params.per_second"]
    assert not h.daemon.loop.audit.executions and not h.simulator.traffic.truth.replayed
    stats = await h.query.GetStats(pb.GetStatsRequest())
    assert stats.errors["TriggerAction:NOT_FOUND"] == 2
    assert stats.errors["TriggerAction:INVALID_ARGUMENT"] == 2


async def test_a_replay_over_the_blast_radius_is_refused_whole():
    async for h in healing(blast_radius=5):
        bad = await refused(
            h.control.TriggerAction(
                pb.TriggerActionRequest(action="replay_missing", target="aws", force=True)
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        assert "over the blast-radius cap of 5" in bad["params"]
        assert "actions.options.replay_missing.blast_radius" in bad["params"]
        assert not h.simulator.traffic.truth.replayed
        assert not h.daemon.loop.audit.executions and not h.daemon.loop.policy.running


async def test_dry_run_then_run_then_cooldown_and_the_trail_is_readable(h: Healing):
    missing = await h.daemon.runtime.missing_copies("aws", 0.0, 10_000)
    assert len(missing) > 20
    dry = await h.control.TriggerAction(
        pb.TriggerActionRequest(action="replay_missing", target="aws", dry_run=True, force=True)
    )
    assert dry.execution.status == "dry_run" and dry.execution.size == len(missing)
    assert not h.simulator.traffic.truth.replayed

    done = await h.control.TriggerAction(
        pb.TriggerActionRequest(
            action="replay_missing", target="aws", requested_by="bob", force=True
        )
    )
    assert done.execution.status == "running" and done.decision.decided_by.startswith(
        "bob (unverified"
    )
    await run(h.daemon, h.clock, 3)
    x = (
        await h.query.ListExecutions(pb.ListExecutionsRequest(filter="action=replay_missing"))
    ).executions[0]
    assert x.id == done.execution.id and x.status == "succeeded"
    assert x.verification == "verified" and x.seen_copies == x.expected_copies == len(missing)
    truth = h.simulator.traffic.truth
    assert len(truth.replayed) == len(missing) and max(truth.replayed.values()) == 1

    again = await refused(
        h.control.TriggerAction(
            pb.TriggerActionRequest(action="replay_missing", target="aws", force=True)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert again["action"].startswith("cooldown: replay_missing ran on aws")

    trace = await h.query.GetTrace(pb.GetTraceRequest(trace_id=done.decision.trace_id))
    assert [s.stage for s in trace.spans] == ["decision", "execution", "execution", "verification"]
    code, text = await h.cli("decisions", "explain", done.decision.id)
    assert code == 0, text
    assert "RANK  ACTION" in text and "replay_missing" in text and "verification" in text
    code, text = await h.cli("executions", "list")
    assert code == 0 and "verified" in text and "(dry run)" in text
    code, text = await h.cli("trace", done.decision.trace_id)
    assert code == 0 and "verification" in text
    code, text = await h.cli("decisions", "explain", "d-999999")
    assert code == 1 and "NOT_FOUND" in text


async def test_modes_breakers_and_weights_over_grpc_and_the_cli(h: Healing):
    await refused(
        h.control.SetAutomationMode(pb.SetAutomationModeRequest(mode="yolo")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await refused(
        h.control.SetAutomationMode(pb.SetAutomationModeRequest(mode="auto", action="nope")),
        grpc.StatusCode.NOT_FOUND,
    )
    r = await h.control.SetAutomationMode(pb.SetAutomationModeRequest(mode="approve"))
    assert r.automation_mode == "approve"
    code, text = await h.cli("automation", "auto", "--action", "notify")
    assert code == 0 and "notify: auto" in text
    actions = await h.query.ListActions(pb.ListActionsRequest())
    modes = {a.name: a.mode for a in actions.actions}
    assert modes["notify"] == "auto" and modes["replay_missing"] == "approve"
    assert len(actions.actions) >= 10

    await refused(
        h.control.SetBreaker(pb.SetBreakerRequest(source="ibm", state="open")),
        grpc.StatusCode.NOT_FOUND,
    )
    await refused(
        h.control.SetBreaker(pb.SetBreakerRequest(source="aws", state="ajar")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    code, text = await h.cli("breaker", "aws", "open", "--reason", "maintenance")
    assert code == 0 and "aws: open (by hand): maintenance" in text
    bad = await refused(
        h.control.TriggerAction(
            pb.TriggerActionRequest(action="replay_missing", target="aws", force=True)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "breaker of aws is open" in bad["target"]

    bad = await refused(
        h.control.SetWeights(pb.SetWeightsRequest(weights={"vibes": 1.0})),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "vibes" in bad["weights"]
    w = await h.control.SetWeights(pb.SetWeightsRequest(weights={"cost": 3.0, "mttr_seconds": 1.0}))
    assert w.weighting == "manual" and w.weights["cost"] == pytest.approx(0.75)
    code, text = await h.cli("weights")
    assert code == 0 and text.startswith("entropy weights")
    code, text = await h.cli("actions", "list")
    assert code == 0 and "replay_missing" in text and "BREAKER" in text


async def test_approve_and_reject_refuse_unknown_and_settled_decisions(h: Healing):
    await refused(
        h.control.ApproveDecision(pb.ApproveDecisionRequest(id="d-424242")),
        grpc.StatusCode.NOT_FOUND,
    )
    done = await h.control.TriggerAction(
        pb.TriggerActionRequest(
            action="notify", target="aws", params={"message": "hello"}, force=True
        )
    )
    bad = await refused(
        h.control.RejectDecision(pb.RejectDecisionRequest(id=done.decision.id)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "not pending approval" in bad["id"]
    await run(h.daemon, h.clock, 2)
    assert any("hello" in text for _, _, text in h.daemon.runtime.notifications)
    await refused(h.query.GetTrace(pb.GetTraceRequest(trace_id="nope")), grpc.StatusCode.NOT_FOUND)
    await refused(
        h.query.ListDecisions(pb.ListDecisionsRequest(filter="colour=red")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_garbage_bytes_to_trigger_action_execute_nothing(h: Healing):
    async with grpc.aio.insecure_channel(h.address) as ch:
        raw = ch.unary_unary("/helios.v1.ControlService/TriggerAction")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await raw(b"\x0a\xff\xff\xff garbage")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "helios.v1.TriggerActionRequest" in caught.value.details()
    assert not h.daemon.loop.audit.executions and not h.daemon.loop.audit.decisions


async def test_a_pending_approval_survives_a_restart_and_still_expires():
    from tests.test_heal import start

    daemon, clock = await start("approve")
    try:
        await run(daemon, clock, 14 * 60)
        pending = [
            d for d in daemon.loop.audit.decisions.values() if d.status == "pending_approval"
        ]
        assert len(pending) == 1
    finally:
        await daemon.stop()
    again = make_daemon(daemon.config, clock)  # same data_dir, same clock
    await again.start()
    try:
        kept = again.loop.audit.decisions[pending[0].id]
        assert kept.status == "pending_approval" and kept.alternatives[0].action == "replay_missing"
        assert kept.spans[0].stage == "anomaly"
        clock.set(kept.expires_at + 1)
        await run(again, clock, 2)
        assert again.loop.audit.decisions[kept.id].status == "expired"
        with pytest.raises(ActionError, match="is expired, not pending approval"):
            await again.services.operator.approve(kept.id, "carol")
    finally:
        await again.stop()


async def test_concurrent_requests_cannot_both_pass_the_policy(h: Healing, monkeypatch):
    loop = h.daemon.loop
    original = h.daemon.runtime.missing_copies

    async def slow_index(*args):  # an index that really waits (SQLite, Redis)
        await asyncio.sleep(0.01)
        return await original(*args)

    monkeypatch.setattr(h.daemon.runtime, "missing_copies", slow_index)
    operator = h.daemon.services.operator
    results = await asyncio.gather(
        *(
            operator.trigger("replay_missing", "aws", {}, False, f"op{i}", force=True)
            for i in range(3)
        ),
        loop.cycle(),
        return_exceptions=True,
    )
    ran = [r for r in results[:3] if isinstance(r, tuple)]
    refused = [r for r in results[:3] if isinstance(r, ActionError)]
    assert len(ran) == 1 and len(refused) == 2
    assert all(str(e).startswith(("cooldown", "concurrency")) for e in refused)
    await run(h.daemon, h.clock, 3)
    replayed = h.simulator.traffic.truth.replayed
    assert replayed and max(replayed.values()) == 1


async def test_statuses_come_as_enums_beside_their_strings(h: Healing):
    trigger = await h.control.TriggerAction(
        pb.TriggerActionRequest(
            action="notify", target="aws", dry_run=True, requested_by="eve", force=True
        )
    )
    d, x = trigger.decision, trigger.execution
    assert (d.status, d.decision_status) == ("dry_run", pb.DECISION_STATUS_DRY_RUN)
    assert (x.status, x.execution_status) == ("dry_run", pb.EXECUTION_STATUS_DRY_RUN)
    assert x.verification_status == pb.VERIFICATION_STATUS_NOT_APPLICABLE
    assert (d.diagnosis.kind, d.diagnosis.issue_kind) == ("manual", pb.ISSUE_KIND_MANUAL)
    assert (d.mode, d.automation_mode) == ("manual", pb.AUTOMATION_MODE_UNSPECIFIED)
    # The enum wins over the string in a request, and the answer carries both.
    set_mode = await h.control.SetAutomationMode(
        pb.SetAutomationModeRequest(mode="observe", automation_mode=pb.AUTOMATION_MODE_AUTO)
    )
    assert set_mode.automation_mode == "auto"
    actions = await h.query.ListActions(pb.ListActionsRequest())
    assert actions.default_mode == pb.AUTOMATION_MODE_AUTO
    assert {a.automation_mode for a in actions.actions} == {pb.AUTOMATION_MODE_AUTO}
    breakers = {b.source: b for b in actions.breakers}
    assert (breakers["aws"].state, breakers["aws"].breaker_state) == (
        "closed",
        pb.BREAKER_STATE_CLOSED,
    )


async def test_an_unknown_automation_mode_number_is_invalid_argument_naming_the_field(h: Healing):
    bad = await refused(
        h.control.SetAutomationMode(pb.SetAutomationModeRequest(automation_mode=99)),  # type: ignore[arg-type]
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "not a helios.v1.AutomationMode" in bad["automation_mode"]
    actions = await h.query.ListActions(pb.ListActionsRequest())
    assert actions.automation_mode == "observe"  # nothing changed
