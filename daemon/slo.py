"""Service-level objectives with error budgets and multi-window burn-rate alerts
(docs/observability.md), and what reconciliation and recovery cost.

Three objectives, each per scope:
- completeness: of the deliveries events expected, the share that arrived within the
  window + grace; per source (`source:aws`) and per route (`route:order.*`: the share of
  events closed with every copy);
- timeliness: the share of COMPLETE outcomes reconciled within `slo.timeliness_ms` of
  the batch's receipt (one scope, `all`);
- availability: the share of copies offered that ingest accepted, refusals for want of
  room (queue, open windows, index backlog) counting against it (`all`).

Counts are taken every tick from counters the daemon keeps anyway, bucketed by minute
(6 h kept) and by hour (the budget period), on the daemon's clock. Burn rate = the error
ratio over a window / (1 - target). An alert fires, as in the SRE workbook, when both
windows of a pair burn faster than its factor: 1 h and 5 m over 14.4 (2% of a 30-day
budget in an hour), 6 h and 30 m over 6 (5% in 6 h), once the long window holds
`slo.min_events`; it stops when the short window burns under the factor again (or the
long one under 0.8 of it)."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from helios.daemon.config import SloConfig

log = logging.getLogger("helios.slo")
WINDOWS = {"5m": 300.0, "30m": 1800.0, "1h": 3600.0, "6h": 21600.0}
# (name, long window, short window, burn factor): both must burn faster to fire.
PAIRS = (("fast", "1h", "5m", 14.4), ("slow", "6h", "30m", 6.0))
CAPACITY = ("queue_full", "open_windows_full", "index_backlog_full")


class Series:
    """One objective on one scope: good and total by minute (6 h) and by hour."""

    def __init__(self, period_hours: int) -> None:
        self.minutes: deque[list[float]] = deque(maxlen=6 * 60 + 2)
        self.hours: deque[list[float]] = deque(maxlen=period_hours + 1)
        self.good = 0.0
        self.total = 0.0

    def add(self, now: float, good: float, total: float) -> None:
        if total <= 0:
            return
        self.good += good
        self.total += total
        for buckets, size in ((self.minutes, 60.0), (self.hours, 3600.0)):
            start = now - now % size
            if buckets and buckets[-1][0] == start:
                buckets[-1][1] += good
                buckets[-1][2] += total
            else:
                buckets.append([start, good, total])

    def window(self, now: float, seconds: float) -> tuple[float, float]:
        """Good and total over the last `seconds` (minute resolution up to 6 h)."""
        buckets = self.minutes if seconds <= 6 * 3600 else self.hours
        good = total = 0.0
        for start, g, t in reversed(buckets):
            if start <= now - seconds:
                break
            good += g
            total += t
        return good, total


@dataclass(frozen=True)
class SloView:
    objective: str  # completeness, timeliness, availability
    scope: str  # source:aws, route:order.*, all
    target: float
    good: float  # over the budget period
    total: float
    ratio: float  # good / total over the period (1.0 with no traffic)
    budget_remaining: float  # of the period's error budget, 1.0 = untouched, < 0 = overspent
    recent: dict[str, float]  # window -> good/total over it ("5m", "1h", ...), when any
    burn: dict[str, float]  # window -> burn rate
    firing: tuple[str, ...]  # "fast", "slow"
    since_start: float  # good / total since heliosd started


@dataclass
class Alert:
    objective: str
    scope: str
    pair: str
    burn_long: float
    burn_short: float
    budget_remaining: float
    at: float


@dataclass
class Objectives:
    config: SloConfig
    series: dict[tuple[str, str], Series] = field(default_factory=dict)
    firing: dict[tuple[str, str, str], Alert] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)  # cumulative counters last tick

    def targets(self) -> Mapping[str, float]:
        c = self.config
        return {
            "completeness": c.completeness_target,
            "timeliness": c.timeliness_target,
            "availability": c.availability_target,
        }

    def _series(self, objective: str, scope: str) -> Series:
        key = (objective, scope)
        found = self.series.get(key)
        if found is None:
            found = self.series[key] = Series(max(1, round(self.config.period_days * 24)))
        return found

    def observe(self, now: float, counters: Iterable[tuple[str, str, float, float]]) -> list[Alert]:
        """Take cumulative (objective, scope, good, total) counters; add what grew since
        the last tick; return the alerts that started firing."""
        for objective, scope, good, total in counters:
            key = f"{objective}|{scope}"
            g0, t0 = self.last.get(key + "|g", 0.0), self.last.get(key + "|t", 0.0)
            self.last[key + "|g"], self.last[key + "|t"] = good, total
            if total < t0 or good < g0:  # counters restarted (a restart of heliosd)
                g0 = t0 = 0.0
            self._series(objective, scope).add(now, good - g0, total - t0)
        return self._alerts(now)

    def _burn(self, series: Series, target: float, now: float, window: str) -> float | None:
        good, total = series.window(now, WINDOWS[window])
        if total <= 0:
            return None
        return ((total - good) / total) / max(1e-9, 1.0 - target)

    def _alerts(self, now: float) -> list[Alert]:
        started: list[Alert] = []
        targets = self.targets()
        for (objective, scope), series in self.series.items():
            target = targets[objective]
            for pair, long_w, short_w, factor in PAIRS:
                key = (objective, scope, pair)
                long_b = self._burn(series, target, now, long_w)
                short_b = self._burn(series, target, now, short_w)
                _, total = series.window(now, WINDOWS[long_w])
                if key in self.firing:  # it stops when the short window recovers
                    burning = (
                        long_b is not None
                        and short_b is not None
                        and long_b > 0.8 * factor
                        and short_b > factor
                    )
                else:  # it starts when both burn, on enough traffic to judge
                    burning = (
                        total >= self.config.min_events
                        and long_b is not None
                        and short_b is not None
                        and long_b > factor
                        and short_b > factor
                    )
                if burning and key not in self.firing:
                    assert long_b is not None and short_b is not None
                    alert = Alert(
                        objective,
                        scope,
                        pair,
                        long_b,
                        short_b,
                        self.view(objective, scope, now).budget_remaining,
                        now,
                    )
                    self.firing[key] = alert
                    started.append(alert)
                elif not burning and key in self.firing:
                    del self.firing[key]
                    log.info("SLO %s of %s: the %s burn is over", objective, scope, pair)
        return started

    def view(self, objective: str, scope: str, now: float) -> SloView:
        series = self._series(objective, scope)
        target = self.targets()[objective]
        good, total = series.window(now, self.config.period_days * 86400.0)
        ratio = good / total if total else 1.0
        allowed = (1.0 - target) * total
        budget = 1.0 - (total - good) / allowed if allowed > 0 else 1.0
        recent = {}
        burn = {}
        for name, seconds in WINDOWS.items():
            g, t = series.window(now, seconds)
            if t > 0:
                recent[name] = g / t
                burn[name] = ((t - g) / t) / max(1e-9, 1.0 - target)
        firing = tuple(p for (o, s, p) in self.firing if (o, s) == (objective, scope))
        since = series.good / series.total if series.total else 1.0
        return SloView(
            objective, scope, target, good, total, ratio, budget, recent, burn, firing, since
        )

    def views(self, now: float) -> list[SloView]:
        return [self.view(o, s, now) for (o, s) in sorted(self.series)]
