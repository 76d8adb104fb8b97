"""Console views of the decide-and-heal loop: Decisions (each ranking with its
rationale and trace) and Recovery (automation mode, pending approvals, running and past
executions, breakers, the action catalogue, a manual trigger, notifications)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from helios.daemon.audit import Decision
from helios.daemon.domain import MODES, DecisionStatus, Verification
from helios.daemon.errors import RequestError
from helios.daemon.readmodels import Catalogue
from helios.daemon.services import Services
from helios.daemon.types import CRITERIA
from helios.ui.widgets import clock_text as _clock
from helios.ui.widgets import columns as _columns
from nicegui import ui

BREAKER_COLORS = {"closed": "green", "open": "red", "half_open": "orange"}
STATUS_COLORS = {
    "executed": "green",
    "pending_approval": "orange",
    "not_executed": "grey",
    "rejected": "red",
    "expired": "red",
    "dry_run": "blue",
}


def _diagnosis(d: Decision) -> str:
    return str(d.diagnosis)


def decision_rows(decisions: list[Decision]) -> list[dict[str, Any]]:
    return [
        {
            "id": d.id,
            "time": _clock(d.created_at),
            "diagnosis": _diagnosis(d),
            "chosen": f"{d.chosen}({d.target})" if d.chosen else "-",
            "mode": d.mode,
            "status": d.status.value,
            "outcome": d.outcome or "-",
            "mttr": f"{d.mttr_seconds:.1f} s" if d.outcome == Verification.VERIFIED else "-",
            "reason": d.reason[:80],
        }
        for d in reversed(decisions)
    ]


def ranking_rows(d: Decision) -> list[dict[str, Any]]:
    rows = []
    for a in d.alternatives:
        c = a.criteria
        rows.append(
            {
                "key": f"{a.action}|{a.target}",
                "rank": a.rank or "-",
                "action": a.action,
                "target": a.target,
                "mttr_s": f"{c.get('mttr_seconds', 0):.0f}",
                "qos_impact": f"{c.get('qos_impact', 0):.3f}",
                "success_rate": f"{c.get('success_rate', 0):.3f}",
                "cost": f"{c.get('cost', 0):.2f}",
                "score": f"{a.score:.4f}" if a.rank else "-",
                "note": ("chosen" if a.rank == 1 else "")
                if a.eligible
                else f"not eligible: {a.reason}",
            }
        )
    return rows


def _notify_error(exc: RequestError) -> None:
    ui.notify(f"{exc.field}: {exc}", type="negative", multi_line=True)


def decisions_page(services: Services, header: Callable[[str], None], selected: str) -> None:
    header("Decisions")
    reads = services.reads
    chosen = {"id": selected}
    with ui.row().classes("w-full gap-4 items-start no-wrap"):
        with ui.card().classes("w-1/2"):
            ui.label("Decisions, newest first (click one)").classes("font-semibold")
            table = ui.table(
                columns=_columns("id", "time", "diagnosis", "chosen", "status", "outcome", "mttr"),
                rows=[],
                row_key="id",
                pagination=15,
            ).classes("w-full helios-decisions")
        detail = ui.column().classes("w-1/2 helios-decision-detail")

    @ui.refreshable
    def show() -> None:
        try:
            d = reads.decision(chosen["id"] or "")
        except RequestError:
            d = None
        if d is None:
            ui.label(
                "No decision selected. The loop decides when a detector raises an anomaly; "
                "operators trigger actions from the Recovery page."
            ).classes("text-gray-500")
            return
        with ui.card().classes("w-full"):
            ui.label(f"{d.id}: {_diagnosis(d)}").classes(
                "text-lg font-semibold helios-decision-title"
            )
            ui.label(
                f"trace {d.trace_id} | {_clock(d.created_at)} | by {d.decided_by} | mode {d.mode}"
            ).classes("text-sm text-gray-600")
            diag = d.diagnosis
            if diag.diagnosed:
                ui.label(f"confidence {diag.confidence:.2f}, onset {diag.onset}")
            for line in diag.evidence:
                ui.label(f"- {line}").classes("text-sm font-mono")
            ui.badge(d.status.value, color=STATUS_COLORS.get(d.status, "grey")).classes(
                "helios-decision-status"
            )
            ui.label(d.reason).classes("text-sm")
            if d.status is DecisionStatus.PENDING_APPROVAL:
                _approval_buttons(services, d, refresh=lambda: show.refresh())
        with ui.card().classes("w-full"):
            weights = ", ".join(f"{k} {d.weights.get(k, 0):.3f}" for k in CRITERIA)
            ui.label(f"Ranking: {d.method}, {d.weighting} weights ({weights})").classes(
                "font-semibold"
            )
            ui.label(
                "MTTR, QoS impact and cost are costs (lower is better); success rate is a benefit."
            ).classes("text-xs text-gray-500")
            ui.table(
                columns=_columns(
                    "rank",
                    "action",
                    "target",
                    "mttr_s",
                    "qos_impact",
                    "success_rate",
                    "cost",
                    "score",
                    "note",
                ),
                rows=ranking_rows(d),
                row_key="key",
            ).classes("w-full helios-ranking")
        with ui.card().classes("w-full"):
            ui.label("Trace").classes("font-semibold")
            with ui.timeline(side="right").classes("helios-trace"):
                for span in d.spans:
                    ui.timeline_entry(span.text, title=span.stage, subtitle=_clock(span.at))
            for xid in d.execution_ids:
                x = reads.execution(xid)
                if x is not None:
                    ui.label(
                        f"{x.id}: {x.status}, verification {x.verification}: "
                        f"{x.verification_detail or x.result or x.error}"
                    ).classes("text-sm helios-execution-line")

    with detail:
        show()

    def pick(event: Any) -> None:
        row = event.args[1] if isinstance(event.args, list) and len(event.args) > 1 else {}
        chosen["id"] = row.get("id", "")
        show.refresh()

    table.on("rowClick", pick)

    def refresh() -> None:
        decisions = reads.recent_decisions()
        table.rows = decision_rows(decisions)
        table.update()
        if not chosen["id"] and decisions:
            chosen["id"] = decisions[-1].id
            show.refresh()

    refresh()
    ui.timer(2.0, refresh)


def _approval_buttons(services: Services, d: Decision, refresh: Callable[[], object]) -> None:
    operator = services.operator

    async def approve() -> None:
        try:
            result = await operator.approve(d.id, "console")
            ui.notify(f"{d.id}: {result.status}", type="positive")
        except RequestError as exc:
            _notify_error(exc)
        refresh()

    def reject() -> None:
        try:
            operator.reject(d.id, "console", "rejected in the console")
            ui.notify(f"{d.id}: rejected")
        except RequestError as exc:
            _notify_error(exc)
        refresh()

    with ui.row():
        ui.button("Approve", on_click=approve, color="green").classes(f"helios-approve-{d.id}")
        ui.button("Reject", on_click=reject, color="red").classes(f"helios-reject-{d.id}")


def recovery_page(services: Services, header: Callable[[str], None]) -> None:
    header("Recovery")
    reads, operator = services.reads, services.operator
    with ui.row().classes("w-full gap-4 items-stretch"):
        with ui.card().classes("min-w-80"):
            ui.label("Automation").classes("font-semibold")
            mode = ui.toggle(list(MODES), value=reads.automation_mode())
            mode.classes("helios-mode")

            def set_mode() -> None:
                try:
                    operator.set_mode(str(mode.value))
                except RequestError as exc:
                    _notify_error(exc)
                    return
                ui.notify(f"automation: {mode.value}")

            mode.on_value_change(set_mode)
            weights_label = ui.label("-").classes("text-sm helios-weights")
        with ui.card().classes("grow"):
            ui.label("Pending approvals").classes("font-semibold")
            approvals = ui.column().classes("w-full helios-approvals")
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
            action = ui.select(names, value="notify", label="action").classes(
                "w-full helios-trigger-action"
            )
            target = ui.input("target", value="aws").classes("w-full helios-trigger-target")
            params = ui.input("params (k=v, comma separated)").classes(
                "w-full helios-trigger-params"
            )
            dry = ui.checkbox("dry run", value=True).classes("helios-trigger-dry")
            outcome = ui.label("").classes("text-sm helios-trigger-result")

            async def trigger() -> None:
                pairs = [p.strip() for p in (params.value or "").split(",") if p.strip()]
                values: dict[str, str] = {}
                for pair in pairs:
                    key, sep, value = pair.partition("=")
                    if not sep:
                        outcome.set_text(f"params: {pair!r} is not k=v")
                        return
                    values[key.strip()] = value.strip()
                try:
                    d, x = await operator.trigger(
                        str(action.value),
                        str(target.value or ""),
                        values,
                        bool(dry.value),
                        "console",
                    )
                except RequestError as exc:
                    outcome.set_text(f"refused ({exc.field}): {exc}")
                    return
                outcome.set_text(f"{d.id} / {x.id}: {x.status}: {x.plan}")
                refresh()

            ui.button("Trigger", on_click=trigger).classes("helios-trigger")
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
                try:
                    operator.set_breaker(source, state, "set in the console")
                except RequestError as exc:
                    _notify_error(exc)
                refresh()

            return apply

        for state in ("open", "closed", "auto"):
            ui.button(state, on_click=setter(state)).props("dense flat").classes(
                f"helios-breaker-{source}-{state}"
            )

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
                            f"{_diagnosis(d)} -> {d.chosen}({d.target}), "
                            f"expires {_clock(d.expires_at)}"
                        )
                        _approval_buttons(services, d, refresh)
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
