"""The EWMA / z-score detector: per-metric exponentially weighted baselines, judged in
spreads, with episodes, level shifts, count noise, a drift detector and cycles
(docs/detection.md).

Long because the per-metric state (baseline, episode, CUSUM, cycles) and its persistence
are one unit, and splitting it would spread one update rule over several files.

- **Scale-free.** Each metric's baseline (mean and spread) is learnt from the metric
  itself; no constant from training data decides what is normal. Updates are clipped
  at `clip` spreads (Huber), so one outlier does not widen the spread for an hour.
- **Episodes.** A metric that crosses `threshold` opens an episode and the step is an
  anomaly; while the episode lasts the metric is not reported again; it closes after
  `quiet_steps` steps back under `threshold * exit_ratio` (hysteresis). One anomaly
  per episode, however long the outage.
- **Level shifts.** A metric that stays out of its baseline for `adopt_after` steps has
  a new normal: the baseline restarts from the episode's values, the shift (onset,
  before, after) is kept in `shifts` and named once in the explanation. While out,
  the baseline learns slowly (`anomaly_alpha`), never frozen.
- **Rates with their noise.** A rate (missing, duplicate, inconsistent) is judged with
  at least the binomial spread its event count implies (`event_rate_per_minute` in the
  step): 1% missing of 100 events is noise, of 100,000 it is not.
- **Slow drifts.** A one-sided CUSUM (Page) on each metric's standardised residuals
  opens an episode when small deviations add up past `cusum_h` (slack `cusum_k`):
  ramps that never cross `threshold` in one step.
- **Cycles.** Each metric keeps a Holt-Winters model per candidate period (`seasons`, in
  steps: a day of hourly, 5-minute and 1-minute steps by default; `season_alpha`). Once
  one has seen three cycles and predicts with under `season_gain` of the plain
  baseline's squared error, an alarm needs the value out of both baselines (the cycle
  vetoes what it expects); under `season_trust`, the cycle judges alone: the nightly low
  of traffic is expected, a collapse at noon is not.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from helios.daemon.hookspecs import hookimpl
from helios.daemon.types import DetectionResult, Detector, DetectorFactory

Direction = Literal["up", "down", "both"]

# A rate rising is bad news; a rate falling is good news and never an anomaly.
DEFAULT_DIRECTIONS: dict[str, Direction] = {
    "missing_rate": "up",
    "duplicate_rate": "up",
    "inconsistent_rate": "up",
    "event_rate_per_minute": "both",
    "payload_size_variance": "both",
}
# Below these spreads a deviation is noise, however steady the past was: rates are
# fractions, latencies milliseconds. A metric of no known kind has none (scale-free).
DEFAULT_ABSOLUTE_FLOOR = {"rate": 0.005, "latency": 2.0}
SEVERITIES = (("critical", 4.0), ("major", 2.0), ("minor", 1.0))
COUNT_METRIC = "event_rate_per_minute"  # the denominator of the rates, when present
DEFAULT_ALPHAS = {COUNT_METRIC: 0.05}
COUNT_FLOOR = 0.1


def _kind(metric: str) -> str:
    if metric.startswith("latency_"):
        return "latency"
    return "rate" if "rate" in metric and metric != COUNT_METRIC else "other"


def _direction(metric: str, overrides: Mapping[str, Direction]) -> Direction:
    if metric in overrides:
        return overrides[metric]
    base = metric.split(":", 1)[0]
    if base in DEFAULT_DIRECTIONS:
        return DEFAULT_DIRECTIONS[base]
    if metric.startswith("latency_"):
        return "up"
    return "both"


class _Season:
    """A candidate cycle of one metric, Holt-Winters additive: its own level, its
    profile (the deviation from that level at each phase) and how well the two predict
    the metric (EW squared error)."""

    __slots__ = ("level", "mse", "n", "period", "profile")

    def __init__(self, period: int, level: float) -> None:
        self.period = period
        self.profile = [0.0] * period
        self.level = level
        self.mse = 0.0
        self.n = 0

    def to_list(self) -> list[float]:
        return [self.period, self.n, self.mse, self.level, *self.profile]

    @classmethod
    def from_list(cls, v: list[float]) -> _Season:
        season = cls(int(v[0]), float(v[3]))
        season.n, season.mse = int(v[1]), float(v[2])
        if len(v) == 4 + season.period:
            season.profile = [float(x) for x in v[4:]]
        return season


class _Stat:
    """One metric: its baseline, its episode, its CUSUM and its candidate cycles."""

    __slots__ = ("active", "cusum", "mean", "mse0", "n", "out", "quiet", "run_mean",
                 "run_var", "seasons", "since", "var")  # fmt: skip

    def __init__(self, mean: float, var: float = 0.0, n: int = 0) -> None:
        self.mean = mean
        self.var = var
        self.n = n
        self.out = False  # in an episode
        self.since = 0  # the step its episode began
        self.quiet = 0  # steps back inside while the episode is still open
        self.run_mean = 0.0  # the episode's own values: a level shift's new normal
        self.run_var = 0.0
        self.cusum = 0.0
        self.seasons: list[_Season] = []
        self.mse0 = 0.0  # EW squared deviation from the plain level (no cycle)
        self.active = 0  # the period of the cycle in use, 0 for none

    def to_list(self) -> list[float]:
        return [self.mean, self.var, self.n, float(self.out), self.since, self.quiet,
                self.run_mean, self.run_var, self.cusum]  # fmt: skip

    @classmethod
    def from_list(cls, v: list[float]) -> _Stat:
        stat = cls(float(v[0]), float(v[1]), int(v[2]))
        if len(v) >= 9:
            stat.out, stat.since, stat.quiet = bool(v[3]), int(v[4]), int(v[5])
            stat.run_mean, stat.run_var, stat.cusum = float(v[6]), float(v[7]), float(v[8])
        return stat


class EwmaDetector:
    """Flags the step where a metric moves more than `threshold` spreads from its EWMA
    baseline (or drifts past the CUSUM bound), once per episode."""

    name = "ewma"
    score_unit = "spreads"

    def __init__(
        self,
        alpha: float = 0.01,
        threshold: float = 6.0,
        warmup: int = 15,
        anomaly_alpha: float = 0.005,
        directions: Mapping[str, Direction] | None = None,
        relative_floor: float = 0.05,
        absolute_floor: Mapping[str, float] | None = None,
        exit_ratio: float = 0.75,
        quiet_steps: int = 20,
        adopt_after: int = 60,
        clip: float = 3.0,
        cusum_k: float = 2.0,
        cusum_h: float = 20.0,
        alphas: Mapping[str, float] | None = None,
        seasons: Sequence[int] = (24, 288, 1440),
        season_alpha: float = 0.3,
        season_gain: float = 0.5,
        season_trust: float = 0.1,
    ) -> None:
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
        if threshold <= 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1, got {warmup}")
        if not 0 <= anomaly_alpha < 1:
            raise ValueError(f"anomaly_alpha must be in [0, 1), got {anomaly_alpha}")
        if not 0 < exit_ratio <= 1:
            raise ValueError(f"exit_ratio must be in (0, 1], got {exit_ratio}")
        if quiet_steps < 1 or adopt_after < 1:
            raise ValueError("quiet_steps and adopt_after must be >= 1")
        if clip <= 0 or cusum_k < 0 or cusum_h <= 0:
            raise ValueError("clip and cusum_h must be > 0, cusum_k >= 0")
        if any(int(p) != p or p < 2 or p > 100_000 for p in seasons):
            raise ValueError("seasons are periods in steps, each from 2 to 100000")
        if not 0 < season_alpha < 1 or not 0 < season_trust <= season_gain <= 1:
            raise ValueError("season_alpha must be in (0, 1), 0 < season_trust <= season_gain <= 1")
        for metric, direction in (directions or {}).items():
            if direction not in ("up", "down", "both"):
                raise ValueError(f"directions.{metric} must be up, down or both")
        self.alpha = alpha
        # Traffic follows daily cycles a slow baseline lags behind: it learns faster.
        self.alphas = {**DEFAULT_ALPHAS, **(alphas or {})}
        for metric, value in self.alphas.items():
            if not 0 < value < 1:
                raise ValueError(f"alphas.{metric} must be between 0 and 1, got {value}")
        self.threshold = threshold
        self.warmup = warmup
        self.anomaly_alpha = anomaly_alpha
        self.directions = dict(directions or {})
        self.relative_floor = relative_floor
        self.absolute_floor = {**DEFAULT_ABSOLUTE_FLOOR, **(absolute_floor or {})}
        self.exit_ratio = exit_ratio
        self.quiet_steps = quiet_steps
        self.adopt_after = adopt_after
        self.clip = clip
        self.cusum_k = cusum_k
        self.cusum_h = cusum_h
        self.seasons = tuple(sorted({int(p) for p in seasons}))
        self.season_alpha = season_alpha
        self.season_gain = season_gain
        self.season_trust = season_trust
        self.stats: dict[str, _Stat] = {}
        self.steps = 0
        self.shifts: list[dict[str, Any]] = []  # level shifts adopted, newest last
        self._count: float | None = None  # this step's event count (binomial noise)

    def _alpha(self, metric: str) -> float:
        return self.alphas.get(metric, self.alpha)

    def _floor(self, metric: str, mean: float) -> float:
        """The least spread a deviation is judged with: the metric kind's, a share of its
        level, and for a rate the binomial noise of its count."""
        kind = _kind(metric)
        relative = COUNT_FLOOR if metric == COUNT_METRIC else self.relative_floor
        floor = max(self.absolute_floor.get(kind, 0.0), relative * abs(mean))
        if kind == "rate" and self._count:
            # With the count known, its binomial noise is the floor, not a fixed 0.5%:
            # 12 inconsistent events out of 50,000 a minute stand out of a baseline of 1.
            n = self._count
            p = min(max(mean, 1.0 / n), 0.5)
            floor = max(relative * abs(mean), math.sqrt(p * (1 - p) / n))
        # Scale-free last resort: a series that never moved yet has a spread of 1e-6 of
        # its level (or 1e-9), not zero.
        return max(floor, 1e-6 * abs(mean), 1e-9)

    def spread(self, metric: str) -> float:
        """The standard deviation used for z: the EW one, floored (`_floor`)."""
        stat = self.stats[metric]
        return max(math.sqrt(stat.var), self._floor(metric, stat.mean))

    def plain_baseline(self, metric: str) -> tuple[float, float] | None:
        """(mean, spread) of the level alone, no cycle: the LSTM's residuals."""
        if metric not in self.stats:
            return None
        return self.stats[metric].mean, self.spread(metric)

    def baseline(self, metric: str) -> tuple[float, float] | None:
        """(mean, spread) of a metric's baseline, or None before its first step."""
        if metric not in self.stats:
            return None
        stat = self.stats[metric]
        season = next((x for x in stat.seasons if x.period == stat.active), None)
        if season is None:
            return stat.mean, self.spread(metric)
        expected = season.level + season.profile[(self.steps - 1) % season.period]
        return expected, max(math.sqrt(season.mse), self._floor(metric, stat.mean))

    def _signed(self, metric: str, z: float) -> float:
        direction = _direction(metric, self.directions)
        if direction == "up":
            return max(z, 0.0)
        if direction == "down":
            return max(-z, 0.0)
        return abs(z)

    def update(self, step: Mapping[str, float]) -> DetectionResult:
        stats = self.stats
        count = step.get(COUNT_METRIC)
        self._count = float(count) if count and count > 0 else None
        scores: dict[str, float] = {}
        opened: list[str] = []  # metrics whose episode begins at this step
        ongoing: list[str] = []
        adopted: list[str] = []
        drifting: list[str] = []
        before: dict[str, tuple[float, float]] = {}  # the baseline an opened metric left
        warm = self.steps >= self.warmup
        for metric, raw in step.items():
            value = float(raw)
            if not math.isfinite(value):
                continue
            stat = stats.get(metric)
            if stat is None:
                stats[metric] = _Stat(value)
                continue
            alpha = self._alpha(metric)
            if not (warm and stat.n >= self.warmup):
                self._learn(stat, value, alpha, None)
                self._learn_seasons(stat, value, None, alpha)
                continue
            spread = self.spread(metric)
            z = (value - stat.mean) / spread
            signed = self._signed(metric, z)
            cycle = self._cycle(stat)
            expected = stat.mean
            if cycle is not None:
                expected = cycle.level + cycle.profile[self.steps % cycle.period]
                cycle_spread = max(math.sqrt(cycle.mse), self._floor(metric, stat.mean))
                by_cycle = self._signed(metric, (value - expected) / cycle_spread)
                # A cycle that predicts far better than the level judges alone (a collapse
                # at noon is not the night); one merely better vetoes alarms it expects.
                trusted = cycle.mse < self.season_trust * stat.mse0
                signed = by_cycle if trusted else min(signed, by_cycle)
            if not stat.out:
                self._learn_seasons(stat, value, spread, alpha)
            scores[metric] = signed
            # CUSUM on the residual in the bad direction(s), each step's share capped.
            capped = min(signed, self.threshold)
            stat.cusum = max(0.0, stat.cusum + capped - self.cusum_k) if not stat.out else 0.0
            if not stat.out:
                if signed >= self.threshold or stat.cusum >= self.cusum_h:
                    if signed < self.threshold:
                        drifting.append(metric)
                        scores[metric] = max(signed, self.threshold)
                    stat.out, stat.since, stat.quiet = True, self.steps, 0
                    stat.run_mean, stat.run_var, stat.cusum = value, 0.0, 0.0
                    opened.append(metric)
                    before[metric] = (expected, spread)
                    self._learn(stat, value, self.anomaly_alpha, spread)
                else:
                    self._learn(stat, value, alpha, spread)
                continue
            # In an episode: close it after quiet_steps back inside; adopt a level
            # shift after adopt_after steps out.
            diff = value - stat.run_mean
            stat.run_mean += diff / (self.steps - stat.since + 1)
            stat.run_var += (diff * (value - stat.run_mean) - stat.run_var) / (
                self.steps - stat.since + 1
            )
            if signed < self.threshold * self.exit_ratio:
                stat.quiet += 1
                if stat.quiet >= self.quiet_steps:
                    stat.out = False
                self._learn(stat, value, self._alpha(metric), spread)
            else:
                stat.quiet = 0
                ongoing.append(metric)
                if self.steps - stat.since + 1 >= self.adopt_after:
                    self.shifts.append(
                        {"metric": metric, "onset_step": stat.since, "adopted_step": self.steps,
                         "before": stat.mean, "after": stat.run_mean}
                    )  # fmt: skip
                    del self.shifts[:-50]
                    stat.mean, stat.var = stat.run_mean, max(stat.run_var, stat.var)
                    stat.out, stat.cusum = False, 0.0
                    adopted.append(metric)
                else:
                    self._learn(stat, value, self.anomaly_alpha, spread)
        self.steps += 1
        responsible = sorted(opened, key=lambda m: -scores[m])
        score = max(scores.values(), default=0.0)
        return DetectionResult(
            is_anomaly=bool(responsible),
            score=score,
            severity=self.severity(max((scores[m] for m in responsible), default=score)),
            metrics=responsible + sorted(ongoing, key=lambda m: -scores[m]),
            explanation=self._explain(
                step, responsible, ongoing, adopted, drifting, scores, before
            ),
        )

    def _cycle(self, stat: _Stat) -> _Season | None:
        """The candidate cycle that predicts the metric best, if it has seen three cycles
        and its squared error is under `season_gain` of the plain baseline's."""
        best: _Season | None = None
        for season in stat.seasons:
            if (
                season.n >= 3 * season.period
                and season.mse < self.season_gain * stat.mse0
                and (best is None or season.mse < best.mse)
            ):
                best = season
        stat.active = best.period if best is not None else 0
        return best

    def _learn_seasons(self, stat: _Stat, value: float, spread: float | None, alpha: float) -> None:
        """Each candidate cycle learns this step (Holt-Winters additive: its level from
        the value less the profile, the profile at this phase from the value less the
        level; errors clipped at `clip` spreads past warm-up); not in an episode."""
        if not self.seasons:
            return
        if not stat.seasons:
            stat.seasons = [_Season(p, stat.mean) for p in self.seasons]
        rate = max(alpha, 1.0 / (stat.n + 1))
        dev = value - stat.mean
        stat.mse0 += rate * (dev * dev - stat.mse0)
        gamma = self.season_alpha
        bound = self.clip * spread if spread is not None else math.inf
        step = self.steps
        for season in stat.seasons:
            profile = season.profile
            period = season.period
            i = step % period
            if season.n < period:  # the first cycle is taken as it is (Holt-Winters' start)
                profile[i] = value
                season.n += 1
                if season.n == period:
                    season.level = sum(profile) / period
                    season.profile = [x - season.level for x in profile]
                    season.mse = stat.mse0
                continue
            error = value - season.level - profile[i]
            season.mse += rate * (error * error - season.mse)
            error = max(-bound, min(bound, error))
            season.level += rate * error
            profile[i] += gamma * (1 - rate) * error
            season.n += 1

    def _learn(self, stat: _Stat, value: float, alpha: float, spread: float | None) -> None:
        """EW mean and variance; early on a plain running mean (1/(n+1)): an EW variance
        that starts at 0 is biased low for about 1/alpha steps. Past warm-up the change
        is clipped at `clip` spreads."""
        rate = max(alpha, 1.0 / (stat.n + 2)) if alpha > self.anomaly_alpha else alpha
        diff = value - stat.mean
        if spread is not None:
            bound = self.clip * spread
            diff = max(-bound, min(bound, diff))
        if rate > 0:
            increment = rate * diff
            stat.mean += increment
            stat.var = (1 - rate) * (stat.var + diff * increment)
        stat.n += 1

    def severity(self, score: float) -> str:
        for name, times in SEVERITIES:
            if score >= times * self.threshold:
                return name
        return "none"

    def _explain(
        self,
        step: Mapping[str, float],
        opened: list[str],
        ongoing: list[str],
        adopted: list[str],
        drifting: list[str],
        scores: Mapping[str, float],
        before: Mapping[str, tuple[float, float]],
    ) -> str:
        parts = []
        for metric in opened[:3]:
            mean, spread = before[metric]
            how = "drifted (CUSUM) to" if metric in drifting else "="
            cycle = self.stats[metric].active
            parts.append(
                f"{metric} {how} {step[metric]:.4g} is {scores[metric]:.1f} spreads from its "
                f"baseline {mean:.4g} (spread {spread:.3g}"
                + (f", a {cycle}-step cycle)" if cycle else ")")
            )
        if len(opened) > 3:
            parts.append(f"and {len(opened) - 3} more")
        for metric in adopted:
            shift = next(s for s in reversed(self.shifts) if s["metric"] == metric)
            parts.append(
                f"level shift of {metric} since step {shift['onset_step']}: "
                f"{shift['before']:.4g} -> {shift['after']:.4g}, adopted as the new normal"
            )
        if ongoing and not opened:
            parts.append(f"still out of baseline: {', '.join(ongoing[:5])}")
        if parts:
            return "; ".join(parts)
        if self.steps <= self.warmup:
            return f"warming up ({self.steps}/{self.warmup} steps)"
        return "every metric within its baseline"

    def state(self) -> dict[str, Any]:
        return {
            "detector": self.name,
            "steps": self.steps,
            "stats": {m: s.to_list() for m, s in self.stats.items()},
            "seasons": {
                m: [s.mse0, s.active, [x.to_list() for x in s.seasons]]
                for m, s in self.stats.items()
                if s.seasons
            },
            "shifts": self.shifts,
            "count": self._count,  # the last step's event count (the rates' noise)
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        if state.get("detector") != self.name:
            raise ValueError(f"state is for detector {state.get('detector')!r}, not {self.name!r}")
        self.steps = int(state["steps"])
        self.stats = {m: _Stat.from_list(list(v)) for m, v in state["stats"].items()}
        for m, (mse0, active, seasons) in state.get("seasons", {}).items():
            if m in self.stats:
                stat = self.stats[m]
                stat.mse0, stat.active = float(mse0), int(active)
                stat.seasons = [_Season.from_list(list(x)) for x in seasons]
                if sorted(x.period for x in stat.seasons) != list(self.seasons):
                    stat.seasons, stat.active = [], 0  # other periods configured: relearn
        self.shifts = list(state.get("shifts", []))
        count = state.get("count")
        self._count = float(count) if count else None

    def status(self) -> str:
        if self.steps < self.warmup:
            return f"warming up: {self.steps} of {self.warmup} steps"
        out = [m for m, s in self.stats.items() if s.out]
        episode = f"; out of baseline: {', '.join(out[:5])}" if out else ""
        return f"ready: {len(self.stats)} metrics, {self.steps} steps learnt{episode}"


def _factory(**options: Any) -> Detector:
    return EwmaDetector(**options)


@hookimpl(trylast=True)
def register_detectors(register: Callable[[str, DetectorFactory], None]) -> None:
    register("ewma", _factory)
