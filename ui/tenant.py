"""A tenant's console (/tenant): its own outcomes, events and incidents (the decisions
taken on its own objectives), nothing of the deployment.

A key or token scoped to a tenant signs in like any other and lands here; the gate
(helios.ui.gate) sends it nowhere else. Every read runs as the signed-in identity, so
the service layer applies the same tenant rules as the API (helios.daemon.tenants):
another tenant's event is not found, a filter naming another tenant is refused. A
deployment-wide identity may open the page too and pick any tenant.
"""

from __future__ import annotations

from collections import Counter

from helios.daemon.audit import Decision
from helios.daemon.errors import RequestError
from helios.daemon.identity import Identity, acting_as
from helios.daemon.model import OutcomeKind
from helios.daemon.readmodels import ReadModels
from helios.daemon.tenants import unscoped
from helios.ui.widgets import CLOCK, lookup_card
from helios.ui.widgets import clock_text as _clock
from helios.ui.widgets import columns as _columns
from nicegui import ui

NEWEST = 1000  # outcomes the page counts and lists


def tenant_page(reads: ReadModels, user: Identity) -> None:
    with ui.header().classes("items-center bg-slate-900 text-white"):
        ui.label("HELIOS").classes("text-xl font-bold tracking-wide")
        own = user.tenant
        ui.label(f"tenant {own}" if own else "a tenant's view").classes(
            "text-sm opacity-80 helios-tenant-name"
        )
        ui.space()
        if CLOCK.simulated:
            ui.label(f"{CLOCK.note()}: times shown are wall time").classes(
                "text-xs bg-amber-600 rounded px-2"
            )
        if not own:
            ui.link("Overview", "/").classes("text-white no-underline px-2")
        ui.link("sign out", "/logout").classes("text-white text-xs no-underline px-2 opacity-70")
    if not user.may("read"):
        ui.label(f"{user.name} ({user.role}) may not read events (read)")
        return
    with ui.row().classes("w-full items-end gap-4"):
        pick = ui.input("tenant", value=own).classes("w-48 helios-tenant-pick")
        if own:
            pick.disable()  # a tenant's key reads its own tenant, whatever is typed
        query = ui.input("filter (as ListOutcomes: kind=MISSING source=aws ...)").classes(
            "grow helios-tenant-filter"
        )
    problem = ui.label("").classes("text-red-600 helios-tenant-problem")
    with ui.row().classes("w-full gap-4"):
        counts = {
            kind.name: ui.label("-").classes(f"text-xl font-semibold helios-tenant-{kind.name}")
            for kind in OutcomeKind
        }
    for kind, label in counts.items():
        label.tooltip(f"{kind} among the newest {NEWEST} outcomes shown")
    with ui.row().classes("w-full gap-4 items-start"):
        with ui.card().classes("grow"):
            ui.label(f"Outcomes (newest {NEWEST})").classes("font-semibold")
            table = ui.table(
                columns=_columns("time", "kind", "event", "sources"),
                rows=[],
                row_key="seq",
                pagination=15,
            ).classes("w-full helios-tenant-outcomes")
        lookup_card(reads, "helios-tenant", lambda: tenant(), user)

    with ui.card().classes("w-full"):
        ui.label("Incidents: decisions on this tenant's own objectives").classes("font-semibold")
        incidents = ui.table(
            columns=_columns("id", "time", "diagnosis", "action", "status", "outcome"),
            rows=[],
            row_key="id",
            pagination=10,
        ).classes("w-full helios-tenant-decisions")

    def tenant() -> str:
        return own or (pick.value or "").strip()

    async def refresh() -> None:
        terms = (query.value or "").strip()
        if not own and tenant():
            terms = f"tenant={tenant()} {terms}"
        try:
            with acting_as(user):
                found, _ = await reads.outcomes(terms, NEWEST, "")
        except RequestError as exc:
            problem.set_text(str(exc))
            return
        problem.set_text("")
        kinds = Counter(o.kind.name for o in found)
        for kind, label in counts.items():
            label.set_text(f"{kind} {kinds[kind]:,}")
        table.rows = [
            {
                "seq": o.sequence,
                "time": _clock(o.time),
                "kind": o.kind.name,
                "event": unscoped(o.event_id)[1],
                "sources": ",".join(o.sources),
            }
            for o in found
        ]
        table.update()
        decided: list[Decision] = []
        if tenant():  # a deployment-wide identity sees incidents once it picks a tenant
            with acting_as(user):
                decided, _ = reads.decisions(f"tenant={tenant()}", 100, "")
        incidents.rows = [
            {
                "id": d.id,
                "time": _clock(d.created_at),
                "diagnosis": str(d.diagnosis),
                "action": f"{d.chosen}({d.target})" if d.chosen else "-",
                "status": d.status.value,
                "outcome": d.outcome or "-",
            }
            for d in decided
        ]
        incidents.update()

    query.on("keydown.enter", refresh)
    pick.on("keydown.enter", refresh)
    ui.timer(3.0, refresh)  # and at once
