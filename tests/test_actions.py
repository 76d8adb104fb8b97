"""Each built-in recovery action against the real thing it drives (a local HTTP server
standing in for the Kubernetes API and for webhooks; a real command; the daemon), and the
safety policy: durable cooldowns and limits, timeouts, retries, breakers."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helios.daemon.clock import ManualClock
from helios.daemon.model import OutcomeKind
from helios.daemon.safety import ActionSettings, Breakers, BreakerSettings, PolicyState
from helios.daemon.types import ActionError, ActionPlan, ActionResult, Criteria, QueueFull
from helios.plugins.actions import BaseAction
from helios.plugins.actions.builtin import BUILTIN
from helios.plugins.sources.simulator import SimulatorSource

from tests.helpers import copy, feed, make_config, make_daemon
from tests.test_heal import run


class Recorder(BaseHTTPRequestHandler):
    """Records every request; answers from `replies` (path -> (status, JSON body))."""

    requests: list[dict[str, Any]]
    replies: dict[str, tuple[int, Any]]

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.requests.append(
            {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": json.loads(body) if body else None,
            }
        )
        status, reply = self.replies.get(self.path.split("?")[0], (200, {}))
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = _handle

    def log_message(self, *args: Any) -> None:
        pass


async def finished(daemon: Any, x: Any) -> None:
    """Wait for an execution to end, moving the daemon's manual clock for backoffs."""
    for _ in range(300):
        if x.status != "running":
            return
        await asyncio.sleep(0.01)
        daemon.clock.advance(0.5)
    raise AssertionError(f"{x.id} still running")


