"""The EWMA / z-score detector: per-metric exponentially weighted mean and variance."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
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
# fractions, latencies milliseconds.
DEFAULT_ABSOLUTE_FLOOR = {"rate": 0.005, "latency": 2.0}
SEVERITIES = (("critical", 4.0), ("major", 2.0), ("minor", 1.0))


def _kind(metric: str) -> str:
    if metric.startswith("latency_"):
        return "latency"
    return "rate" if "rate" in metric and metric != "event_rate_per_minute" else "other"


def _direction(metric: str, overrides: Mapping[str, Direction]) -> Direction:
    if metric in overrides:
        return overrides[metric]
    if metric in DEFAULT_DIRECTIONS:
        return DEFAULT_DIRECTIONS[metric]
    if metric.startswith("latency_") or metric.startswith("missing_rate"):
        return "up"
    return "both"


class _Stat:
    __slots__ = ("mean", "n", "var")

    def __init__(self, mean: float, var: float = 0.0, n: int = 0) -> None:
        self.mean = mean
        self.var = var
        self.n = n


class EwmaDetector:
    """Flags a step when a metric is more than `threshold` spreads from its EWMA baseline.

    The baseline (mean and variance) is exponentially weighted with `alpha`; during
    `warmup` steps it only learns. Anomalous steps are learnt with `anomaly_alpha`
    (0 = not at all), so an outage does not become the new normal."""

    name = "ewma"
    score_unit = "spreads"

    def __init__(
        self,
        alpha: float = 0.05,
        threshold: float = 4.0,
        warmup: int = 15,
        anomaly_alpha: float = 0.0,
        directions: Mapping[str, Direction] | None = None,
        relative_floor: float = 0.05,
        absolute_floor: Mapping[str, float] | None = None,
    ) -> None:
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
        if threshold <= 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1, got {warmup}")
        if not 0 <= anomaly_alpha < 1:
            raise ValueError(f"anomaly_alpha must be in [0, 1), got {anomaly_alpha}")
        for metric, direction in (directions or {}).items():
            if direction not in ("up", "down", "both"):
                raise ValueError(f"directions.{metric} must be up, down or both")
        self.alpha = alpha
        self.threshold = threshold
        self.warmup = warmup
        self.anomaly_alpha = anomaly_alpha
        self.directions = dict(directions or {})
        self.relative_floor = relative_floor
        self.absolute_floor = {**DEFAULT_ABSOLUTE_FLOOR, **(absolute_floor or {})}
        self.stats: dict[str, _Stat] = {}
        self.steps = 0

    def spread(self, metric: str) -> float:
        """The standard deviation used for z: the EW one, floored."""
        stat = self.stats[metric]
        floor = max(
            self.absolute_floor.get(_kind(metric), 0.0), self.relative_floor * abs(stat.mean), 1e-9
        )
        return max(math.sqrt(stat.var), floor)

    def baseline(self, metric: str) -> tuple[float, float] | None:
        """(mean, spread) of a metric's baseline, or None before its first step."""
        if metric not in self.stats:
            return None
        return self.stats[metric].mean, self.spread(metric)

    def update(self, step: Mapping[str, float]) -> DetectionResult:
        stats = self.stats
        scores: dict[str, float] = {}
        warm = self.steps >= self.warmup
        for metric, value in step.items():
            stat = stats.get(metric)
            if stat is None:
                stats[metric] = _Stat(float(value))
                continue
            if warm and stat.n >= self.warmup:
                z = (value - stat.mean) / self.spread(metric)
                direction = _direction(metric, self.directions)
                if direction == "up":
                    z = max(z, 0.0)
                elif direction == "down":
                    z = max(-z, 0.0)
                else:
                    z = abs(z)
                scores[metric] = z
        responsible = sorted(
            (m for m, z in scores.items() if z >= self.threshold), key=lambda m: -scores[m]
        )
        is_anomaly = bool(responsible)
        alpha = self.anomaly_alpha if is_anomaly else self.alpha
        for metric, value in step.items():
            stat = stats[metric]
            # Early on, a plain running mean and variance (1/(n+1)): an EW variance
            # that starts at 0 is biased low for about 1/alpha steps.
            rate = max(alpha, 1.0 / (stat.n + 2)) if not is_anomaly else alpha
            if rate > 0:
                diff = value - stat.mean
                increment = rate * diff
                stat.mean += increment
                stat.var = (1 - rate) * (stat.var + diff * increment)
            stat.n += 1
        self.steps += 1
        score = max(scores.values(), default=0.0)
        return DetectionResult(
            is_anomaly=is_anomaly,
            score=score,
            severity=self.severity(score),
            metrics=responsible,
            explanation=self._explain(step, responsible, scores),
        )

    def severity(self, score: float) -> str:
        for name, times in SEVERITIES:
            if score >= times * self.threshold:
                return name
        return "none"

    def _explain(
        self, step: Mapping[str, float], responsible: list[str], scores: Mapping[str, float]
    ) -> str:
        if not responsible:
            if self.steps <= self.warmup:
                return f"warming up ({self.steps}/{self.warmup} steps)"
            return "every metric within its baseline"
        parts = []
        for metric in responsible[:3]:
            mean, spread = self.baseline(metric) or (0.0, 0.0)
            parts.append(
                f"{metric} = {step[metric]:.4g} is {scores[metric]:.1f} spreads from its "
                f"baseline {mean:.4g} (spread {spread:.3g})"
            )
        more = f"; and {len(responsible) - 3} more" if len(responsible) > 3 else ""
        return "; ".join(parts) + more

    def state(self) -> dict[str, Any]:
        return {
            "detector": self.name,
            "steps": self.steps,
            "stats": {m: [s.mean, s.var, s.n] for m, s in self.stats.items()},
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        if state.get("detector") != self.name:
            raise ValueError(f"state is for detector {state.get('detector')!r}, not {self.name!r}")
        self.steps = int(state["steps"])
        self.stats = {
            m: _Stat(float(v[0]), float(v[1]), int(v[2])) for m, v in state["stats"].items()
        }

    def status(self) -> str:
        if self.steps < self.warmup:
            return f"warming up: {self.steps} of {self.warmup} steps"
        return f"ready: {len(self.stats)} metrics, {self.steps} steps learnt"


def _factory(**options: Any) -> Detector:
    return EwmaDetector(**options)


@hookimpl(trylast=True)
def register_detectors(register: Callable[[str, DetectorFactory], None]) -> None:
    register("ewma", _factory)
