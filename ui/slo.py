"""The console's SLO page: each objective's error budget, its recent windows and burn
rates, the burn-rate alerts firing; what reconciliation and recovery cost; and the log
level of each component. Windows are on the daemon's clock, labelled when simulated."""

from __future__ import annotations

from collections.abc import Callable

from helios.daemon import logs
from helios.daemon.services import Services
from nicegui import ui


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.3f}%"


def _column(name: str, label: str) -> dict[str, str]:
    return {"name": name, "label": label, "field": name, "align": "left"}


def slo_page(services: Services, header: Callable[[str], None]) -> None:
    observe = services.observe
    header("SLOs")
    speed, simulated = observe.clock()
    clock = ui.label(
        f"Windows in SIMULATED time: the demo's clock runs {speed:g}x the wall clock "
        f"(5 m of it is {300 / speed:g} s of yours)"
        if simulated
        else "Windows in wall-clock time"
    ).classes("text-sm text-gray-600 helios-slo-clock")
    clock.set_visibility(True)
    with ui.card().classes("w-full"):
        ui.label("Objectives and error budgets").classes("font-semibold")
        slos = ui.table(
            columns=[
                _column("objective", "objective"),
                _column("scope", "scope"),
                _column("target", "target"),
                _column("m5", "last 5 m"),
                _column("h1", "last 1 h"),
                _column("period", "budget period"),
                _column("budget", "budget left"),
                _column("burn", "burn 5m / 1h / 6h"),
                _column("firing", "alerts"),
            ],
            rows=[],
            row_key="key",
        ).classes("w-full helios-slos")
    with ui.card().classes("w-full"):
        cost_title = ui.label("Cost").classes("font-semibold")
        cost = ui.table(
            columns=[
                _column("kind", "kind"),
                _column("name", "name"),
                _column("units", "copies / executions"),
                _column("replayed", "replayed copies"),
                _column("money", "estimate"),
            ],
            rows=[],
            row_key="key",
        ).classes("w-full helios-cost")
        prices = ui.label("-").classes("text-xs text-gray-600 helios-cost-prices")
    with ui.card().classes("w-full"):
        ui.label("Log levels (helios log set COMPONENT LEVEL changes one)").classes("font-semibold")
        levels = ui.label("-").classes("text-sm font-mono helios-log-levels")

    def refresh() -> None:
        rows = []
        for v in observe.slos():
            burn = " / ".join(
                f"{v.burn[w]:.1f}x" if w in v.burn else "-" for w in ("5m", "1h", "6h")
            )
            rows.append(
                {
                    "key": f"{v.objective}|{v.scope}",
                    "objective": v.objective,
                    "scope": v.scope,
                    "target": _pct(v.target),
                    "m5": _pct(v.recent.get("5m")),
                    "h1": _pct(v.recent.get("1h")),
                    "period": _pct(v.ratio) if v.total else "-",
                    "budget": f"{100 * v.budget_remaining:.1f}%",
                    "burn": burn,
                    "firing": ", ".join(f"{p} burn" for p in v.firing) or "-",
                }
            )
        slos.rows = rows
        slos.update()
        c = observe.cost()
        cost_title.set_text(f"Cost: {c.total:,.4f} {c.currency} (sources + actions)")
        cost.rows = [
            {
                "key": f"{x.kind}|{x.name}",
                "kind": x.kind,
                "name": x.name,
                "units": f"{x.units:,.0f}",
                "replayed": f"{x.replayed:,.0f}",
                "money": f"{x.money:,.4f} {c.currency}",
            }
            for x in c.lines
        ]
        cost.update()
        prices.set_text(
            "unit prices ([cost]): " + ", ".join(f"{k} {v:g}" for k, v in sorted(c.prices.items()))
        )
        levels.set_text("  ".join(f"{k}={v}" for k, v in logs.levels().items()))

    refresh()
    ui.timer(2.0, refresh)
