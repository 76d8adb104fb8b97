"""The console's Audit page (admins): the audit log, newest first."""

from __future__ import annotations

from collections.abc import Callable

from helios.daemon.identity import Identity
from helios.daemon.services import Services
from helios.ui.widgets import columns as _columns
from helios.ui.widgets import wall_text as _clock
from nicegui import ui


def audit_page(services: Services, header: Callable[[str], None], user: Identity) -> None:
    header("Audit")
    with ui.card().classes("w-full"):
        ui.label("Audit log: control actions, sign-ins, key changes").classes("font-semibold")
        if not user.may("admin"):
            ui.label(f"{user.name} ({user.role}) may not read the audit log (admin)")
            return
        table = ui.table(
            columns=_columns("time", "who", "via", "peer", "action", "target", "result"),
            rows=[],
            row_key="key",
            pagination=25,
        ).classes("w-full helios-audit")

    def refresh() -> None:
        table.rows = [
            {
                "key": f"{e.time}-{i}",
                "time": _clock(e.time),
                "who": e.who,
                "via": e.via,
                "peer": e.peer,
                "action": e.action,
                "target": e.target,
                "result": e.result,
            }
            for i, e in enumerate(services.auditlog.query(500))
        ]
        table.update()

    refresh()
    ui.timer(2.0, refresh)
