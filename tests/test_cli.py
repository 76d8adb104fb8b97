"""The helios CLI against a real heliosd process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import DaemonProcess
from tests.helpers import free_port


def helios(
    daemon: DaemonProcess | None, *args: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("helios", path=os.path.dirname(sys.executable))
    assert exe
    address = daemon.address if daemon else f"127.0.0.1:{free_port()}"
    return subprocess.run(
        [exe, "--address", address, *args],
        input=stdin,
        text=True,
        capture_output=True,
        timeout=timeout,
    )


def lines(*events: dict) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)


def test_ingest_reports_rejections_by_line_and_exits_1(daemon_process):
    text = (
        lines(
            {
                "event_id": "cli-1",
                "source": "aws",
                "event_type": "order.created",
                "payload": {"a": 1},
            },
            {
                "event_id": "cli-1",
                "source": "gcp",
                "event_type": "order.created",
                "payload": {"a": 1},
            },
        )
        + "this is not json\n"
        + lines(
            {
                "event_id": "cli-1",
                "source": "mainframe",
                "event_type": "order.created",
                "payload": {},
            },
            {
                "event_id": "cli-1",
                "source": "azure",
                "event_type": "order.created",
                "payload": '{"a":1}',
                "produced_at": "2026-01-01T00:00:00Z",
            },
        )
    )
    result = helios(daemon_process, "ingest", "-", stdin=text)
    assert result.returncode == 1
    assert "accepted 3, rejected 2" in result.stdout
    assert "line 3: not a valid event" in result.stderr
    assert "line 4: source: unknown source 'mainframe'" in result.stderr
    ok = helios(
        daemon_process,
        "ingest",
        "-",
        stdin=lines(
            {"event_id": "cli-2", "source": "aws", "event_type": "order.created", "payload": {}}
        ),
    )
    assert ok.returncode == 0 and "accepted 1, rejected 0" in ok.stdout


def test_a_batch_of_only_bad_lines_is_reported_line_by_line(daemon_process, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        lines(
            {"event_id": "", "source": "aws", "event_type": "t", "payload": {}},
            {"event_id": "x", "source": "aws", "event_type": "t", "payload": "{"},
        )
    )
    result = helios(daemon_process, "ingest", str(path))
    assert result.returncode == 1
    assert "line 1: event_id: event_id is empty" in result.stderr
    assert "line 2: payload: payload is not JSON" in result.stderr
    missing = helios(daemon_process, "ingest", str(tmp_path / "absent.jsonl"))
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_events_get_outcomes_list_and_status(daemon_process):
    helios(
        daemon_process,
        "ingest",
        "-",
        stdin=lines(
            *(
                {
                    "event_id": "cli-3",
                    "source": s,
                    "event_type": "order.created",
                    "payload": {"n": 3},
                }
                for s in ("aws", "gcp", "azure")
            )
        ),
    )
    time.sleep(0.5)
    got = helios(daemon_process, "events", "get", "cli-3")
    assert got.returncode == 0, got.stderr
    assert "status COMPLETE" in got.stdout and "aws->gcp" in got.stdout
    as_json = json.loads(helios(daemon_process, "--json", "events", "get", "cli-3").stdout)
    assert [c["source"] for c in as_json["copies"]] == ["aws", "gcp", "azure"]
    listed = helios(daemon_process, "outcomes", "list", "--kind", "COMPLETE", "--limit", "5")
    assert listed.returncode == 0 and "cli-3" in listed.stdout
    status = helios(daemon_process, "status")
    assert status.returncode == 0 and "COMPLETENESS" in status.stdout
    assert "bloom: 1 slices" in status.stdout and "per lookup" in status.stdout
    assert "0 slices set aside" in status.stdout
    unknown = helios(daemon_process, "events", "get", "no-such-event")
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr
    bad = helios(daemon_process, "outcomes", "list", "--kind", "PURPLE")
    assert bad.returncode == 1 and "unknown kind 'PURPLE'" in bad.stderr


def test_watch_prints_outcomes_as_they_happen(daemon_process):
    exe = shutil.which("helios", path=os.path.dirname(sys.executable))
    watch = subprocess.Popen(
        # Only this test's event: earlier tests' events may still be closing.
        [
            *(exe, "--address", daemon_process.address, "watch", "--kind", "MISSING"),
            *("--filter", "event_id=cli-4", "--count", "1"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    helios(
        daemon_process,
        "ingest",
        "-",
        stdin=lines(
            {"event_id": "cli-4", "source": "aws", "event_type": "order.created", "payload": {}}
        ),
    )
    out, _ = watch.communicate(timeout=30)  # window 2 s + grace 0.5 s in this daemon
    assert watch.returncode == 0
    assert "MISSING" in out and "cli-4" in out and "gcp,azure" in out


def test_sources_pause_and_resume(daemon_process):
    assert "gcp: paused" in helios(daemon_process, "sources", "pause", "gcp").stdout
    refused = helios(
        daemon_process,
        "ingest",
        "-",
        stdin=lines(
            {"event_id": "cli-5", "source": "gcp", "event_type": "order.created", "payload": {}}
        ),
    )
    assert refused.returncode == 1 and "paused" in refused.stderr
    assert "gcp: running" in helios(daemon_process, "sources", "resume", "gcp").stdout
    assert helios(daemon_process, "sources", "pause", "oracle").returncode == 1


def test_an_unreachable_daemon_exits_3():
    for command in (["status"], ["bench", "--events", "100"]):
        result = helios(None, *command)
        assert result.returncode == 3 and "cannot reach heliosd" in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_bench_scores_its_own_faults_perfectly(tmp_path):
    from tests.conftest import start_daemon_process, stop_daemon_process

    daemon = start_daemon_process(
        tmp_path,
        """
