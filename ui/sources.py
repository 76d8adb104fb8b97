"""The console's Sources page: every input (webhook, SQS, Pub/Sub, Kafka, simulator) with
its kind, bound sources, path, verification, rate, last delivery, refusals by reason
and its sources' breakers; and the dead letters, which an operator can read and send
through their input again after a fix."""

from __future__ import annotations

import time
from collections.abc import Callable

from helios.daemon.errors import RequestError
from helios.daemon.identity import Identity, acting_as
from helios.daemon.services import Services
from helios.ui.decisions import notify_error
from helios.ui.widgets import allowed
from helios.ui.widgets import columns as _columns
from nicegui import ui


def _ago(stamp: float) -> str:
    if not stamp:
        return "never"
    seconds = max(0.0, time.time() - stamp)
    return (
        f"{seconds:.0f} s ago"
        if seconds < 120
        else time.strftime("%H:%M:%S", time.localtime(stamp))
    )


def sources_page(services: Services, header: Callable[[str], None], user: Identity) -> None:
    header("Sources")
    reads, webhooks, operator = services.reads, services.webhooks, services.operator
    with ui.card().classes("w-full"):
        ui.label("Inputs").classes("font-semibold")
        inputs = ui.table(
            columns=_columns(
                "input",
                "kind",
                "sources",
                "path",
                "verify",
                "rate/s",
                "deliveries",
                "last",
                "breaker",
                "errors",
            ),
            rows=[],
            row_key="input",
        ).classes("w-full helios-inputs")
        unrouted = ui.label("").classes("text-xs text-gray-500 helios-unrouted")
    with ui.card().classes("w-full"):
        with ui.row().classes("items-center w-full"):
            ui.label("Dead letters (refused deliveries, newest first)").classes("font-semibold")
            ui.space()
            replay = ui.button("replay selected").classes("helios-dlq-replay")
        letters = ui.table(
            columns=_columns("id", "at", "input", "status", "reason", "bytes", "detail"),
            rows=[],
            row_key="id",
            selection="multiple",
            pagination=15,
        ).classes("w-full helios-dead-letters")
        kept = ui.label("").classes("text-xs text-gray-500 helios-dlq-kept")
    if not user.may("operate"):
        replay.disable()

    async def replay_selected() -> None:
        if not allowed(user, "operate"):
            return
        ids = [int(row["id"]) for row in letters.selected]
        if not ids:
            ui.notify("select dead letters first")
            return
        try:
            with acting_as(user):
                results = await operator.replay_dead_letters(ids)
        except RequestError as exc:
            notify_error(exc)
            return
        taken = sum(1 for _, reply in results if not reply.error)
        ui.notify(f"{taken} of {len(ids)} taken; the rest refused again (see their reason)")
        letters.selected = []
        refresh()

    replay.on_click(replay_selected)

    def refresh() -> None:
        inputs.rows = [
            {
                "input": v.name,
                "kind": v.kind,
                "sources": ",".join(v.sources)
                + (f" (paused: {','.join(v.paused)})" if v.paused else ""),
                "path": v.path or "-",
                "verify": v.verify or "-",
                "rate/s": f"{v.rate_per_second:.2f}",
                "deliveries": v.deliveries,
                "last": _ago(v.last_delivery),
                "breaker": ",".join(sorted(set(v.breakers.values()))) or "-",
                "errors": ", ".join(f"{k} {n}" for k, n in sorted(v.errors.items())) or "-",
            }
            for v in reads.inputs()
        ]
        inputs.update()
        stray = dict(webhooks.unrouted)
        unrouted.set_text(
            "refused on paths no input serves: " + ", ".join(f"{k} {n}" for k, n in stray.items())
            if stray
            else ""
        )
        store = webhooks.deadletters
        letters.rows = [
            {
                "id": d.id,
                "at": time.strftime("%H:%M:%S", time.localtime(d.at)),
                "input": d.input or "-",
                "status": d.status or "-",
                "reason": d.reason,
                "bytes": len(d.body),
                "detail": d.detail[:120],
            }
            for d in store.list(limit=200)
        ]
        letters.update()
        kept.set_text(
            f"{store.count()} kept; {store.dropped} pushed out by the bounds "
            "(ingest.dead_letters_max); `helios dlq show ID` prints one with its body"
        )

    refresh()
    ui.timer(2.0, refresh)