@pytest.fixture
def http() -> Iterator[tuple[str, type[Recorder]]]:
    handler = type("H", (Recorder,), {"requests": [], "replies": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()


def test_eleven_builtin_actions_each_with_kinds_and_criteria():
    names = [cls.name for cls in BUILTIN]
    assert len(set(names)) == len(names) >= 10
    for cls in BUILTIN:
        action = cls({})
        assert action.issue_kinds and action.description
        assert all(v > 0 for v in (action.defaults.mttr_seconds, action.defaults.cost))
    # Criteria start from config.
    assert BUILTIN[0]({"mttr_seconds": 5}).defaults.mttr_seconds == 5.0


SCALE = "/apis/apps/v1/namespaces/streaming/deployments/aws-consumer/scale"


async def test_scale_consumers_sends_the_exact_kubernetes_scale_requests(http):
    url, handler = http
    scale = {"apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": 2}}
    handler.replies[SCALE] = (200, scale)
    config = f"""
[actions.options.scale_consumers]
host = "{url}"
token = "s3cret"
namespace = "streaming"
deployments = {{ aws = "aws-consumer" }}
step = 2
max_replicas = 10
"""
    daemon = make_daemon(make_config(config))
    loop = daemon.loop
    assert "names no Deployment for 'gcp'" in loop.planner.entries["scale_consumers"].action.check(
        "gcp", loop.planner.context("scale_consumers")
    )
    handler.replies[SCALE] = (200, scale)
    _d, x = await daemon.services.operator.trigger(
        "scale_consumers", "aws", {}, False, "test", force=True
    )
    await finished(daemon, x)
    reads = [r for r in handler.requests if r["method"] == "GET"]
    patches = [r for r in handler.requests if r["method"] == "PATCH"]
    assert reads[0]["path"] == SCALE
    assert len(patches) >= 1
    patch = patches[0]
    assert patch["path"] == SCALE
    assert patch["body"] == {"spec": {"replicas": 4}}
    assert patch["headers"]["authorization"] == "Bearer s3cret"
    assert patch["headers"]["content-type"] == "application/strategic-merge-patch+json"
    assert x.plan == "scale streaming/aws-consumer from 2 to 4 replicas"
    # The fake API answers replicas=2 (unchanged): the action reports a failure.
    assert x.status == "failed" and x.attempts == 3
    with pytest.raises(ActionError, match="over max_replicas 10"):
        await daemon.services.operator.trigger(
            "scale_consumers", "aws", {"replicas": "50"}, True, "test", force=True
        )


async def test_webhook_posts_the_runbook_call_and_retries_with_backoff(http):
    url, handler = http
    handler.replies["/hook"] = (500, {"error": "busy"})
    config = f"""
[actions.options.webhook]
url = "{url}/hook"
headers = {{ X-Token = "t" }}
retries = 2
backoff_seconds = 1.0
"""
    clock = ManualClock()
    daemon = make_daemon(make_config(config), clock)
    d, x = await daemon.services.operator.trigger(
        "webhook", "aws", {"note": "see runbook 7"}, False, "me", force=True
    )
    await finished(daemon, x)
    assert [r["method"] for r in handler.requests] == ["POST"] * 3
    first = handler.requests[0]
    assert first["headers"]["x-token"] == "t"
    assert first["body"] == {
        "action": "webhook",
        "target": "aws",
        "trace_id": d.trace_id,
        "decision_id": d.id,
        "diagnosis": "",  # a manual trigger has no diagnosis; a caller cannot set one
        "params": {
            "note": "see runbook 7",
            "diagnosis": "",
            "trace_id": d.trace_id,
            "decision_id": d.id,
        },
    }
    assert x.status == "failed" and x.attempts == 3 and "HTTP 500" in x.error
    assert daemon.loop.planner.entries["webhook"].stats.runs[-1][0] is False  # learned


async def test_exec_runs_the_configured_command(tmp_path: Path):
    marker = tmp_path / "ran"
    script = (
        f"import sys; open({str(marker)!r}, 'w').write(sys.argv[1]); sys.exit(int(sys.argv[2]))"
    )
    config = f"""
[actions.options.exec]
command = ["{sys.executable}", "-c", "{script}", "{{target}}", "0"]
retries = 0
"""
    daemon = make_daemon(make_config(config))
    _d, x = await daemon.services.operator.trigger("exec", "gcp", {}, False, "me", force=True)
    await finished(daemon, x)
    assert x.status == "succeeded" and marker.read_text() == "gcp"
    assert "exited with 0" in x.result


async def test_timeouts_and_a_failing_action_are_recorded_and_free_their_slot():
    class Slow(BaseAction):
        name = "slow"
        defaults = Criteria(1.0, 0.1, 0.5, 1.0)

        async def execute(self, plan: ActionPlan, context: Any) -> ActionResult:
            await asyncio.sleep(10)
            return ActionResult(True, "never")

    daemon = make_daemon(make_config())
    loop = daemon.loop
    from helios.daemon.plan import Entry

    settings = ActionSettings(timeout_seconds=0.05, retries=1, backoff_seconds=0.0)
    loop.planner.entries["slow"] = Entry("slow", Slow({}), "test", settings, {})
    _d, x = await daemon.services.operator.trigger("slow", "aws", {}, False, "me", force=True)
    assert loop.policy.running == {x.id: "slow"}
    await finished(daemon, x)
    assert x.status == "timed_out" and x.attempts == 2 and "timed out" in x.error
    assert not loop.policy.running and x.verification == "failed"


def test_cooldown_concurrency_and_rate_limits_survive_a_restart(tmp_path: Path):
    settings = ActionSettings(cooldown_seconds=60, max_concurrent=1, max_per_hour=2)
    policy = PolicyState(str(tmp_path))
    assert policy.refusal("replay_missing", "aws", settings, 1000.0) is None
    policy.started("x-1", "replay_missing", "aws", 1000.0)
    assert "concurrency" in policy.refusal("replay_missing", "gcp", settings, 1001.0)
    policy.finished("x-1")
    assert "cooldown" in policy.refusal("replay_missing", "aws", settings, 1030.0)
    policy.started("x-2", "replay_missing", "gcp", 1100.0)
    policy.finished("x-2")
    policy.started("x-3", "replay_missing", "azure", 1200.0)  # running at the "crash"

    again = PolicyState(str(tmp_path))  # a restart
    again.open()
    assert "cooldown" in again.refusal("replay_missing", "azure", settings, 1230.0)
    assert again.interrupted == ["x-3"] and not again.running  # the slot is freed
    assert "rate limit: 3" in again.refusal("replay_missing", "aws", settings, 1300.0)
    assert again.refusal("replay_missing", "aws", settings, 1200.0 + 3601.0) is None
    (tmp_path / "decisions" / "policy.json").write_text("{torn")
    broken = PolicyState(str(tmp_path))
    broken.open()
    assert "not restored" in broken.load_note


def test_a_breaker_trips_at_the_threshold_half_opens_and_closes():
    b = Breakers(
        ["aws"],
        BreakerSettings(failure_threshold=0.5, min_volume=10, window_seconds=30, open_seconds=20),
    )
    expected = delivered = 0
    for t in range(10):  # healthy
        expected += 10
        delivered += 10
        assert not b.observe(float(t), {"aws": (expected, delivered)})
    expected += 200  # 200 expected, none delivered: the ratio crosses 50% in this step
    changed = b.observe(10.0, {"aws": (expected, delivered)})
    assert [c.state for c in changed] == ["open"] and b.state("aws") == "open"
    for t in range(11, 31):
        expected += 10
        delivered += 10
        b.observe(float(t), {"aws": (expected, delivered)})
    assert b.state("aws") == "half_open"
    for t in range(31, 34):
        expected += 10
        delivered += 10
        b.observe(float(t), {"aws": (expected, delivered)})
    assert b.state("aws") == "closed" and b.breakers["aws"].trips == 1
    b.set("aws", "open", "by hand", 40.0)
    b.observe(100.0, {"aws": (expected + 100, delivered + 100)})
    assert b.state("aws") == "open"  # forced: no automatic change
    b.set("aws", "auto", "done", 101.0)
    assert not b.breakers["aws"].forced


async def test_the_daemon_trips_a_breaker_within_5_s_of_the_threshold():
    clock = ManualClock()
    daemon = make_daemon(
        make_config("[decision]\nbreaker_min_volume = 5\nbreaker_window_seconds = 30.0\n"), clock
    )
    await daemon.start()
    try:
        for i in range(20):  # aws never delivers
            await feed(daemon, copy(f"e{i}", "gcp"), copy(f"e{i}", "azure"))
        await run(daemon, clock, 11.5, step=0.5)  # before window (10 s) + grace (2 s)
        assert daemon.breakers.state("aws") == "closed"
        declared_at = None
        for _ in range(40):
            await run(daemon, clock, 0.25, step=0.25)
            if declared_at is None and daemon.reconciler.outcome_counts[OutcomeKind.MISSING]:
                declared_at = clock.now()
            if daemon.breakers.state("aws") == "open":
                break
        assert declared_at is not None and daemon.breakers.state("aws") == "open"
        assert clock.now() - declared_at <= 5.0
        assert any("breaker of aws is open" in n[2] for n in daemon.runtime.notifications)
    finally:
        await daemon.stop()


async def test_throttle_failover_quarantine_and_restart_act_on_the_daemon():
    clock = ManualClock()
    config = make_config(
        '[sources.inputs.simulator]\nplugin = "simulator"\nrate_per_second = 5.0\n'
    )
    daemon = make_daemon(config, clock)
    await daemon.start()
    try:
        await daemon.services.operator.trigger(
            "throttle_ingest", "aws", {"per_second": "2"}, False, "me", force=True
        )
        await asyncio.sleep(0.01)
        assert daemon.pipeline.throttles["aws"][0] == 2.0
        # A full bucket lets one batch through, even a big one; then the rate holds.
        await daemon.admission.admit([copy(f"t{i}", "aws") for i in range(3)])
        with pytest.raises(QueueFull, match="aws is throttled to 2 copies/s"):
            await daemon.admission.admit([copy("t9", "aws")])
        assert daemon.pipeline.rejections["throttled"] == 1
        await daemon.admission.admit([copy("g1", "gcp")])  # other sources flow
        daemon.runtime.set_throttle("aws", None)

        await daemon.services.operator.trigger(
            "failover_source", "azure", {}, False, "me", force=True
        )
        await asyncio.sleep(0.01)
        assert daemon.runtime.failed_over == {"azure"}
        await feed(daemon, copy("f1", "aws"), copy("f1", "gcp"))
        record = await daemon.runtime.get_event("f1")
        assert record.outcomes[-1].kind is OutcomeKind.COMPLETE  # azure no longer awaited
        assert not daemon.runtime.can_replay("azure")
        clock.advance(61)  # past the cooldown of failover_source on azure
        await daemon.services.operator.trigger(
            "failover_source", "azure", {"restore": "true"}, False, "me", force=True
        )
        await asyncio.sleep(0.01)
        assert not daemon.runtime.failed_over

        await feed(
            daemon,
            copy("q1", "aws", {"a": 1}),
            copy("q1", "gcp", {"a": 1}),
            copy("q1", "azure", {"a": 2}),
        )
        _d, x = await daemon.services.operator.trigger(
            "quarantine_event", "azure", {}, False, "me", force=True
        )
        await asyncio.sleep(0.01)
        assert x.size == 1 and daemon.runtime.quarantined["q1"].startswith(
            "inconsistent payloads from azure"
        )

        sim = daemon.inputs["simulator"]
        assert isinstance(sim, SimulatorSource)
        start = sim.traffic.start
        await run(daemon, clock, 2)
        await daemon.services.operator.trigger("restart_source", "gcp", {}, False, "me", force=True)
        await run(daemon, clock, 2)
        assert sim.restarts == 1 and sim.traffic.start == start  # the schedule stays
        assert sim.published > 0
    finally:
        await daemon.stop()


async def test_decisions_and_learning_survive_a_restart():
    clock = ManualClock()
    config = make_config()
    daemon = make_daemon(config, clock)
    d, x = await daemon.services.operator.trigger(
        "notify", "all", {"message": "hi"}, False, "me", force=True
    )
    await finished(daemon, x)
    assert x.status == "succeeded"
    again = make_daemon(config, ManualClock())
    again.loop.open()  # what start() reads back
    assert again.loop.audit.decisions[d.id].trace_id == d.trace_id
    assert again.loop.audit.executions[x.id].status == "succeeded"
    assert again.loop.audit.next_id("d") > d.id


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[actions.options]\nreboot = { x = 1 }\n",
            r"actions.options: \['reboot'\] are not actions",
        ),
        (
            "[actions.options]\nreplay_missing = { cooldown_seconds = -1 }\n",
            r"^actions.options.replay_missing.cooldown_seconds: Input should be greater",
        ),
        (
            '[actions.options]\nreplay_missing = { automation = "yolo" }\n',
            r"actions.options.replay_missing.automation: Input should be 'observe'",
        ),
        ('[decision]\nmethod = "magic"\n', r"decision.method: unknown MCDM method 'magic'"),
        ('[decision]\nweighting = "vibes"\n', r"decision.weighting: unknown weighting method"),
    ],
)
def test_bad_decision_config_names_the_key(text: str, message: str):
    from helios.daemon.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        make_daemon(make_config(text))


