"""The console's Jobs page: every scheduled job with its last run ("N s ago") and a
countdown to its next, in wall time even when the job runs on a simulated clock."""

from __future__ import annotations

import time
from collections.abc import Callable

from helios.daemon.readmodels import ReadModels
from helios.ui.widgets import CLOCK, columns, duration_text, wall_text
from nicegui import ui


def _wall(seconds: float, clock_name: str) -> float:
    """Seconds of a job's clock as wall seconds."""
    return seconds if clock_name == "wall" else CLOCK.wall_seconds(seconds)


def _ago(at: float | None, clock_name: str) -> str:
    if not at:
        return "-"
    wall = at if clock_name == "wall" else CLOCK.wall(at)
    return f"{duration_text(time.time() - wall)} ago ({wall_text(wall)})"


def jobs_page(reads: ReadModels, header: Callable[[str], None]) -> None:
    header("Jobs")
    with ui.card().classes("w-full"):
        ui.label("Scheduled jobs").classes("font-semibold")
        table = ui.table(
            columns=columns(
                "job", "every", "last run", "next in", "runs", "failures", "last result"
            ),
            rows=[],
            row_key="job",
        ).classes("w-full helios-jobs")

    def refresh() -> None:
        table.rows = [
            {
                "job": job.name,
                "every": f"{job.interval:g} s ({job.clock_name} clock)",
                "last run": _ago(job.last_run, job.clock_name),
                "next in": f"{_wall(job.due_in(), job.clock_name):.1f} s",
                "runs": job.runs,
                "failures": job.failures,
                "last result": f"ERROR {job.last_error}" if job.last_error else job.last_result,
            }
            for job in reads.jobs()
        ]
        table.update()

    refresh()
    ui.timer(1.0, refresh)
