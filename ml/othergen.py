"""A second generator of per-minute reconciliation metrics, written apart from
generate.py so the detectors can be judged on traffic their defaults were not chosen on:
other distributions, other levels, other anomaly shapes.

- Traffic: Poisson counts around a level that a two-state (busy/quiet) Markov chain
  modulates, a weekday/weekend pattern, a daily cycle with a lunch dip, and now and then
  a permanent level change (growth, a customer leaving): not an anomaly.
- Rates: missing, duplicate and inconsistent copies as binomial counts of the minute's
  events with per-deployment base rates; inconsistent counts are sparse (0-3 a minute).
- Latencies: lognormal around per-pair medians with AR(1) noise.
- Payload size variance: gamma distributed.
- 8 anomaly kinds: source_outage (one source loses 20-60%), trickle_loss (one source loses
  3-6% for 40-90 minutes), latency_step (one pair x1.6-3 at once), latency_creep (one pair
  rising to x2-4 over 45-90 minutes), duplicate_burst (one source, +5-25%),
  inconsistency_burst (+4-15 inconsistent events a minute from one source),
  traffic_collapse (x0.15-0.5), traffic_surge (x2.5-5).

    python -m helios.ml.othergen --days 2 --seed 3 > other.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
from helios.ml.generate import Series

SOURCES = ("aws", "gcp", "azure")
PAIRS = (("aws", "gcp"), ("aws", "azure"), ("gcp", "azure"))
KINDS = (
    "source_outage",
    "trickle_loss",
    "latency_step",
    "latency_creep",
    "duplicate_burst",
    "inconsistency_burst",
    "traffic_collapse",
    "traffic_surge",
)
DAY = 1440


def deployment(rng: np.random.Generator) -> dict[str, float]:
    return {
        "level": float(10 ** rng.uniform(2.0, 5.0)),  # events a minute
        "missing": float(10 ** rng.uniform(-4, -2.5)),
        "duplicate": float(10 ** rng.uniform(-4, -2.5)),
        "inconsistent": float(10 ** rng.uniform(-4.5, -3)),
        "latency": float(10 ** rng.uniform(0.7, 2.5)),  # ms, the first pair's median
        "payload": float(10 ** rng.uniform(2.5, 4.0)),
    }


def series(days: float, seed: int, episodes: int) -> Series:
    """`days` of one random deployment with `episodes` labelled anomaly episodes."""
    rng = np.random.default_rng(seed)
    d = deployment(rng)
    minutes = int(days * DAY)
    # Episodes: non-overlapping, 60 minutes apart, after the first 3 hours.
    placed: list[tuple[int, int, str, dict[str, float]]] = []
    tries = 0
    while len(placed) < episodes and tries < episodes * 200:
        tries += 1
        kind = KINDS[len(placed) % len(KINDS)]
        length = (
            int(rng.integers(40, 91))
            if kind in ("trickle_loss", "latency_creep")
            else int(rng.integers(5, 31))
        )
        start = int(rng.integers(180, max(181, minutes - length - 1)))
        if all(start > e + 60 or start + length + 60 < s for s, e, _, _ in placed):
            placed.append((start, start + length, kind, _params(kind, rng)))
    active = {m: (s, e, k, p) for s, e, k, p in placed for m in range(s, e)}
    out = Series()
    busy = False
    level = d["level"]
    ar = [0.0, 0.0, 0.0]
    medians = [d["latency"] * f for f in (1.0, 2.3, 1.5)]
    for minute in range(minutes):
        if rng.random() < (0.02 if busy else 0.01):
            busy = not busy
        if rng.random() < 1 / (5 * DAY):  # growth or loss of a customer: the new normal
            level *= float(rng.uniform(0.6, 1.6))
        day = (minute % DAY) / DAY
        weekday = (minute // DAY) % 7 < 5
        cycle = (
            1
            + 0.5 * math.sin(2 * math.pi * (day - 0.3))
            - 0.15 * math.exp(-(((day - 0.52) / 0.02) ** 2))
        )
        mean = level * cycle * (1.0 if weekday else 0.6) * (1.3 if busy else 1.0)
        label: str | None = None
        params: dict[str, float] = {}
        progress = 0.0
        if minute in active:
            s, e, label, params = active[minute]
            progress = (minute - s + 1) / (e - s)
        if label == "traffic_collapse" or label == "traffic_surge":
            mean *= params["factor"]
        events = max(1, int(rng.poisson(max(mean, 1.0))))
        per_source = events  # every event is expected from every source
        missing_by = []
        for i, _source in enumerate(SOURCES):
            p = d["missing"] / 3
            if label in ("source_outage", "trickle_loss") and params["source"] == i:
                p += params["loss"]
            missing_by.append(rng.binomial(per_source, min(p, 1.0)) / per_source)
        dup_p = d["duplicate"] + (params["level"] if label == "duplicate_burst" else 0.0)
        duplicates = rng.binomial(per_source * 3, min(dup_p / 3, 1.0)) / (per_source * 3)
        inconsistent = rng.binomial(events, d["inconsistent"])
        if label == "inconsistency_burst":
            inconsistent += int(rng.poisson(params["level"]))
        step = {
            "missing_rate": float(sum(missing_by)),
            "duplicate_rate": float(duplicates),
            "inconsistent_rate": inconsistent / events,
            "event_rate_per_minute": float(events),
            "payload_size_variance": float(rng.gamma(20.0, d["payload"] / 20.0)),
        }
        for i, source in enumerate(SOURCES):
            step[f"missing_rate:{source}"] = float(missing_by[i])
        for j, (a, b) in enumerate(PAIRS):
            ar[j] = 0.7 * ar[j] + float(rng.normal(0, 0.06))
            factor = 1.0
            if label == "latency_step" and params["pair"] == j:
                factor = params["factor"]
            elif label == "latency_creep" and params["pair"] == j:
                factor = 1 + (params["factor"] - 1) * progress
            step[f"latency_{a}_{b}_ms"] = float(medians[j] * math.exp(ar[j]) * factor)
        out.steps.append(step)
        out.labels.append(label)
    return out


def _params(kind: str, rng: np.random.Generator) -> dict[str, float]:
    return {
        "source": float(rng.integers(0, 3)),
        "pair": float(rng.integers(0, 3)),
        "loss": float(
            rng.uniform(0.2, 0.6) if kind == "source_outage" else rng.uniform(0.03, 0.06)
        ),
        "factor": {
            "latency_step": float(rng.uniform(1.6, 3.0)),
            "latency_creep": float(rng.uniform(2.0, 4.0)),
            "traffic_collapse": float(rng.uniform(0.15, 0.5)),
            "traffic_surge": float(rng.uniform(2.5, 5.0)),
        }.get(kind, 1.0),
        "level": float(
            rng.uniform(0.05, 0.25) if kind == "duplicate_burst" else rng.uniform(4, 15)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--episodes", type=int, default=6)
    args = parser.parse_args()
    made = series(args.days, args.seed, args.episodes)
    for step, label in zip(made.steps, made.labels, strict=True):
        sys.stdout.write(json.dumps({"label": label, **step}) + "\n")


if __name__ == "__main__":
    main()