def test_qos_impact_is_measured_from_the_events_closed_around_an_action():
    from helios.daemon.audit import Execution
    from helios.daemon.metrics import MetricsMinute

    daemon = make_daemon(make_config())
    loop = daemon.loop
    for minute, closed in ((0.0, 100), (60.0, 100), (120.0, 100), (180.0, 70)):
        daemon.metrics.minutes.append(MetricsMinute(minute, {}, events_closed=closed))
    x = Execution("x-1", "d-1", "t", "throttle_ingest", "aws", started_at=150.0, finished_at=151.0)
    assert loop.verifier.measured_qos(x) == pytest.approx(0.3)
    early = Execution("x-2", "d-1", "t", "notify", "aws", started_at=200.0, finished_at=201.0)
    assert loop.verifier.measured_qos(early) is None  # the minute after it has not closed yet
    loop.verifier.learn(loop.planner.entries["throttle_ingest"], x, True)
    assert loop.planner.entries["throttle_ingest"].stats.runs[-1][2] == pytest.approx(0.3)


def test_the_replayed_record_is_durable_and_bounded(monkeypatch):
    import helios.daemon.runtime as runtime

    monkeypatch.setattr(runtime, "REPLAYED_KEPT", 100)
    config = make_config()
    daemon = make_daemon(config)
    for chunk in range(120):
        daemon.runtime.mark_replayed("aws", [f"e{chunk}-{i}" for i in range(100)])
    assert (
        len(daemon.runtime.replayed["aws"]) == 100 and "e119-99" in daemon.runtime.replayed["aws"]
    )
    lines = daemon.runtime._replayed_path.read_text().count("\\n")
    assert lines < 12_000  # compacted along the way, not 12,000 lines and growing
    again = make_daemon(config)
    again.runtime.open()
    assert list(again.runtime.replayed["aws"]) == list(daemon.runtime.replayed["aws"])


