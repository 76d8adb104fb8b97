"""The console's Recovery page: automation mode, pending approvals, running and past
executions, breakers, the action catalogue, a manual trigger, notifications. The
Decisions page is helios.ui.decisions."""

from __future__ import annotations

from collections.abc import Callable

from helios.daemon.domain import MODES
from helios.daemon.errors import RequestError
from helios.daemon.identity import Identity, acting_as
from helios.daemon.readmodels import Catalogue
from helios.daemon.services import Services
from helios.daemon.types import CRITERIA
from helios.ui.decisions import approval_buttons, diagnosis_text, notify_error
from helios.ui.widgets import CLOCK, allowed
from helios.ui.widgets import clock_text as _clock
from helios.ui.widgets import columns as _columns
from nicegui import ui

BREAKER_COLORS = {"closed": "green", "open": "red", "half_open": "orange"}


def recovery_page(services: Services, header: Callable[[str], None], user: Identity) -> None:
    header("Recovery")
    reads, operator = services.reads, services.operator
    may_operate = user.may("operate")
    with ui.row().classes("w-full gap-4 items-stretch"):
        with ui.card().classes("min-w-80"):
            ui.label("Automation").classes("font-semibold")
            mode = ui.toggle(list(MODES), value=reads.automation_mode())
            mode.classes("helios-mode")

            def set_mode() -> None:
                if not allowed(user, "operate"):
                    return
                try:
                    with acting_as(user):
                        operator.set_mode(str(mode.value))
                except RequestError as exc:
                    notify_error(exc)
                    return
                ui.notify(f"automation: {mode.value}")

            mode.on_value_change(set_mode)
            if not may_operate:
                mode.disable()
            weights_label = ui.label("-").classes("text-sm helios-weights")
        with ui.card().classes("grow"):
            ui.label("Pending approvals").classes("font-semibold")
            approvals = ui.column().classes("w-full helios-approvals")
            cooling = ui.label("").classes("text-sm text-gray-600 helios-cooldowns")
        with ui.card().classes("min-w-96"):
            ui.label("Circuit breakers").classes("font-semibold")
            breakers = ui.column().classes("w-full helios-breakers")
    with ui.row().classes("w-full gap-4 items-start no-wrap"):
        with ui.card().classes("w-2/3"):
            ui.label("Executions (timeline, newest first)").classes("font-semibold")
            executions = ui.table(
                columns=_columns(
                    "id",
                    "started",
                    "action",
                    "target",
                    "size",
                    "status",
                    "verification",
                    "mttr",
                    "detail",
                ),
                rows=[],
                row_key="id",
                pagination=10,
            ).classes("w-full helios-executions")
        with ui.card().classes("w-1/3"):
            ui.label("Trigger an action").classes("font-semibold")
            names = [a.name for a in reads.actions()]
            action = ui.select(names, value=names[0] if names else None, label="action").classes(
                "w-full helios-trigger-action"
            )
            target = ui.input("target", value="aws").classes("w-full helios-trigger-target")
            params = ui.input("params (k=v, comma separated)").classes(
                "w-full helios-trigger-params"
            )
            dry = ui.checkbox("dry run", value=True).classes("helios-trigger-dry")
            force = ui.checkbox("force past observe (admin)", value=False).classes(
                "helios-trigger-force"
            )
            if not user.may("admin"):
                force.disable()
            outcome = ui.label("").classes("text-sm helios-trigger-result")

            async def trigger() -> None:
                if not allowed(user, "operate"):
                    outcome.set_text(f"refused: {user.name} ({user.role}) may not operate")
                    return
                pairs = [p.strip() for p in (params.value or "").split(",") if p.strip()]
                values: dict[str, str] = {}
                for pair in pairs:
                    key, sep, value = pair.partition("=")
                    if not sep:
                        outcome.set_text(f"params: {pair!r} is not k=v")
                        return
                    values[key.strip()] = value.strip()
                try:
                    with acting_as(user):
                        d, x = await operator.trigger(
                            str(action.value),
                            str(target.value or ""),
                            values,
                            bool(dry.value),
                            user.name,
                            force=bool(force.value),
                        )
                except RequestError as exc:
                    outcome.set_text(f"refused ({exc.field}): {exc}")
                    return
                outcome.set_text(f"{d.id} / {x.id}: {x.status}: {x.plan}")
                refresh()

            button = ui.button("Trigger", on_click=trigger).classes("helios-trigger")
            if not may_operate:
                button.disable()
    with ui.row().classes("w-full gap-4 items-start no-wrap"):
        with ui.card().classes("w-2/3"):
            ui.label("Action catalogue").classes("font-semibold")
            catalogue = ui.table(
                columns=_columns(
                    "action",
                    "mode",
                    "fixes",
                    "mttr_s",
                    "qos_impact",
                    "success_rate",
                    "cost",
                    "runs",
                    "cooldown",
                    "blast_radius",
                    "running",
                ),
                rows=[],
                row_key="action",
            ).classes("w-full helios-catalogue")
        with ui.card().classes("w-1/3"):
            ui.label("Notifications").classes("font-semibold")
            feed = ui.column().classes("w-full text-sm helios-notifications")

    def breaker_buttons(source: str) -> None:
        def setter(state: str) -> Callable[[], None]:
            def apply() -> None:
                if not allowed(user, "operate"):
                    return
                try:
                    with acting_as(user):
                        operator.set_breaker(source, state, f"set in the console by {user.name}")
                except RequestError as exc:
                    notify_error(exc)
                refresh()

            return apply

        for state in ("open", "closed", "auto"):
            ui.button(state, on_click=setter(state)).props(
                "dense flat" + ("" if may_operate else " disable")
            ).classes(f"helios-breaker-{source}-{state}")

    last: dict[str, object] = {"pending": None}
    breaker_rows: dict[str, tuple[ui.badge, ui.label]] = {}
    with breakers:
        for source in reads.source_names():
            with ui.row().classes("items-center"):
                badge = ui.badge("-").classes(f"helios-breaker-{source}")
                label = ui.label(source).classes("w-48")
                breaker_rows[source] = (badge, label)
                breaker_buttons(source)

    def refresh() -> None:
        view = reads.catalogue(notifications=12)
        weights_label.set_text(
            f"{view.method}, {view.weighting} weights: "
            + ", ".join(f"{k} {view.weights[k]:.2f}" for k in CRITERIA)
        )
        cooling.set_text(
            "cooling down: "
            + "; ".join(
                f"{action}({target}) may run again {CLOCK.countdown(ready)}"
                for action, target, ready in services.observe.cooldowns()
            )
            if services.observe.cooldowns()
            else "no action is cooling down"
        )
        pending = reads.pending_approvals()
        # Rebuilt only when the set changes: a button must not vanish under the pointer.
        ids = tuple(d.id for d in pending)
        if ids != last["pending"]:
            last["pending"] = ids
            approvals.clear()
            with approvals:
                if not pending:
                    ui.label("Nothing waits for approval.").classes("text-gray-500")
                for d in pending[-10:]:
                    with ui.row().classes("items-center helios-pending"):
                        ui.link(f"{d.id}", f"/decisions?id={d.id}")
                        ui.label(
                            f"{diagnosis_text(d)} -> {d.chosen}({d.target}), "
                            f"expires {CLOCK.countdown(d.expires_at)}"
                        )
                        approval_buttons(services, d, refresh, user)
        for b in view.breakers:
            badge, label = breaker_rows[b.source]
            badge.set_text(b.state.value)
            badge.props(f"color={BREAKER_COLORS[b.state]}")
            over = " failed over" if b.failed_over else ""
            by_hand = ", by hand" if b.forced else ""
            label.set_text(f"{b.source}{over} ({b.ratio:.0%} failed{by_hand})")
        _tables(view)

    def _tables(view: Catalogue) -> None:
        executions.rows = [
            {
                "id": x.id,
                "started": _clock(x.started_at),
                "action": x.action + (" (dry run)" if x.dry_run else ""),
                "target": x.target,
                "size": x.size,
                "status": x.status.value,
                "verification": x.verification.value,
                "mttr": f"{x.mttr_seconds:.1f} s" if x.verification == "verified" else "-",
                "detail": (x.error or x.verification_detail or x.result)[:80],
            }
            for x in reversed(reads.recent_executions())
        ]
        executions.update()
        catalogue.rows = [
            {
                "action": a.name,
                "mode": a.mode,
                "fixes": ", ".join(a.issue_kinds),
                "mttr_s": f"{a.criteria.mttr_seconds:.0f}",
                "qos_impact": f"{a.criteria.qos_impact:.3f}",
                "success_rate": f"{a.criteria.success_rate:.3f}",
                "cost": f"{a.criteria.cost:.2f}",
                "runs": f"{a.successes}/{a.runs}",
                "cooldown": f"{a.settings.cooldown_seconds:g} s",
                "blast_radius": a.settings.blast_radius,
                "running": a.running,
            }
            for a in view.actions
        ]
        catalogue.update()
        feed.clear()
        with feed:
            for n in view.notifications[::-1]:
                ui.label(f"{_clock(n.at)} {n.level}: {n.text}")

    refresh()
    ui.timer(2.0, refresh)