[[routes]]
event_type = "bench.*"
window_seconds = 1.0
grace_seconds = 0.5
""",
    )
    try:
        result = helios(daemon, "--json", "bench", "--events", "20000", "--settle", "20")
        full = helios(
            daemon, "--json", "bench", "--events", "5000", "--settle", "20", "--end-to-end"
        )
    finally:
        stop_daemon_process(daemon)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["correct"] and report["rejected"] == 0
    assert report["decided"] == report["decided_checked"] >= 2000  # a sample, via GetEvent
    for kind in ("MISSING", "DUPLICATE", "INCONSISTENT"):
        assert report["scores"][kind]["truth"] > 0
        assert report["scores"][kind]["precision"] == report["scores"][kind]["recall"] == 1.0
    assert full.returncode == 0, full.stdout + full.stderr
    e2e = json.loads(full.stdout)
    assert e2e["correct"] and e2e["decided"] == 5000 and e2e["end_to_end"]
    assert e2e["complete_latency_ms"]["count"] > 4000


def test_heliosd_names_a_taken_port_and_exits_1(tmp_path):
    import socket

    from tests.conftest import heliosd_bin

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for key, console in (("grpc_address", '""'), ("console_address", f'"127.0.0.1:{port}"')):
            grpc_port = port if key == "grpc_address" else free_port()
            config = tmp_path / "taken.toml"
            config.write_text(
                f'[daemon]\ngrpc_address = "127.0.0.1:{grpc_port}"\nconsole_address = {console}\n'
                f'data_dir = "{tmp_path / "data"}"\n'
            )
            result = subprocess.run(
                [heliosd_bin(), "-c", str(config), "run"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == 1, result.stderr
            assert f"daemon.{key}" in result.stderr and "Traceback" not in result.stderr


def test_ingest_names_a_non_utf8_line_and_an_impossible_time_instead_of_a_traceback(
    daemon_process, tmp_path
):
    good = json.dumps({"event_id": "u8-1", "source": "aws", "event_type": "t", "payload": {}})
    far = json.dumps({"event_id": "u8-2", "source": "aws", "event_type": "t", "produced_at": 1e300})
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(good.encode() + b"\n" + b'{"event_id": "\xff\xfe"}\n' + far.encode() + b"\n")
    done = helios(daemon_process, "ingest", str(path))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    text = done.stdout + done.stderr
    assert "line 2" in text and "line 3" in text and "accepted 1" in text, text
    missing = helios(daemon_process, "ingest", str(tmp_path))  # a directory
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_a_bad_tenant_name_is_bad_usage_and_the_client_knows_the_daemons_rule(capsys):
    from helios.control import cli, common
    from helios.daemon import config

    assert common.TENANT_PATTERN == config.TENANT_PATTERN
    with pytest.raises(SystemExit) as exited:
        cli.main(["--address", "127.0.0.1:1", "decisions", "list", "--tenant", "Bad Name"])
    assert exited.value.code == 2
    assert "'Bad Name' is not a tenant" in capsys.readouterr().err