def test_an_action_without_execute_cannot_be_made():
    class Incomplete(BaseAction):
        name = "incomplete"

    with pytest.raises(TypeError, match="execute"):
        Incomplete()


async def test_exec_refuses_injection_and_targets_outside_its_allow_list(tmp_path: Path):
    marker = tmp_path / "pwned"
    shell = f"""
[actions.options.exec]
command = ["/bin/sh", "-c", "echo {{target}} > {marker}"]
retries = 0
"""
    daemon = make_daemon(make_config(shell))
    with pytest.raises(ActionError) as caught:
        await daemon.services.operator.trigger("exec", "aws", {}, False, "me", force=True)
    assert "whole argument" in str(caught.value) and not marker.exists()

    safe = """
[actions.options.exec]
command = ["/bin/echo", "{target}"]
targets = ["aws", "gcp"]
retries = 0
"""
    daemon = make_daemon(make_config(safe))
    for target in ("x; id > " + str(marker) + "; echo", "azure", "$(id)"):
        with pytest.raises(ActionError) as caught:
            await daemon.services.operator.trigger("exec", target, {}, False, "me", force=True)
        assert "actions.options.exec.targets" in str(caught.value)
    assert not marker.exists()


async def test_an_exec_timeout_kills_the_whole_process_group(tmp_path: Path):
    pids = tmp_path / "pids"
    script = (
        "import os, subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}'); time.sleep(60)"
    )
    config = f"""
[actions.options.exec]
command = ["{sys.executable}", "-c", "{script}"]
timeout_seconds = 1.0
retries = 0
"""
    daemon = make_daemon(make_config(config))
    _d, x = await daemon.services.operator.trigger("exec", "aws", {}, False, "me", force=True)
    deadline = time.monotonic() + 10
    while not pids.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    parent, child = (int(p) for p in pids.read_text().split())
    await finished(daemon, x)
    assert x.status == "timed_out"
    for pid in (parent, child):  # the grandchild too: the group was killed, not one pid
        for _ in range(50):
            if not _alive(pid):
                break
            await asyncio.sleep(0.05)
        assert not _alive(pid), f"process {pid} outlived the timeout"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie is dead, only not yet reaped
    except FileNotFoundError:
        return False


def test_an_exec_command_dies_with_a_killed_heliosd(tmp_path: Path):
    import os
    import signal

    import grpc
    from helios.v1 import helios_pb2 as pb
    from helios.v1 import helios_pb2_grpc as pb_grpc

    from tests.conftest import start_daemon_process

    pidfile = tmp_path / "exec.pid"
    script = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    daemon = start_daemon_process(
        tmp_path,
        f"""
[actions.options.exec]
command = ["{sys.executable}", "-c", "{script}"]
timeout_seconds = 120.0
""",
    )
    try:
        with grpc.insecure_channel(daemon.address) as channel:
            pb_grpc.ControlServiceStub(channel).TriggerAction(
                pb.TriggerActionRequest(action="exec", target="aws", force=True), timeout=10
            )
        deadline = time.monotonic() + 20
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = int(pidfile.read_text())
        assert _alive(pid)
        os.kill(daemon.proc.pid, signal.SIGKILL)
        daemon.proc.wait(10)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), "the exec command outlived heliosd (kill -9)"
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
