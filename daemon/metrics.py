"""Per-minute reconciliation metrics: the features detectors watch."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from itertools import combinations

from helios.daemon.domain import PER_SOURCE_RATES, MetricKey

MINUTE = 60.0


@dataclass(frozen=True)
class MetricsMinute:
    """The rolled-up metrics of one closed minute."""

    minute: float  # start of the minute, epoch seconds
    features: dict[str, float]
    missing_rate_by_source: dict[str, float] = field(default_factory=dict)
    # Per source: duplicate copies / its copies; INCONSISTENT outcomes naming it / closed.
    duplicate_rate_by_source: dict[str, float] = field(default_factory=dict)
    inconsistent_rate_by_source: dict[str, float] = field(default_factory=dict)
    events_closed: int = 0
    copies: int = 0

    def by_source(self, name: str) -> dict[str, float]:
        """A per-source rate table by metric name (see domain.PER_SOURCE_RATES)."""
        if name == "missing_rate":
            return self.missing_rate_by_source
        if name == "duplicate_rate":
            return self.duplicate_rate_by_source
        if name == "inconsistent_rate":
            return self.inconsistent_rate_by_source
        return {}

    def value(self, key: MetricKey) -> float | None:
        """One metric of this minute, or None when it was not measured."""
        table = self.by_source(key.name) if key.source else self.features
        found = table.get(key.source or key.name)
        return None if found is None else float(found)

    def step(self) -> dict[str, float]:
        """The step detectors see: the features plus each source's rates, by key."""
        step = dict(self.features)
        for name in PER_SOURCE_RATES:
            for source, rate in self.by_source(name).items():
                step[str(MetricKey(name, source))] = rate
        return step


class MinuteAccumulator:
    """Counters for the minute in progress; the reconciler bumps them in place."""

    __slots__ = (
        "closed",
        "copies",
        "copies_by_source",
        "duplicates",
        "duplicates_by_source",
        "events",
        "expected_by_source",
        "inconsistent",
        "inconsistent_by_source",
        "minute",
        "missing",
        "missing_by_source",
        "pair_n",
        "pair_sum",
        "size_sq",
        "size_sum",
    )

    def __init__(self, minute: int, n_sources: int, n_pairs: int) -> None:
        self.minute = minute
        self.events = 0
        self.copies = 0
        self.duplicates = 0
        self.closed = 0
        self.missing = 0
        self.inconsistent = 0
        self.size_sum = 0
        self.size_sq = 0
        self.pair_sum = [0.0] * n_pairs
        self.pair_n = [0] * n_pairs
        self.expected_by_source = [0] * n_sources
        self.missing_by_source = [0] * n_sources
        self.copies_by_source = [0] * n_sources
        self.duplicates_by_source = [0] * n_sources
        self.inconsistent_by_source = [0] * n_sources


def feature_names(sources: list[str]) -> list[str]:
    """The feature order detectors and the LSTM see (8 features for three sources)."""
    latency = [str(MetricKey.latency(a, b)) for a, b in combinations(sources, 2)]
    return [
        "missing_rate",
        "duplicate_rate",
        "inconsistent_rate",
        *latency,
        "event_rate_per_minute",
        "payload_size_variance",
    ]


class MetricsRollup:
    """Keeps the current minute's counters and the last `retention` closed minutes."""

    def __init__(self, sources: list[str], retention_minutes: int) -> None:
        self.sources = list(sources)
        self.pairs = list(combinations(range(len(sources)), 2))
        self.pair_names = [str(MetricKey.latency(sources[a], sources[b])) for a, b in self.pairs]
        self.names = feature_names(self.sources)
        self.minutes: deque[MetricsMinute] = deque(maxlen=retention_minutes)
        self.current: MinuteAccumulator | None = None
        self._listeners: list[deque[MetricsMinute]] = []

    def _new(self, minute: int) -> MinuteAccumulator:
        return MinuteAccumulator(minute, len(self.sources), len(self.pairs))

    def at(self, now: float) -> MinuteAccumulator:
        """The accumulator for the minute containing `now`, closing earlier minutes."""
        minute = int(now // MINUTE)
        current = self.current
        if current is None:
            current = self.current = self._new(minute)
        elif minute != current.minute:
            self._close(current)
            # Minutes with no traffic still exist for a detector: fill the gap with zeros.
            gap_start = max(current.minute + 1, minute - (self.minutes.maxlen or 1))
            for empty in range(gap_start, minute):
                self._close(self._new(empty))
            current = self.current = self._new(minute)
        return current

    def _close(self, acc: MinuteAccumulator) -> None:
        closed = acc.closed
        features = {
            "missing_rate": acc.missing / closed if closed else 0.0,
            "duplicate_rate": acc.duplicates / acc.copies if acc.copies else 0.0,
            "inconsistent_rate": acc.inconsistent / closed if closed else 0.0,
        }
        for name, total, n in zip(self.pair_names, acc.pair_sum, acc.pair_n, strict=True):
            features[name] = total * 1000.0 / n if n else 0.0
        features["event_rate_per_minute"] = float(acc.events)
        if acc.copies:
            mean = acc.size_sum / acc.copies
            features["payload_size_variance"] = max(0.0, acc.size_sq / acc.copies - mean * mean)
        else:
            features["payload_size_variance"] = 0.0
        by_source = {
            source: (acc.missing_by_source[i] / acc.expected_by_source[i])
            if acc.expected_by_source[i]
            else 0.0
            for i, source in enumerate(self.sources)
        }
        duplicates = {
            source: acc.duplicates_by_source[i] / acc.copies_by_source[i]
            if acc.copies_by_source[i]
            else 0.0
            for i, source in enumerate(self.sources)
        }
        inconsistent = {
            source: acc.inconsistent_by_source[i] / closed if closed else 0.0
            for i, source in enumerate(self.sources)
        }
        minute = MetricsMinute(
            acc.minute * MINUTE, features, by_source, duplicates, inconsistent, closed, acc.copies
        )
        self.minutes.append(minute)
        for queue in self._listeners:
            queue.append(minute)

    def subscribe(self) -> deque[MetricsMinute]:
        """A queue that receives every minute closed from now on (for detectors)."""
        queue: deque[MetricsMinute] = deque(maxlen=10_000)
        self._listeners.append(queue)
        return queue

    def query(self, start: float | None = None, end: float | None = None) -> list[MetricsMinute]:
        return [
            m
            for m in self.minutes
            if (start is None or m.minute >= start) and (end is None or m.minute < end)
        ]
