"""Clean runs and logs that tell the story, on real heliosd processes: a busy gRPC port
is an error at start, the banner names the addresses in use and whether the state is
fresh or resumed, JSON logs carry the decision's trace id, and demo.sh refuses what it
does not know."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import grpc
from helios.v1 import helios_pb2 as pb
from helios.v1 import helios_pb2_grpc as pb_grpc

from tests.conftest import heliosd_bin, start_daemon_process, stop_daemon_process

ROOT = Path(__file__).resolve().parent.parent


def test_a_busy_grpc_port_is_an_error_and_the_banner_names_what_is_in_use(tmp_path):
    (tmp_path / "a").mkdir()
    first = start_daemon_process(tmp_path / "a")
    try:
        banner = first.log.read_text()
        assert f"gRPC     127.0.0.1:{first.grpc_port}" in banner
        assert "(fresh: a new data directory)" in banner
        assert "clock    real (wall) time" in banner
        (tmp_path / "b").mkdir()
        config = tmp_path / "b" / "helios.toml"
        config.write_text(
            f"""
[daemon]
grpc_address = "127.0.0.1:{first.grpc_port}"
console_address = ""
data_dir = "{tmp_path / "b" / "data"}"
[security]
auth = "none"
"""
        )
        second = subprocess.run(
            [heliosd_bin(), "-c", str(config), "run"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path / "b",
        )
        assert second.returncode == 1, second.stderr
        assert f"cannot listen for gRPC on 127.0.0.1:{first.grpc_port}" in second.stderr
        # the first one still serves its clients alone
        with grpc.insecure_channel(first.address) as channel:
            stats = pb_grpc.QueryServiceStub(channel).GetStats(pb.GetStatsRequest(), timeout=10)
            assert stats.version
    finally:
        stop_daemon_process(first)
    (tmp_path / "a" / "ready").unlink()
    again = start_daemon_process(tmp_path / "a")  # the same data directory: resumed
    try:
        assert "(resumed: a previous run's state)" in again.log.read_text()
    finally:
        stop_daemon_process(again)


def test_json_logs_tell_a_decision_with_its_trace_id(tmp_path):
    daemon = start_daemon_process(tmp_path, '[log]\nformat = "json"\n')
    try:
        with grpc.insecure_channel(daemon.address) as channel:
            done = pb_grpc.ControlServiceStub(channel).TriggerAction(
                pb.TriggerActionRequest(action="notify", target="aws", force=True), timeout=10
            )
            query = pb_grpc.QueryServiceStub(channel)
            levels = query.ListLogLevels(pb.ListLogLevelsRequest(), timeout=10)
            assert levels.format == "json"
        trace_id = done.decision.trace_id
    finally:
        stop_daemon_process(daemon)
    lines = [json.loads(line) for line in daemon.log.read_text().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(x) for x in lines)
    story = [x for x in lines if x.get("trace_id") == trace_id]
    stages = [x["stage"] for x in story]
    assert "decision" in stages and "execution" in stages, stages
    assert all(x["logger"] == "helios.decisions" and x["level"] == "INFO" for x in story)
    assert story[0]["decision"] == done.decision.id


def test_demo_sh_refuses_an_unknown_argument():
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh"), "--bogus"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "unknown argument --bogus" in done.stderr


def test_free_port_helper_really_is_free():  # the busy-port test depends on bind refusing
    with socket.socket() as a:
        a.bind(("127.0.0.1", 0))
        port = a.getsockname()[1]
        with socket.socket() as b:
            try:
                b.bind(("127.0.0.1", port))
                raise AssertionError("two sockets bound one port")
            except OSError:
                pass
