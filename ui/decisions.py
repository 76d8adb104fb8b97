"""The console's Decisions page: every decision with its diagnosis, the ranking and
its rationale, the trace, and approve/reject for those waiting for people."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from helios.daemon.audit import Decision
from helios.daemon.domain import DecisionStatus, Verification
from helios.daemon.errors import RequestError
from helios.daemon.identity import Identity, acting_as
from helios.daemon.services import Services
from helios.daemon.types import CRITERIA
from helios.ui.widgets import allowed
from helios.ui.widgets import clock_text as _clock
from helios.ui.widgets import columns as _columns
from nicegui import ui

STATUS_COLORS = {
    "executed": "green",
    "pending_approval": "orange",
    "not_executed": "grey",
    "rejected": "red",
    "expired": "red",
    "dry_run": "blue",
}


def diagnosis_text(d: Decision) -> str:
    return str(d.diagnosis)


def decision_rows(decisions: list[Decision]) -> list[dict[str, Any]]:
    return [
        {
            "id": d.id,
            "time": _clock(d.created_at),
            "diagnosis": diagnosis_text(d),
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


def notify_error(exc: RequestError) -> None:
    ui.notify(f"{exc.field}: {exc}", type="negative", multi_line=True)


def decisions_page(
    services: Services, header: Callable[[str], None], selected: str, user: Identity
) -> None:
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
            ui.label(f"{d.id}: {diagnosis_text(d)}").classes(
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
                approval_buttons(services, d, lambda: show.refresh(), user)
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


def approval_buttons(
    services: Services, d: Decision, refresh: Callable[[], object], user: Identity
) -> None:
    operator = services.operator

    async def approve() -> None:
        if not allowed(user, "operate"):
            return
        try:
            with acting_as(user):
                result = await operator.approve(d.id, user.name)
            ui.notify(f"{d.id}: {result.status}", type="positive")
        except RequestError as exc:
            notify_error(exc)
        refresh()

    def reject() -> None:
        if not allowed(user, "operate"):
            return
        try:
            with acting_as(user):
                operator.reject(d.id, user.name, "rejected in the console")
            ui.notify(f"{d.id}: rejected")
        except RequestError as exc:
            notify_error(exc)
        refresh()

    flags = "" if user.may("operate") else "disable"
    with ui.row():
        ui.button("Approve", on_click=approve, color="green").props(flags).classes(
            f"helios-approve-{d.id}"
        )
        ui.button("Reject", on_click=reject, color="red").props(flags).classes(
            f"helios-reject-{d.id}"
        )
