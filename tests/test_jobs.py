"""The job registry: every periodic task with its last run, result, failures, next run."""

from __future__ import annotations

import asyncio

import pytest
from helios.daemon.clock import ManualClock
from helios.daemon.jobs import Scheduler
from helios.v1 import helios_pb2 as pb
from helios.v1 import helios_pb2_grpc as pb_grpc

from tests.conftest import serve


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_job_runs_every_interval_and_a_failure_is_recorded_not_fatal():
    clock = ManualClock(start=0.0)
    scheduler = Scheduler(clock)
    calls = []

    async def tick() -> str:
        calls.append(clock.now())
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return f"run {len(calls)}"

    job = scheduler.add("tick", 10.0, tick, "a test job")
    scheduler.start()
    try:
        await settle()
        assert calls == [] and job.due_in() == 10.0
        for _ in range(3):
            clock.advance(10.0)
            await settle()
        assert calls == [10.0, 20.0, 30.0]
        assert (job.runs, job.failures, job.last_result, job.last_error) == (3, 1, "run 3", "")
        assert job.next_run == 40.0 and job.last_run == 30.0
        clock.advance(10.0)
        await settle()
        assert job.runs == 4
    finally:
        await scheduler.stop()
    assert scheduler.jobs["tick"].failures == 1


async def test_run_at_start_and_bad_registrations():
    clock = ManualClock(start=0.0)
    scheduler = Scheduler(clock)

    async def ok() -> str:
        return "done"

    job = scheduler.add("now", 5.0, ok, "runs at once", run_at_start=True)
    with pytest.raises(ValueError, match="exists already"):
        scheduler.add("now", 5.0, ok, "again")
    with pytest.raises(ValueError, match="interval must be > 0"):
        scheduler.add("never", 0.0, ok, "zero")
    scheduler.start()
    await settle()
    await scheduler.stop()
    assert (job.runs, job.last_result) == (1, "done")


async def test_the_daemons_jobs_are_listed_over_grpc():
    async for served in serve('[detectors]\nenabled = ["ewma"]\n'):
        served.clock.advance(1.0)
        await settle()
        jobs = (await pb_grpc.QueryServiceStub(served.channel).ListJobs(pb.ListJobsRequest())).jobs
        names = [j.name for j in jobs]
        assert names == [
            "window-sweep",
            "index-ttl",
            "bloom-save",
            "detection",
            "model-health",
            "mape-k",
            "verify",
            "breakers",
            "slo",
            "weights",
            "rates",
            "gc-freeze",
        ]
        by_name = {j.name: j for j in jobs}
        assert by_name["window-sweep"].runs >= 1
        assert "declared MISSING" in by_name["window-sweep"].last_result
        assert by_name["model-health"].last_result.startswith("ewma: warming up")
        assert by_name["rates"].clock == "wall" and by_name["index-ttl"].clock == "daemon"
        assert not by_name["index-ttl"].HasField("last_run")  # not due yet


def test_helios_jobs_prints_the_registry(daemon_process):
    from tests.test_cli import helios

    result = helios(daemon_process, "jobs")
    assert result.returncode == 0
    assert "window-sweep" in result.stdout and "NEXT IN" in result.stdout
