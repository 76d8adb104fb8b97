"""Labelled per-minute reconciliation metrics: realistic normal behaviour (daily and
weekly cycles, noise, slow drift) with injected anomalies of many kinds.

    python -m helios.ml.generate --days 7 --seed 1 > metrics.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from dataclasses import dataclass, field

SOURCES = ("aws", "gcp", "azure")
PAIRS = (("aws", "gcp"), ("aws", "azure"), ("gcp", "azure"))
FEATURES = [
    "missing_rate",
    "duplicate_rate",
    "inconsistent_rate",
    *(f"latency_{a}_{b}_ms" for a, b in PAIRS),
    "event_rate_per_minute",
    "payload_size_variance",
]
KINDS = (
    "missing_spike",  # one source loses 15-40% of its copies
    "subtle_missing",  # one source loses 4-8%
    "latency_drift",  # one pair's latency grows 2-4x over the episode
    "duplicate_storm",
    "inconsistency_burst",
    "traffic_drop",
    "slow_ramp",  # one source's losses ramp from 0 to 10%
)
DAY = 1440


@dataclass
class Series:
    steps: list[dict[str, float]] = field(default_factory=list)
    labels: list[str | None] = field(default_factory=list)  # anomaly kind per step


@dataclass(frozen=True)
class Regime:
    """A deployment's levels: traffic (events a minute at the daily mean), latency scale,
    noise scale, payload size level, and how strong the daily cycle is. The default is
    the regime the generator always had; training draws many (`random_regime`)."""

    events: float = 3000.0
    latency: float = 1.0
    noise: float = 1.0
    payload: float = 2500.0
    season: float = 0.4


def random_regime(rng: random.Random) -> Regime:
    """Traffic from tens to hundreds of thousands of events a minute, latencies 0.3-5x,
    noise 0.5-3x, payload levels 200-20,000, daily cycles from flat to strong."""
    return Regime(
        events=10 ** rng.uniform(1.5, 5.7),
        latency=10 ** rng.uniform(-0.5, 0.7),
        noise=rng.uniform(0.5, 3.0),
        payload=10 ** rng.uniform(2.3, 4.3),
        season=rng.uniform(0.0, 0.6),
    )


REGIME = Regime()


def _normal_step(
    minute: int, rng: random.Random, drift: float, regime: Regime = REGIME
) -> dict[str, float]:
    day = 2 * math.pi * (minute % DAY) / DAY
    week = 2 * math.pi * (minute % (7 * DAY)) / (7 * DAY)
    rate = (
        regime.events
        * (1 + regime.season * math.sin(day - 1.2))
        * (1 + 0.15 * math.sin(week))
        * (1 + drift)
    )
    floor = min(50.0, regime.events / 4)
    events = max(floor, rng.gauss(rate, math.sqrt(rate)))

    def share(p: float) -> float:
        return max(0.0, rng.gauss(p, math.sqrt(p * (1 - p) / events)))

    step = {
        "missing_rate": share(0.001),
        "duplicate_rate": share(0.002),
        "inconsistent_rate": share(0.0005),
    }
    for (a, b), base in zip(PAIRS, (30.0, 70.0, 45.0), strict=True):
        base *= regime.latency
        load = 1 + 0.15 * math.sin(day - 1.2) + 0.5 * drift
        step[f"latency_{a}_{b}_ms"] = max(1.0, rng.gauss(base * load, 0.05 * base * regime.noise))
    step["event_rate_per_minute"] = events
    step["payload_size_variance"] = max(
        0.0, rng.gauss(regime.payload, 0.024 * regime.payload * regime.noise)
    )
    for source in SOURCES:
        step[f"missing_rate:{source}"] = share(0.001 / len(SOURCES))
    return step


def _inject(
    step: dict[str, float],
    kind: str,
    progress: float,
    rng: random.Random,
    params: dict[str, float | str],
) -> None:
    """Turn a normal step into the `progress` (0..1) point of an anomaly episode."""
    source = str(params["source"])
    if kind in ("missing_spike", "subtle_missing", "slow_ramp"):
        loss = float(params["loss"]) * (progress if kind == "slow_ramp" else 1.0)
        loss = max(loss, 0.02) if kind == "slow_ramp" else loss
        step["missing_rate"] += loss
        step[f"missing_rate:{source}"] += loss
    elif kind == "latency_drift":
        name = str(params["pair"])
        step[name] *= 1 + (float(params["factor"]) - 1) * max(progress, 0.3)
    elif kind == "duplicate_storm":
        step["duplicate_rate"] += float(params["level"])
    elif kind == "inconsistency_burst":
        step["inconsistent_rate"] += float(params["level"])
    elif kind == "traffic_drop":
        step["event_rate_per_minute"] *= float(params["factor"])


def _params(kind: str, rng: random.Random) -> dict[str, float | str]:
    source = rng.choice(SOURCES)
    a, b = rng.choice(PAIRS)
    return {
        "source": source,
        "pair": f"latency_{a}_{b}_ms",
        "loss": {
            "missing_spike": rng.uniform(0.15, 0.40),
            "subtle_missing": rng.uniform(0.04, 0.08),
            "slow_ramp": 0.10,
        }.get(kind, 0.0),
        "factor": rng.uniform(2.0, 4.0) if kind == "latency_drift" else rng.uniform(0.3, 0.6),
        "level": rng.uniform(0.05, 0.20) if kind == "duplicate_storm" else rng.uniform(0.02, 0.10),
    }


def generate(
    days: float,
    seed: int,
    anomalies_per_day: float = 0.0,
    kinds: tuple[str, ...] = KINDS,
    quiet_minutes: int = 120,
    regime: Regime = REGIME,
) -> Series:
    """`days` of minutes of a deployment with `regime`'s levels. Anomaly episodes (5-30
    minutes) start at random after the first `quiet_minutes`, never overlapping; each
    step is labelled with its episode's kind."""
    rng = random.Random(seed)
    minutes = int(days * DAY)
    series = Series()
    episodes: list[tuple[int, int, str, dict[str, float | str]]] = []
    count = round(days * anomalies_per_day)
    attempts = 0
    while len(episodes) < count and attempts < count * 50:
        attempts += 1
        kind = kinds[len(episodes) % len(kinds)]
        length = 30 if kind == "slow_ramp" else rng.randint(5, 30)
        start = rng.randint(quiet_minutes, max(quiet_minutes, minutes - length - 1))
        if all(start > e + 60 or start + length + 60 < s for s, e, _, _ in episodes):
            episodes.append((start, start + length, kind, _params(kind, rng)))
    active = {m: (s, e, k, p) for s, e, k, p in episodes for m in range(s, e)}
    for minute in range(minutes):
        drift = 0.05 * minute / (7 * DAY)
        step = _normal_step(minute, rng, drift, regime)
        label = None
        if minute in active:
            s, e, kind, params = active[minute]
            _inject(step, kind, (minute - s + 1) / (e - s), rng, params)
            label = kind
        series.steps.append(step)
        series.labels.append(label)
    return series


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--anomalies-per-day", type=float, default=4.0)
    args = parser.parse_args()
    series = generate(args.days, args.seed, args.anomalies_per_day)
    for step, label in zip(series.steps, series.labels, strict=True):
        sys.stdout.write(json.dumps({"label": label, **step}) + "\n")


if __name__ == "__main__":
    main()
