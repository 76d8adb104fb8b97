"""Small helpers every console page uses."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from helios.daemon.errors import RequestError
from helios.daemon.identity import Identity, acting_as
from helios.daemon.model import EventRecord, Status
from helios.daemon.readmodels import ReadModels
from helios.daemon.tenants import unscoped
from nicegui import ui


class Clocks:
    """The daemon's clock seen from the wall: on a simulated clock (the demo's 10x) a
    time in the daemon's seconds is shown as the wall time it corresponds to, and a
    deadline as a countdown in wall seconds. One per console (set by Console)."""

    def __init__(self, now: Callable[[], float], speed: float = 1.0, simulated: bool = False):
        self.set(now, speed, simulated)

    def set(self, now: Callable[[], float], speed: float, simulated: bool) -> None:
        self.now, self.speed, self.simulated = now, speed, simulated

    def wall(self, t: float) -> float:
        return time.time() - (self.now() - t) / self.speed

    def wall_seconds(self, daemon_seconds: float) -> float:
        return daemon_seconds / self.speed

    def countdown(self, deadline: float) -> str:
        """'in 2 m 40 s (17:46:30 UTC)' for a deadline on the daemon's clock."""
        left = (deadline - self.now()) / self.speed
        if left <= 0:
            return "now (expired)"
        at = datetime.fromtimestamp(time.time() + left, UTC).strftime("%H:%M:%S")
        return f"in {duration_text(left)} (at {at} UTC)"

    def note(self) -> str:
        return f"simulated clock, {self.speed:g}x" if self.simulated else ""


CLOCK = Clocks(time.time)


def duration_text(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} m {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} m"


def clock_text(t: float) -> str:
    """HH:MM:SS (UTC, wall) of a time on the daemon's clock; "-" for none."""
    return datetime.fromtimestamp(CLOCK.wall(t), UTC).strftime("%H:%M:%S") if t else "-"


def wall_text(t: float) -> str:
    """HH:MM:SS (UTC) of a wall-clock time (the audit log, dead letters)."""
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S") if t else "-"


def columns(*names: str) -> list[dict[str, str]]:
    """Table columns whose label and row field are the name itself."""
    return [{"name": n, "label": n, "field": n, "align": "left"} for n in names]


def allowed(user: Identity, permission: str) -> bool:
    """Whether the signed-in identity may do this; says so in the page when not (the
    buttons are disabled too: this is the check that holds if a click gets through)."""
    if user.may(permission):
        return True
    ui.notify(f"{user.name} ({user.role}) may not {permission}", type="negative")
    return False


def record_rows(record: EventRecord, sources: list[str]) -> list[dict[str, Any]]:
    rows = []
    for i, copy in enumerate(record.copies):
        if copy is None:
            continue
        arrived_at, _produced_at, digest, _size = copy
        rows.append(
            {
                "source": sources[i],
                "arrived": clock_text(arrived_at),
                "after_first_ms": round((arrived_at - record.first_seen) * 1000, 1),
                "hash": digest.hex(),
                "count": record.count(i),
                "late": "yes" if record.is_late(i) else "",
            }
        )
    return rows


def lookup_card(
    reads: ReadModels,
    prefix: str,
    tenant: Callable[[], str] | None = None,
    user: Identity | None = None,
) -> None:
    """The "Look up an event" card: an event_id box (Enter or Find) and the event drawn
    below it by show_event. Its parts carry the classes <prefix>-lookup, <prefix>-find
    and <prefix>-lookup-result; `tenant` gives the tenant at each lookup."""
    with ui.card().classes("min-w-96"):
        ui.label("Look up an event").classes("font-semibold")
        box = ui.input("event_id").classes(f"w-full {prefix}-lookup")
        result = ui.column().classes(f"w-full {prefix}-lookup-result")

        async def find() -> None:
            await show_event(result, reads, box.value or "", tenant() if tenant else "", user)

        box.on("keydown.enter", find)
        ui.button("Find", on_click=find).classes(f"{prefix}-find")


async def show_event(
    into: ui.column,
    reads: ReadModels,
    event_id: str,
    tenant: str = "",
    user: Identity | None = None,
) -> None:
    """An event looked up by id (in `tenant`, read as `user`), drawn into `into`: its
    status, each copy and its outcomes, or why there is none."""
    into.clear()
    event_id = event_id.strip()
    with into:
        if not event_id:
            ui.label("Type an event_id first.").classes("text-gray-500")
            return
        try:
            with acting_as(user) if user is not None else contextlib.nullcontext():
                record = (await reads.event(event_id, tenant)).record
        except RequestError as exc:
            text = str(exc)
            ui.label(text[:1].upper() + text[1:])
            return
        status = Status(record.status).name
        ui.label(f"{unscoped(record.event_id)[1]} - {record.event_type}").classes("font-mono")
        ui.label(f"status {status}").classes(f"helios-status-{status}")
        ui.table(
            columns=columns("source", "arrived", "after_first_ms", "hash", "count", "late"),
            rows=record_rows(record, list(reads.source_names())),
            row_key="source",
        ).classes("w-full")
        ui.label(f"outcomes: {', '.join(o.kind.name for o in record.outcomes) or 'none yet'}")
