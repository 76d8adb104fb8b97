"""Durable by default: an acknowledged copy survives kill -9 and SIGTERM, a restart
resumes open windows and fabricates no outcome, operator state persists, the data
directory is locked, and a corrupt store stops heliosd with a clear error."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import grpc
import orjson
import pytest
from helios.daemon.clock import ManualClock
from helios.daemon.query import OutcomeQuery
from helios.v1 import helios_pb2 as pb
from helios.v1 import helios_pb2_grpc as pb_grpc

from tests.conftest import DaemonProcess, heliosd_bin, start_daemon_process, stop_daemon_process
from tests.helpers import copy, make_config, make_daemon

WINDOW = """
[reconcile]
window_seconds = 10.0
grace_seconds = 0.5
"""


def event(event_id: str, source: str) -> pb.Event:
    return pb.Event(
        event_id=event_id,
        source=source,
        event_type="order.created",
        payload=orjson.dumps({"id": event_id, "amount": 3}),
    )


def restart(tmp: Path) -> DaemonProcess:
    (tmp / "ready").unlink(missing_ok=True)
    return start_daemon_process(tmp, WINDOW)


def publish_until_stopped(address: str, acked: list[str], stop: threading.Event) -> None:
    """Publish aws+gcp copies of fresh events, one small batch at a time, and record
    the events whose batch was acknowledged, until the daemon goes away."""
    with grpc.insecure_channel(address) as channel:
        ingest = pb_grpc.IngestServiceStub(channel)
        n = 0
        while not stop.is_set():
            ids = [f"d-{n + i}" for i in range(20)]
            n += 20
            batch = [event(e, s) for e in ids for s in ("aws", "gcp")]
            try:
                reply = ingest.Publish(pb.PublishRequest(events=batch), timeout=5)
            except grpc.RpcError:
                return
            assert reply.accepted == len(batch)
            acked.extend(ids)
            time.sleep(0.01)  # a few thousand events: the windows must not close meanwhile


def outcomes_of(address: str) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    with grpc.insecure_channel(address) as channel:
        query = pb_grpc.QueryServiceStub(channel)
        found: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        token = ""
        while True:
            page = query.ListOutcomes(
                pb.ListOutcomesRequest(page_size=1000, page_token=token), timeout=10
            )
            for o in page.outcomes:
                kind = pb.OutcomeKind.Name(o.kind).removeprefix("OUTCOME_KIND_")
                found.setdefault(o.event_id, []).append((kind, tuple(o.sources)))
            token = page.next_page_token
            if not token:
                return found


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill -9", "SIGTERM"])
def test_every_acknowledged_copy_survives_and_no_outcome_is_fabricated(tmp_path: Path, how: str):
    daemon = start_daemon_process(tmp_path, WINDOW)
    acked: list[str] = []
    stop = threading.Event()
    writer = threading.Thread(target=publish_until_stopped, args=(daemon.address, acked, stop))
    writer.start()
    time.sleep(1.5)  # mid-ingest: batches are in flight when the signal lands
    daemon.proc.send_signal(signal.SIGKILL if how == "kill -9" else signal.SIGTERM)
    daemon.proc.wait(15)
    stop.set()
    writer.join(10)
    assert len(acked) >= 200, "the writer should have been acknowledged for a while"
    assert len(acked) < 20_000, "too many events to check within a window"
    before = set(acked)

    daemon = restart(tmp_path)
    try:
        with grpc.insecure_channel(daemon.address) as channel:
            query = pb_grpc.QueryServiceStub(channel)
            # Every acknowledged copy is there and its window still open (a sample, with
            # the last ones acknowledged before the signal; the outcomes check all).
            for event_id in acked[:: max(1, len(acked) // 100)] + acked[-50:]:
                record = query.GetEvent(pb.GetEventRequest(event_id=event_id), timeout=5).event
                assert {c.source for c in record.copies} == {"aws", "gcp"}, event_id
                assert record.status == pb.EVENT_STATUS_PENDING, event_id
            # azure now delivers the even events; the odd ones it never will.
            ingest = pb_grpc.IngestServiceStub(channel)
            even = [e for i, e in enumerate(acked) if i % 2 == 0]
            for start in range(0, len(even), 500):
                chunk = [event(e, "azure") for e in even[start : start + 500]]
                ingest.Publish(pb.PublishRequest(events=chunk), timeout=10)
        time.sleep(10.0 + 0.5 + 1.5)  # the odd windows close
        found = outcomes_of(daemon.address)
    finally:
        stop_daemon_process(daemon)
    for i, event_id in enumerate(acked):  # as an uninterrupted run decides them
        want = [("COMPLETE", ())] if i % 2 == 0 else [("MISSING", ("azure",))]
        assert found.get(event_id) == want, (event_id, found.get(event_id))
    unacked = set(found) - before
    for event_id in unacked:  # a batch in flight at the kill: all of it or none of it
        assert found[event_id] == [("MISSING", ("azure",))], found[event_id]


def test_a_second_heliosd_on_the_same_data_directory_refuses_to_start(tmp_path: Path):
    first = start_daemon_process(tmp_path, WINDOW)
    try:
        config = tmp_path / "second.toml"
        config.write_text(
            f'[daemon]\ngrpc_address = "127.0.0.1:0"\nconsole_address = ""\n'
            f'data_dir = "{tmp_path / "data"}"\n'
        )
        second = subprocess.run(
            [heliosd_bin(), "-c", str(config), "run"], capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 1
        assert f"data directory {tmp_path / 'data'} is in use by another heliosd" in second.stderr
        assert f"pid {first.proc.pid}" in second.stderr
    finally:
        stop_daemon_process(first)
    # kill -9 leaves the lock file behind; the kernel released the lock itself.
    again = start_daemon_process(tmp_path, WINDOW)
    again.proc.kill()
    again.proc.wait(10)
    (tmp_path / "ready").unlink()
    stop_daemon_process(start_daemon_process(tmp_path, WINDOW))


def test_a_corrupt_index_file_stops_heliosd_with_a_clear_error(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "index.sqlite3").write_bytes(os.urandom(8192))
    config = tmp_path / "helios.toml"
    config.write_text(
        f'[daemon]\ngrpc_address = "127.0.0.1:0"\nconsole_address = ""\ndata_dir = "{data}"\n'
    )
    done = subprocess.run(
        [heliosd_bin(), "-c", str(config), "run"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert f"{data / 'index.sqlite3'} is not a usable SQLite database" in done.stderr
    assert "move it aside" in done.stderr
    assert "Traceback" not in done.stderr


async def test_operator_state_survives_a_restart(tmp_path: Path):
    config = make_config(INDEX__BACKEND='"sqlite"', DAEMON__DATA_DIR=f'"{tmp_path}"')
    daemon = make_daemon(config, ManualClock())
    await daemon.start()
    operator = daemon.services.operator
    operator.set_breaker("aws", "open", "maintenance")
    operator.pause_source("gcp")
    daemon.runtime.set_throttle("azure", 50.0)
    daemon.runtime.set_failover("azure", True)
    daemon.runtime.quarantine(["e-1", "e-2"], "payload disagrees")
    await daemon.stop()

    again = make_daemon(config, ManualClock())
    await again.start()
    try:
        reads = again.services.reads
        aws = reads.breaker_view("aws")
        assert (aws.state, aws.forced, aws.reason) == ("open", True, "maintenance")
        assert reads.source("gcp").paused
        catalogue = reads.catalogue()
        assert catalogue.throttles == {"azure": 50.0}
        assert reads.breaker_view("azure").failed_over
        assert catalogue.quarantined_events == 2
        # and they act: gcp's copies are refused, azure is no longer awaited
        result = await again.admission.admit([copy("x", "gcp")])
        assert result.accepted == 0 and result.rejections[0].code == "source_paused"
    finally:
        await again.stop()


async def test_a_restart_in_the_middle_decides_what_an_uninterrupted_run_decides(tmp_path):
    """The same traffic through a memory daemon and through a sqlite daemon that is
    stopped and started again halfway: the same outcomes, in the same order."""
    plan = []  # (seconds to advance, copies) steps with every kind of outcome
    for i in range(60):
        sources = ("aws", "gcp", "azure") if i % 4 else ("aws", "gcp")
        if i % 9 == 0:  # azure's payload disagrees: INCONSISTENT
            plan.append((1.0, [copy(f"e{i}", "aws"), copy(f"e{i}", "gcp")]))
            plan.append((0.5, [copy(f"e{i}", "azure", payload={"other": True})]))
        else:
            plan.append((1.0, [copy(f"e{i}", s) for s in sources]))
        if i % 7 == 0:
            plan.append((0.5, [copy(f"e{i}", "aws")]))  # a duplicate
        if i % 4 == 0 and i >= 20 and (i - 20) % 9:
            plan.append((0.0, [copy(f"e{i - 20}", "azure")]))  # LATE, after MISSING

    async def run(backend: str, data: Path, restart_at: int | None) -> list[tuple]:
        config = make_config(INDEX__BACKEND=f'"{backend}"', DAEMON__DATA_DIR=f'"{data}"')
        clock = ManualClock()
        daemon = make_daemon(config, clock)
        await daemon.start()
        for step, (seconds, copies) in enumerate(plan):
            if step == restart_at:
                await daemon.stop()
                daemon = make_daemon(config, clock)  # the same time: no downtime
                await daemon.start()
            await daemon.advance(seconds, step=0.25)
            await daemon.admission.admit(copies)
            await daemon.pipeline.drain()
        await daemon.advance(20.0, step=0.25)
        await daemon.pipeline.drain()
        found, _ = await daemon.index.list_outcomes(OutcomeQuery(), 10_000, None)
        await daemon.stop()
        return [(o.sequence, o.kind.name, o.event_id, o.sources) for o in reversed(found)]

    memory = await run("memory", tmp_path / "m", None)
    durable = await run("sqlite", tmp_path / "s", len(plan) // 2)
    kinds = {k for _, k, _, _ in memory}
    assert kinds == {"COMPLETE", "MISSING", "DUPLICATE", "INCONSISTENT", "LATE"}, kinds
    assert durable == memory


async def test_the_store_holds_what_memory_holds_not_a_ttl_of_writes(tmp_path: Path):
    config = make_config(
        INDEX__BACKEND='"sqlite"', INDEX__MAX_RECORDS="50", DAEMON__DATA_DIR=f'"{tmp_path}"'
    )
    clock = ManualClock()
    daemon = make_daemon(config, clock)
    await daemon.start()
    for i in range(500):  # 500 complete events, one batch a second
        await daemon.admission.admit([copy(f"e{i}", s) for s in ("aws", "gcp", "azure")])
        await daemon.advance(1.0, step=1.0)
    await daemon.admission.admit([copy("open-1", "aws")])  # an open window to keep
    await daemon.advance(1.0, step=1.0)
    await daemon.index.expire(clock.now(), daemon.reconciler.oldest_open() or clock.now())
    segments = daemon.index.describe()
    await daemon.stop()
    import sqlite3

    with sqlite3.connect(tmp_path / "index.sqlite3") as db:
        rows = db.execute("SELECT COUNT(*) FROM segments").fetchone()[0]
    assert rows <= 60, (rows, segments)  # about one per kept record, not 500
    again = make_daemon(config, clock)
    await again.start()
    try:
        assert await again.index.count() == 50
        assert (await again.index.get_many(["e499", "e450", "e449"])).keys() == {"e499", "e450"}
        assert "open-1" in again.reconciler.open
    finally:
        await again.stop()
