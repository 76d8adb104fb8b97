"""The operator's view of how HELIOS itself is doing: SLOs ticked from the daemon's
counters (helios.daemon.slo), a burning completeness budget raised as an anomaly for the
MAPE-K loop, and what reconciliation and recovery cost (`[cost]` unit prices).
Front-ends read it as `services.observe`."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from helios.daemon.domain import Diagnosis, IssueKind
from helios.daemon.model import OutcomeKind
from helios.daemon.slo import CAPACITY, Alert, Objectives, SloView

if TYPE_CHECKING:
    from helios.daemon.app import Daemon

log = logging.getLogger("helios.slo")
RAISE_EVERY = 3600.0  # daemon seconds between two anomalies of one burning budget
MAX_TENANTS = 100  # tenants given objectives of their own (the first seen, by name)


@dataclass(frozen=True)
class CostLine:
    kind: str  # source, route, action
    name: str
    units: float  # copies processed (source, route) or executions (action)
    replayed: float  # copies published again (source)
    money: float


@dataclass(frozen=True)
class CostView:
    currency: str
    lines: list[CostLine]
    total: float
    prices: dict[str, float]  # what the estimate used


class Observability:
    def __init__(self, daemon: Daemon) -> None:
        self._d = daemon
        self.objectives = Objectives(daemon.config.slo)
        self.alerts: list[Alert] = []  # started, newest last (bounded)
        self.raised: dict[str, float] = {}  # scope -> when its burn last raised an anomaly

    def counters(self) -> list[tuple[str, str, float, float]]:
        """Cumulative (objective, scope, good, total) from the daemon's own counters."""
        d = self._d
        t = d.telemetry
        # A delivery is bad when its event closed MISSING it; a late copy heals the
        # record (and the per-source `delivered`), not the objective.
        missed: dict[str, int] = {}
        for (kind, _route, source), n in list(t.outcomes.items()):
            if kind is OutcomeKind.MISSING:
                missed[source] = missed.get(source, 0) + n
        found = [
            (
                "completeness",
                f"source:{name}",
                float(c.expected - missed.get(name, 0)),
                float(c.expected),
            )
            for name, c in zip(d.runtime.sources, d.reconciler.by_source, strict=True)
        ]
        routes: dict[str, list[float]] = {}
        for (route, ok), n in list(t.route_closed.items()):
            entry = routes.setdefault(route, [0.0, 0.0])
            entry[0] += n if ok else 0
            entry[1] += n
        found += [("completeness", f"route:{r}", g, n) for r, (g, n) in routes.items()]
        found += self._tenant_counters()
        found.append(("timeliness", "all", float(t.timely), float(t.timely + t.slow)))
        accepted = float(d.reconciler.copies_received)
        refused = float(sum(d.pipeline.rejections.get(r, 0) for r in CAPACITY))
        found.append(("availability", "all", accepted, accepted + refused))
        return found

    def _tenant_counters(self) -> list[tuple[str, str, float, float]]:
        """A tenant's completeness (`tenant:blue`: its events closed with every copy)
        and, for each source that missed any of them, `tenant:blue/aws`: the share of
        its closed events that aws did not miss. A tenant that is 1% of the traffic
        can lose every aws copy without moving the deployment's own objectives."""
        t = self._d.telemetry
        closed: dict[str, list[float]] = {}
        for (tenant, ok), n in list(t.tenant_closed.items()):
            entry = closed.setdefault(tenant, [0.0, 0.0])
            entry[0] += n if ok else 0
            entry[1] += n
        kept = set(sorted(closed)[:MAX_TENANTS])
        found = [("completeness", f"tenant:{x}", g, n) for x, (g, n) in closed.items() if x in kept]
        for (tenant, source), missed in list(t.tenant_missed.items()):
            if tenant in kept:
                total = closed[tenant][1]
                found.append(("completeness", f"tenant:{tenant}/{source}", total - missed, total))
        return found

    async def tick(self) -> str:
        """The `slo` job: count, check the burn rates, say and raise what started."""
        d = self._d
        now = d.clock.now()
        firing_before = {k[:2] for k, a in self.objectives.firing.items()}
        started = self.objectives.observe(now, self.counters())
        raised: set[tuple[str, str]] = set()
        for alert in started:
            self.alerts.append(alert)
            log.warning(
                "SLO %s of %s is burning its error budget (%s burn: %.1fx over the long "
                "window, %.1fx over the short one); %.0f%% of the period's budget used",
                alert.objective,
                alert.scope,
                alert.pair,
                alert.burn_long,
                alert.burn_short,
                100 * (1 - alert.budget_remaining),
            )
            scope = (alert.objective, alert.scope)
            if scope not in firing_before and scope not in raised:  # one anomaly a burn
                raised.add(scope)
                self._raise(alert, now)
        del self.alerts[:-200]
        firing = len(self.objectives.firing)
        return f"{len(self.objectives.series)} objectives, {firing} burning"

    def _raise(self, alert: Alert, now: float) -> None:
        """A completeness budget of a source burning fast is an anomaly the loop decides
        on, diagnosed missing_events(source) (replaying its copies is what heals it); of a
        source within a tenant (`tenant:blue/aws`), the same for that tenant's events."""
        d = self._d
        if not d.config.slo.raise_anomalies or alert.objective != "completeness":
            return
        kind, _, target = alert.scope.partition(":")
        tenant, _, source = target.partition("/") if kind == "tenant" else ("", "", target)
        if kind not in ("source", "tenant") or not source:
            return
        # One anomaly per burn: a budget that flickers across the factor raises it again
        # only after an hour (the loop follows up on an incident meanwhile).
        if now - self.raised.get(alert.scope, -math.inf) < RAISE_EVERY:
            return
        self.raised[alert.scope] = now
        of = f"{source} in tenant {tenant}" if tenant else source
        text = (
            f"completeness of {of} burns its error budget {alert.burn_long:.1f}x "
            f"(long window) and {alert.burn_short:.1f}x (short), pair {alert.pair}"
        )
        diagnosis = Diagnosis(IssueKind.MISSING_EVENTS, source, 0.9, (text,), "unknown", tenant)
        anomaly = d.detection.raise_external(
            "slo",
            now,
            alert.burn_long,
            "critical" if alert.pair == "fast" else "major",
            (f"missing_rate:{source}",),
            text,
            diagnosis,
        )
        d.loop.submit([anomaly])

    async def prometheus(self) -> bytes:
        """The console's /metrics: a fresh scrape of the OpenTelemetry instruments."""
        return await self._d.telemetry.scrape()

    def now(self) -> float:
        return self._d.clock.now()

    def clock(self) -> tuple[float, bool]:
        """The daemon clock's speed, and whether it is simulated (the demo's 10x)."""
        return self._d.clock.speed, self._d.config.daemon.clock == "simulated"

    def cooldowns(self) -> list[tuple[str, str, float]]:
        """(action, target, when it may run again) for every action cooling down; times
        on the daemon's clock."""
        d = self._d
        now = d.clock.now()
        entries = d.loop.planner.entries
        found = []
        for key, last in list(d.loop.policy.last_run.items()):
            action, _, target = key.partition("|")
            entry = entries.get(action)
            if entry is None:
                continue
            ready = last + entry.settings.cooldown_seconds
            if ready > now:
                found.append((action, target, ready))
        return sorted(found, key=lambda x: x[2])

    def slos(self) -> list[SloView]:
        return self.objectives.views(self._d.clock.now())

    def cost(self) -> CostView:
        d = self._d
        c = d.config.cost
        t = d.telemetry
        per_copy = c.per_million_copies / 1e6
        lines = [
            CostLine(
                "source",
                name,
                float(s.copies),
                float(t.replayed.get(name, 0)),
                s.copies * per_copy + t.replayed.get(name, 0) * c.per_replayed_copy,
            )
            for name, s in zip(d.runtime.sources, d.reconciler.by_source, strict=True)
        ]
        routes: dict[str, float] = {}
        for (route, _ok), n in list(t.route_closed.items()):
            routes[route] = routes.get(route, 0.0) + n
        for route, events in sorted(routes.items()):
            width = len(d.reconciler.route_sources(route))
            lines.append(CostLine("route", route, events * width, 0.0, events * width * per_copy))
        for action, n in sorted(t.executed.items()):
            lines.append(CostLine("action", action, float(n), 0.0, n * c.actions.get(action, 0.0)))
        total = sum(x.money for x in lines if x.kind != "route")  # routes re-cut the sources
        prices = {
            "per_million_copies": c.per_million_copies,
            "per_replayed_copy": c.per_replayed_copy,
            **{f"action:{k}": v for k, v in c.actions.items()},
        }
        return CostView(c.currency, lines, total, prices)
